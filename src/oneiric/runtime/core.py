"""The runtime: registry + intent + leases + lifecycle, composed.

The single owner of mutable component state. Every state change bumps :attr:`Runtime.version`
and wakes :meth:`Runtime.wait_changed`, which the health writer and ``watch`` streams follow.

Per key, swaps are serialised by a lock; a reconcile request made while one is queued is
coalesced into it (the queued one resolves the *latest* desired state when it runs), so a burst
of config saves costs at most one swap in flight plus one queued per key.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from oneiric._changes import ChangeCounter
from oneiric.errors import ActivationError, NotFound
from oneiric.runtime.health import ComponentHealth
from oneiric.runtime.intent import IntentStore
from oneiric.runtime.leases import Binding, Lease, LeaseTable, Slot
from oneiric.runtime.lifecycle import activate, check_health, retire, stop_instance
from oneiric.runtime.registry import Candidate, Registry
from oneiric.runtime.state import (
    KeyState,
    Lifecycle,
    Outcome,
    RuntimeObserver,
    Timeouts,
    _current,
    _last,
    current_runtime,
)
from oneiric.runtime.status import component_health, explain, visible

# re-exported: the runtime's public surface lives here
__all__ = [
    "KeyState",
    "Lifecycle",
    "Outcome",
    "Runtime",
    "RuntimeObserver",
    "Timeouts",
    "current_runtime",
]

log = logging.getLogger(__name__)


class Runtime(ChangeCounter):
    """Owns every component instance of the process. Use as ``async with Runtime(...) as rt``."""

    def __init__(
        self,
        *,
        intent: IntentStore,
        registry: Registry | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.registry = registry or Registry()
        self.intent = intent
        self.timeouts = timeouts or Timeouts()
        self.selections: dict[str, dict[str, str]] = {}
        self.leases = LeaseTable()
        self.states: dict[tuple[str, str], KeyState] = {}
        self.observers: list[RuntimeObserver] = []
        super().__init__()
        self.stopping = False
        self._generation = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._token: contextvars.Token[Runtime] | None = None

    # -- context ---------------------------------------------------------------------------------
    async def __aenter__(self) -> Runtime:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._token = _current.set(self)
        _last.append(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        try:
            await self.shutdown(0 if exc_type is not None else self.timeouts.drain)
        finally:
            self._tg.cancel_scope.cancel()
            if self in _last:
                _last.remove(self)
            if self._token is not None:
                _current.reset(self._token)
        return await self._tg.__aexit__(exc_type, exc, tb)

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise RuntimeError("the runtime is not running (use 'async with Runtime(...)')")
        return self._tg

    # -- change notification ---------------------------------------------------------------------
    def touch(self) -> None:
        """Something observable changed: wake every ``wait_changed`` follower."""
        self.bump()

    # -- keys ------------------------------------------------------------------------------------
    def state(self, domain: str, key: str) -> KeyState:
        st = self.states.get((domain, key))
        if st is None:
            raise NotFound(f"no component {domain}/{key}: see 'oneiricctl list'")
        return st

    def _ensure(self, domain: str, key: str) -> KeyState:
        st = self.states.get((domain, key))
        if st is None:
            slot = self.leases.ensure(domain, key)
            st = self.states[(domain, key)] = KeyState(slot)
            self._apply_admission(st)
        return st

    def known_keys(self) -> list[tuple[str, str]]:
        return sorted(set(self.states) | set(self.registry.keys()))

    def use(
        self, domain: str, key: str, *, wait: bool = True, timeout: float | None = None
    ) -> Lease:
        """``async with rt.use("adapter", "cache") as cache:`` — a lease on the serving instance."""
        st = self.states.get((domain, key))
        if st is None:
            raise NotFound(f"no component {domain}/{key}")
        return st.slot.lease(wait=wait, timeout=timeout)

    # -- admission -------------------------------------------------------------------------------
    def _apply_admission(self, st: KeyState) -> None:
        slot = st.slot
        if self.stopping:
            admitting, reason = False, "stopping"
        else:
            eff = self.intent.effective(slot.domain, slot.key)
            admitting = eff.state == "active"
            reason = "" if admitting else eff.state
        if admitting != slot.admitting or reason != slot.reason:
            slot.set_admission(admitting, reason)
            for obs in self.observers:
                obs.admission(st, admitting)

    def _apply_all_admissions(self) -> None:
        for st in list(self.states.values()):
            self._apply_admission(st)
        self.touch()

    def admin_state(self, st: KeyState) -> str:
        eff = self.intent.effective(st.slot.domain, st.slot.key)
        if eff.state == "draining":
            return "drained" if st.slot.in_flight == 0 else "draining"
        return eff.state

    # -- operator intent -------------------------------------------------------------------------
    def _scope_keys(self, domain: str | None, key: str | None) -> list[tuple[str, str]]:
        """The known keys an intent on (domain, key) covers; a bad scope is ``BadRequest``, a
        named key that does not exist is ``NotFound``."""
        keys = self.intent.keys_affected(domain, key, self.known_keys())
        if key is not None and not keys:
            raise NotFound(f"no component {domain}/{key}: see 'oneiricctl list'")
        return keys

    async def pause(
        self,
        domain: str | None,
        key: str | None,
        *,
        uid: int | None,
        pid: int | None,
        note: str = "",
    ) -> list[tuple[str, str]]:
        return await self._close(self.intent.pause, domain, key, uid=uid, pid=pid, note=note)

    async def drain(
        self,
        domain: str | None,
        key: str | None,
        *,
        uid: int | None,
        pid: int | None,
        note: str = "",
    ) -> list[tuple[str, str]]:
        keys = await self._close(self.intent.drain, domain, key, uid=uid, pid=pid, note=note)
        self._watch_drained(keys)
        return keys

    async def _close(
        self,
        record: Callable[..., Awaitable[None]],
        domain: str | None,
        key: str | None,
        **who: Any,
    ) -> list[tuple[str, str]]:
        """Record a pause/drain intent durably, then close admission for what it covers."""
        keys = self._scope_keys(domain, key)
        try:
            await record(domain, key, **who)
        finally:  # also after a failed (rolled back) write: admission follows the intent
            self._apply_all_admissions()
        return keys

    def _watch_drained(self, keys: Iterable[tuple[str, str]]) -> None:
        """Touch when each draining key reaches zero in flight, so status flips to drained."""
        for k in keys:
            st = self.states.get(k)
            if st is not None and st.slot.in_flight:
                self.task_group.start_soon(self._touch_when_idle, st.slot)

    async def _touch_when_idle(self, slot: Slot) -> None:
        await slot.wait_idle()
        self.touch()

    async def resume(
        self, domain: str | None, key: str | None, *, uid: int | None, pid: int | None
    ) -> list[tuple[str, str]]:
        keys = self._scope_keys(domain, key)
        try:
            await self.intent.resume(domain, key, uid=uid, pid=pid)
        finally:
            # queue parked changes first (marks them pending), so nothing restarts the
            # instance they are about to replace when admission reopens
            for k in keys:
                st = self.states.get(k)
                if st is not None and (st.parked is not None or st.parked_removal):
                    self.request_reconcile(*k)
            self._apply_all_admissions()
        return keys

    def in_flight(self, keys: Iterable[tuple[str, str]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in keys:
            st = self.states.get(k)
            if st is not None and st.slot.in_flight:
                out[st.slot.name] = st.slot.in_flight
        return out

    async def wait_idle(
        self,
        keys: Iterable[tuple[str, str]],
        *,
        progress: Callable[[dict[str, int]], Any] | None = None,
    ) -> None:
        """Wait until every key in ``keys`` has no lease in flight, reporting progress (the map of
        what is still in flight) each time it changes. Cancel it to bound it."""
        keys = list(keys)
        last: dict[str, int] | None = None
        seen = self.version
        while True:
            now = self.in_flight(keys)
            if now != last and progress is not None:
                await _maybe_await(progress(now))
            last = now
            if not now:
                return
            async with anyio.create_task_group() as tg:
                # wake on whichever comes first: a key going idle or any runtime change
                async def _idle(slot: Slot) -> None:
                    await slot.wait_idle()
                    tg.cancel_scope.cancel()

                for k in keys:
                    st = self.states.get(k)
                    if st is not None and st.slot.in_flight:
                        tg.start_soon(_idle, st.slot)

                async def _changed(since: int) -> None:
                    await self.wait_changed(since)
                    tg.cancel_scope.cancel()

                tg.start_soon(_changed, seen)
            seen = self.version

    # -- selection and swaps ---------------------------------------------------------------------
    async def set_override(
        self,
        domain: str,
        key: str,
        provider: str | None,
        *,
        uid: int | None,
        pid: int | None,
        note: str = "",
    ) -> Outcome:
        self._scope_keys(domain, key)
        if provider is not None and self.registry.get(domain, key, provider) is None:
            names = sorted({r.candidate.provider for r in self.registry.ranked(domain, key)})
            raise NotFound(
                f"{domain}/{key} has no candidate provider {provider!r}; "
                f"candidates: {', '.join(names) or 'none'}"
            )
        previous = self.intent.override(domain, key)
        await self.intent.set_override(domain, key, provider, uid=uid, pid=pid, note=note)
        outcome = await self.reconcile(domain, key, force=True)
        if outcome == "failed" and previous != provider:
            # the serving instance stays, so must the durable override that selected it:
            # a restart must not come up on the provider that just failed
            await self.intent.set_override(domain, key, previous, uid=uid, pid=pid, note=note)
            self.touch()
        return outcome

    def desired(self, domain: str, key: str) -> Candidate | None:
        res = self.registry.resolve(
            domain,
            key,
            override=self.intent.override(domain, key),
            selection=self.selections.get(domain, {}).get(key),
        )
        return res.winner.candidate if res.winner is not None else None

    def request_reconcile(self, domain: str, key: str, *, force: bool = False) -> None:
        """Schedule a reconcile of the key; coalesced with one already queued."""
        st = self._ensure(domain, key)
        if st.pending:
            return
        st.pending = True
        self.task_group.start_soon(self._reconcile_queued, domain, key, force)

    async def _reconcile_queued(self, domain: str, key: str, force: bool) -> None:
        try:
            await self.reconcile(domain, key, force=force, _queued=True)
        except Exception:  # reconcile records its own errors; never kill the task group
            log.exception("%s/%s: reconcile failed", domain, key)

    async def reconcile(
        self, domain: str, key: str, *, force: bool = False, _queued: bool = False
    ) -> Outcome:
        """Make the key serve its desired provider: activate, swap make-before-break, park it
        while the key is paused/draining, or retire it when no candidate is left."""
        st = self._ensure(domain, key)
        async with st.lock:
            if _queued:
                st.pending = False
            if self.stopping:
                return "skipped"
            want = self.desired(domain, key)
            cur = st.slot.current
            if cur is not None and want == cur.candidate:
                changed = st.parked is not None or st.parked_removal or st.failed_target
                st.parked, st.parked_removal, st.failed_target = None, False, None
                if changed:
                    st.last_error = None
                    self.touch()
                return "unchanged"
            if cur is not None and self.intent.effective(domain, key).state != "active":
                st.parked, st.parked_removal = want, want is None
                if force:  # an explicit request (swap, reload): try it again on resume
                    st.failed_target = None
                log.info(
                    "%s: change to %s parked while %s",
                    st.slot.name,
                    repr(want.provider) if want else "no provider",
                    self.intent.effective(domain, key).state,
                )
                self.touch()
                return "parked"
            try:
                if want is None:
                    if cur is None:
                        return "unchanged"
                    st.slot.bind(None)
                    st.lifecycle = "inactive"
                    await self._notify_bound(st, None, cur)
                    self._retire_soon(st, cur)
                    self.touch()
                    return "removed"
                if not force and want == st.failed_target:
                    return "skipped"
                return await self._swap(st, want)
            finally:
                # cleared only once the parked change is done (or failed): until then a
                # resumed service must not restart the instance it replaces
                if st.parked is not None or st.parked_removal:
                    st.parked, st.parked_removal = None, False
                    self.touch()

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
            self.touch()
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
            log.error("%s", exc)
            self.touch()
            return "failed"
        elapsed = (time.monotonic() - started) * 1000
        if self.stopping:  # shutdown began while this instance was starting: never bind it
            await stop_instance(new.instance, self.timeouts.stop, st.slot.name)
            if cur is None:
                st.lifecycle = "inactive"
            return "skipped"
        st.failed_target = None
        st.last_error = None
        old = st.slot.bind(new)
        st.lifecycle = "ready"
        if old is not None:
            st.swaps += 1
            st.last_swap_ms = round(elapsed, 3)
        log.info(
            "%s: %s provider %r in %.1f ms",
            st.slot.name,
            "swapped to" if old else "activated",
            want.provider,
            elapsed,
        )
        self._start_health_loop(st, new)
        await self._notify_bound(st, new, old)
        if old is not None:
            self._retire_soon(st, old)
        self.touch()
        return "swapped" if old is not None else "activated"

    async def _notify_bound(self, st: KeyState, new: Binding | None, old: Binding | None) -> None:
        for obs in self.observers:
            try:
                await obs.bound(st, new, old)
            except Exception:
                log.exception("%s: observer failed on bind", st.slot.name)

    def _retire_soon(self, st: KeyState, old: Binding) -> None:
        self.task_group.start_soon(self._retire, st, old)

    async def _retire(self, st: KeyState, old: Binding) -> None:
        await retire(
            old,
            drain_timeout=self.timeouts.drain,
            stop_timeout=self.timeouts.stop,
            name=st.slot.name,
        )
        st.slot.forget(old)
        self.touch()

    # -- periodic health -------------------------------------------------------------------------
    def _start_health_loop(self, st: KeyState, binding: Binding) -> None:
        if st.health_scope is not None:
            st.health_scope.cancel()
        if getattr(binding.instance, "health", None) is None:
            st.health_scope = None
            return
        scope = anyio.CancelScope()
        st.health_scope = scope
        self.task_group.start_soon(self._health_loop, st, binding, scope)

    async def _health_loop(self, st: KeyState, binding: Binding, scope: anyio.CancelScope) -> None:
        with scope:
            while st.slot.current is binding:
                await anyio.sleep(self.timeouts.health_interval)
                if st.slot.current is not binding:
                    return
                ok, err = await check_health(binding.instance, self.timeouts.activation)
                lifecycle: Lifecycle = "ready" if ok else "degraded"
                if lifecycle != st.lifecycle or (not ok and err != st.last_error):
                    if not ok:
                        log.warning("%s: %s", st.slot.name, err)
                    elif st.lifecycle == "degraded":
                        log.info("%s: healthy again", st.slot.name)
                    st.lifecycle = lifecycle
                    st.last_error = err if not ok else None
                    self.touch()

    # -- configuration ---------------------------------------------------------------------------
    def apply_candidates(
        self,
        sources: set[str],
        candidates: Iterable[Candidate],
        selections: Mapping[str, Mapping[str, str]] | None = None,
    ) -> set[tuple[str, str]]:
        """Replace every candidate from ``sources`` (and the selections, when given) in one step;
        return the keys whose desired provider may have changed. Call :meth:`reconcile` (or
        :meth:`request_reconcile`) on them."""
        changed = self.registry.replace_sources(sources, candidates)
        if selections is not None:
            new_sel = {d: dict(m) for d, m in selections.items()}
            for d in set(new_sel) | set(self.selections):
                old_m, new_m = self.selections.get(d, {}), new_sel.get(d, {})
                for k in set(old_m) | set(new_m):
                    if old_m.get(k) != new_m.get(k):
                        changed.add((d, k))
            self.selections = new_sel
        for dk in changed:
            self._ensure(*dk)
        self.touch()
        return changed

    async def reconcile_many(
        self, keys: Iterable[tuple[str, str]], *, force: bool = False
    ) -> dict[tuple[str, str], Outcome]:
        """Reconcile keys concurrently (serialised per key) and wait for all."""
        results: dict[tuple[str, str], Outcome] = {}

        async def one(k: tuple[str, str]) -> None:
            results[k] = await self.reconcile(*k, force=force)

        async with anyio.create_task_group() as tg:
            for k in sorted(set(keys)):
                tg.start_soon(one, k)
        return results

    # -- status ----------------------------------------------------------------------------------
    def component_health(self, st: KeyState) -> ComponentHealth:
        return component_health(self, st)

    def components(
        self, domain: str | None = None, key: str | None = None
    ) -> list[ComponentHealth]:
        return [
            component_health(self, st)
            for k, st in sorted(self.states.items())
            if (domain is None or k[0] == domain)
            and (key is None or k[1] == key)
            and visible(self, st)
        ]

    def explain(self, domain: str, key: str) -> Any:
        return explain(self, self.state(domain, key))

    # -- shutdown --------------------------------------------------------------------------------
    async def shutdown(self, timeout: float) -> dict[str, int]:
        """Close admission everywhere (not persisted), wait up to ``timeout`` for leases to end,
        then stop every instance. Returns what was still in flight when the wait gave up."""
        if self.stopping:
            return {}
        self.stopping = True
        self._apply_all_admissions()
        keys = list(self.states)
        with anyio.move_on_after(timeout, shield=True):
            await self.wait_idle(keys)
        left = self.in_flight(keys)
        if left:
            log.warning("stopping with leases still in flight: %s", left)
        # wait for swaps already under way (each bounded by activation + stop timeouts); new
        # ones see `stopping` and do nothing
        with anyio.move_on_after(self.timeouts.activation + self.timeouts.stop, shield=True):
            for st in list(self.states.values()):
                async with st.lock:
                    pass
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for st in self.states.values():
                    if st.health_scope is not None:
                        st.health_scope.cancel()
                    for b in (st.slot.current, *st.slot.retiring):
                        if b is not None and not b.stopped:
                            b.stopped = True
                            st.lifecycle = "stopping"
                            tg.start_soon(
                                stop_instance, b.instance, self.timeouts.stop, st.slot.name
                            )
            for st in self.states.values():
                st.slot.bind(None)
                st.slot.retiring.clear()
                st.lifecycle = "inactive"
        self.touch()
        return left


async def _maybe_await(value: Any) -> Any:
    import inspect

    if inspect.isawaitable(value):
        return await value
    return value
