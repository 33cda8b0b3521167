"""The reconciler: make each key serve its desired provider, and keep an eye on it.

It activates, swaps make-before-break, parks a change while the key is paused or draining,
retires what is replaced or removed, and has each serving instance's health checked
periodically (one scheduler for all of them: :mod:`oneiric.runtime.checks`). What a
key *should* serve is :class:`~oneiric.runtime.desired.DesiredState`'s answer; whether a change
must wait is the intent store's; every observable change bumps the shared
:class:`~oneiric._changes.ChangeCounter`.

Per key, swaps are serialised by a lock; a request made while one is queued is coalesced into
it (the queued one resolves the *latest* desired state when it runs), so a burst of config
saves costs at most one swap in flight plus one queued per key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import anyio
import anyio.abc

from oneiric._changes import ChangeCounter
from oneiric.errors import ActivationError
from oneiric.logging_setup import fields
from oneiric.runtime.candidates import Candidate
from oneiric.runtime.checks import HealthChecks
from oneiric.runtime.desired import DesiredState
from oneiric.runtime.history import History
from oneiric.runtime.intent import IntentStore
from oneiric.runtime.keys import (
    ComponentKey,
    KeyState,
    Lifecycle,
    Outcome,
    RuntimeObserver,
    Timeouts,
)
from oneiric.runtime.leases import Binding
from oneiric.runtime.lifecycle import (
    activate,
    call_maybe_async,
    describe,
    retire,
    stop_instance,
)

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)


class Reconciler:
    """Moves keys to their desired provider; owned by the :class:`~oneiric.runtime.core.Runtime`,
    which starts its background work (queued reconciles, retirements, health checks) in its own
    task group."""

    def __init__(
        self,
        *,
        changes: ChangeCounter,
        key_changed: Callable[[KeyState], None],
        intent: IntentStore,
        desired: DesiredState,
        observers: list[RuntimeObserver],
        timeouts: Timeouts,
        task_group: Callable[[], anyio.abc.TaskGroup],
        history: History,
    ) -> None:
        self.timeouts = timeouts
        self._history = history
        self.stopping = False
        self._bump = changes.bump
        self._touch = key_changed  # this key's waiters, and the runtime's followers
        self._intent = intent
        self._desired = desired
        self._observers = observers
        self._task_group = task_group
        self._generation = 0
        #: the level of a key's "activated provider" line (the daemon's start-up logs one
        #: summary at INFO instead of 10,000 of these)
        self.activation_log_level = logging.INFO
        #: the periodic health checks of every serving instance
        self.checks = HealthChecks(
            task_group=task_group,
            interval=lambda: self.timeouts.health_interval,
            timeout=lambda: self.timeouts.activation,
            on_result=self._health_result,
        )

    # -- reconcile -------------------------------------------------------------------------------
    def request(self, st: KeyState, *, force: bool = False) -> None:
        """Schedule a reconcile of the key; coalesced with one already queued."""
        if st.pending:
            return
        st.pending = True
        self._task_group().start_soon(self._queued, st, force)

    async def _queued(self, st: KeyState, force: bool) -> None:
        try:
            await self.reconcile(st, force=force, queued=True)
        except Exception:  # reconcile records its own errors; never kill the task group
            log.exception("%s: reconcile failed", st.slot.name)

    async def reconcile(
        self, st: KeyState, *, force: bool = False, queued: bool = False
    ) -> Outcome:
        """Make the key serve its desired provider: activate, swap make-before-break, park it
        while the key is paused/draining, or retire it when no candidate is left."""
        async with st.lock:
            if queued:
                st.pending = False
                self._touch(st)  # a resumed service waits for the queued change to be done
            if self.stopping:
                return "skipped"
            ck = st.ck
            want = self._desired.desired(ck)
            cur = st.slot.current
            if cur is not None and want == cur.candidate:
                changed = st.parked is not None or st.parked_removal or st.failed_target
                st.parked, st.parked_removal, st.failed_target = None, False, None
                if changed:
                    st.last_error = None
                    self._touch(st)
                return "unchanged"
            held = self._intent.effective(ck.domain, ck.key).state
            if cur is not None and held != "active":
                st.parked, st.parked_removal = want, want is None
                if force:  # an explicit request (swap, reload): try it again on resume
                    st.failed_target = None
                log.info(
                    "%s: change to %s parked while %s",
                    st.slot.name,
                    repr(want.provider) if want else "no provider",
                    held,
                    extra=fields(key=ck),
                )
                self._touch(st)
                return "parked"
            try:
                if want is None:
                    if cur is None:
                        self._forget_if_gone(st)
                        return "unchanged"
                    st.slot.bind(None)
                    self.checks.forget(st)  # its Check would keep the retired instance alive
                    st.lifecycle = "inactive"
                    self._history.record(
                        "remove",
                        f"no candidate left; {cur.provider!r} retired",
                        key=st.ck,
                        previous=cur.provider,
                    )
                    await self._notify_bound(st, None, cur)
                    self._retire_soon(st, cur)
                    self._touch(st)
                    return "removed"
                if not force and want == st.failed_target:
                    return "skipped"
                return await self._swap(st, want)
            finally:
                # cleared only once the parked change is done (or failed): until then a
                # resumed service must not restart the instance it replaces
                if st.parked is not None or st.parked_removal:
                    st.parked, st.parked_removal = None, False
                    self._touch(st)

    # -- swap ------------------------------------------------------------------------------------
    async def _swap(self, st: KeyState, want: Candidate) -> Outcome:
        # Shielded: once started, a swap completes (bounded by the activation and stop
        # timeouts) even if the requester goes away, so it never half-happens.
        with anyio.CancelScope(shield=True):
            outcome = await self._swap_shielded(st, want)
        return outcome  # noqa: RET504 - outside the scope, or mypy sees a missing return

    async def _swap_shielded(self, st: KeyState, want: Candidate) -> Outcome:
        cur = st.slot.current
        if cur is None:
            st.lifecycle = "activating"
            self._touch(st)
        self._generation += 1
        started = time.monotonic()
        try:
            new = await activate(
                want,
                name=st.slot.name,
                activation_timeout=self.timeouts.activation,
                stop_timeout=self.timeouts.stop,
                generation=self._generation,
            )
        except ActivationError as exc:
            st.failed_swaps += 1
            st.failed_target = want
            st.last_error = str(exc)
            if cur is None:
                st.lifecycle = "failed"
            log.error("%s", exc, extra=fields(key=st.ck))
            self._history.record(
                "rollback",
                f"{want.provider!r} failed to activate; "
                + (f"{cur.provider!r} keeps serving" if cur is not None else "nothing serves"),
                key=st.ck,
                provider=want.provider,
                previous=cur.provider if cur is not None else None,
                reason=str(exc),
                duration_ms=round((time.monotonic() - started) * 1000, 3),
            )
            self._touch(st)
            return "failed"
        if self.stopping:  # shutdown began while this instance was starting: never bind it
            await stop_instance(new.instance, self.timeouts.stop, st.slot.name)
            if cur is None:
                st.lifecycle = "inactive"
            return "skipped"
        if cur is not None:
            veto = await self._hook(cur, "before_swap", new, st.slot.name)
            if veto is not None:  # the outgoing instance refused: roll back, it keeps serving
                await stop_instance(new.instance, self.timeouts.stop, st.slot.name)
                st.failed_swaps += 1
                st.failed_target = want
                st.last_error = (
                    f"swap to {want.provider!r} vetoed by {cur.provider!r}: {veto}; "
                    f"{cur.provider!r} keeps serving"
                )
                log.error("%s: %s", st.slot.name, st.last_error, extra=fields(key=st.ck))
                self._touch(st)
                return "failed"
        elapsed = (time.monotonic() - started) * 1000
        st.failed_target = None
        st.last_error = None
        old = st.slot.bind(new)
        st.lifecycle = "ready"
        if old is not None:
            st.swapped(round(elapsed, 3))
        level = logging.INFO if old is not None else self.activation_log_level
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s: %s provider %r in %.1f ms",
                st.slot.name,
                "swapped to" if old else "activated",
                want.provider,
                elapsed,
                extra=fields(key=st.ck),
            )
        self._history.record(
            "swap" if old is not None else "activate",
            f"{'swapped to' if old else 'activated'} {want.provider!r} in {elapsed:.1f} ms"
            + (f" (was {old.provider!r})" if old is not None else ""),
            key=st.ck,
            provider=want.provider,
            previous=old.provider if old is not None else None,
            duration_ms=round(elapsed, 3),
        )
        self.checks.watch(st, new)
        await self._notify_bound(st, new, old)
        if old is not None:
            # the old instance is still alive (retiring): the new one may take state from it
            failed = await self._hook(new, "after_swap", old, st.slot.name)
            if failed is not None:
                st.last_error = f"after_swap() of {want.provider!r}: {failed} (the swap stands)"
                log.warning("%s: %s", st.slot.name, st.last_error, extra=fields(key=st.ck))
            self._retire_soon(st, old)
        self._touch(st)
        return "swapped" if old is not None else "activated"

    async def _hook(self, on: Binding, name: str, other: Binding, where: str) -> str | None:
        """Call ``on.instance.<name>(other.instance)`` when it exists, bounded by the
        activation timeout (SPEC §10 swap hooks). None when it is absent or succeeded; else
        why it failed (raised, returned False, or ran out of time)."""
        hook = getattr(on.instance, name, None)
        if hook is None:
            return None
        try:
            with anyio.fail_after(self.timeouts.activation):
                result = await call_maybe_async(hook, other.instance)
        except TimeoutError:
            return f"{name}() did not finish within {self.timeouts.activation:g}s"
        except Exception as exc:
            log.debug("%s: %s() raised", where, name, exc_info=exc)
            return f"{name}() raised {describe(exc)}"
        if result is False:
            return f"{name}() returned false"
        return None

    async def _notify_bound(self, st: KeyState, new: Binding | None, old: Binding | None) -> None:
        for obs in self._observers:
            try:
                await obs.bound(st, new, old)
            except Exception:
                log.exception("%s: observer failed on bind", st.slot.name)

    # -- retire ----------------------------------------------------------------------------------
    def _retire_soon(self, st: KeyState, old: Binding) -> None:
        self._task_group().start_soon(self._retire, st, old)

    async def _retire(self, st: KeyState, old: Binding) -> None:
        await retire(
            old,
            drain_timeout=self.timeouts.drain,
            stop_timeout=self.timeouts.stop,
            name=st.slot.name,
        )
        st.slot.forget(old)
        self._forget_if_gone(st)
        self._touch(st)

    def _forget_if_gone(self, st: KeyState) -> None:
        """A key removed from every source, with nothing serving or retiring: its per-key
        history goes (bounded memory across reloads that add and remove keys)."""
        slot = st.slot
        if (
            slot.current is None
            and not slot.retiring
            and not self._desired.registry.ranked(slot.domain, slot.key)
        ):
            self._history.forget(st.ck)

    # -- periodic health -------------------------------------------------------------------------
    def _health_result(self, st: KeyState, ok: bool, err: str | None) -> None:
        """A periodic check of the serving instance ended (see :mod:`oneiric.runtime.checks`)."""
        lifecycle: Lifecycle = "ready" if ok else "degraded"
        if lifecycle != st.lifecycle or (not ok and err != st.last_error):
            if not ok:
                log.warning("%s: %s", st.slot.name, err)
            elif st.lifecycle == "degraded":
                log.info("%s: healthy again", st.slot.name)
            st.lifecycle = lifecycle
            st.last_error = err if not ok else None
            self._touch(st)

    # -- shutdown --------------------------------------------------------------------------------
    async def stop_all(self, states: Mapping[ComponentKey, KeyState]) -> None:
        """Once ``stopping`` is set: wait for swaps already under way (each bounded by the
        activation and stop timeouts; new ones see ``stopping`` and do nothing), then stop every
        instance, serving or retiring, exactly once. Shielded: shutdown always completes."""
        with anyio.move_on_after(self.timeouts.activation + self.timeouts.stop, shield=True):
            for st in list(states.values()):
                async with st.lock:
                    pass
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                self.checks.close()
                for st in states.values():
                    st.health_check = None
                    for b in (st.slot.current, *st.slot.retiring):
                        if b is not None and not b.stopped:
                            b.stopped = True
                            st.lifecycle = "stopping"
                            tg.start_soon(
                                stop_instance, b.instance, self.timeouts.stop, st.slot.name
                            )
            for st in states.values():
                st.slot.bind(None)
                st.slot.retiring.clear()
                st.lifecycle = "inactive"
                st.touch()
        self._bump()
