"""The runtime's facade: what components, domain managers and control handlers talk to.

:class:`Runtime` is the single owner of mutable component state. It holds the per-key state,
decides admission from operator intent (pause, drain, resume, overrides), hands out leases and
reports status; what each key should serve is :class:`~oneiric.runtime.desired.DesiredState`'s
answer, and making it serve that is the :class:`~oneiric.runtime.reconciler.Reconciler`'s job.
A change to one key goes through :meth:`Runtime.key_changed`: it wakes the waiters of that key
only (:meth:`KeyState.wait_changed`: service runners, schedulers, drains), drops that key's
cached status row, and bumps :attr:`Runtime.version`, which only the followers of the whole
runtime wait on (the health writer and ``watch`` streams). Status rows are built and encoded
once per change of their key, so a status of 10,000 keys costs O(changed) work plus a copy.
The layers below are drawn in docs/ARCHITECTURE.md ("The runtime is layered").

One cohesive seam, even past ~400 lines: it is the facade, every method an entry point of a
few lines over the layers below (reconciler, desired state, status, idle waits, intent).
Splitting it further would put ``Runtime`` methods in other modules again, the circle that
issue 10 removed; new behaviour belongs in those layers, not here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from threading import get_ident
from types import TracebackType
from typing import Any, cast

import anyio
import anyio.abc
import msgspec
from anyio.lowlevel import RunVar, RunvarToken

from oneiric._changes import ChangeCounter
from oneiric.errors import MissingCapability, NotDurable, NotFound
from oneiric.runtime import idle, status
from oneiric.runtime.candidates import Candidate, Explanation, Resolution
from oneiric.runtime.delta import Delta, Snapshot
from oneiric.runtime.desired import DesiredState
from oneiric.runtime.health import Admin, ComponentHealth
from oneiric.runtime.history import History
from oneiric.runtime.intent import IntentStore, scope_label
from oneiric.runtime.keys import (
    ComponentKey,
    KeyState,
    Lifecycle,
    Outcome,
    RuntimeObserver,
    Timeouts,
)
from oneiric.runtime.leases import Lease, Slot
from oneiric.runtime.pace import Pacer
from oneiric.runtime.reconciler import Reconciler
from oneiric.runtime.registry import Registry

# re-exported: the runtime's public surface lives here
__all__ = [
    "ComponentKey",
    "KeyState",
    "Lifecycle",
    "Outcome",
    "Runtime",
    "RuntimeObserver",
    "Timeouts",
    "current_runtime",
]

log = logging.getLogger(__name__)

_ENCODE = msgspec.json.Encoder().encode

#: keys reconciled at once by :meth:`Runtime.reconcile_many` (a start-up or a reload)
RECONCILE_WORKERS = 64

_current: RunVar[Runtime] = RunVar("oneiric_runtime")
# RunVar.get asks anyio which event loop is running (~1.4 µs: more than a lease). The runtime's
# own tasks inherit this ContextVar (~20 ns), which is trusted only on the thread the runtime
# runs on while it runs: a worker thread inherits the context but not the event loop.
_shortcut: ContextVar[Runtime | None] = ContextVar("oneiric_runtime_shortcut", default=None)


def current_runtime() -> Runtime:
    """The runtime of the running event loop (components reach each other through it)."""
    rt = _shortcut.get()
    if rt is not None and rt._thread == get_ident():
        return rt
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError(
            "no oneiric runtime is running in this event loop; component code reaches it "
            "only while the daemon (or an 'async with Runtime(...)') is running"
        ) from None
    except anyio.NoEventLoopError:
        raise RuntimeError(
            "no event loop is running in this thread, so no oneiric runtime either: call it "
            "from the daemon's event loop (from a worker thread, through anyio.from_thread)"
        ) from None


class Runtime(ChangeCounter):
    """Owns every component instance of the process. Use as ``async with Runtime(...) as rt``."""

    def __init__(
        self,
        *,
        intent: IntentStore,
        registry: Registry | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        super().__init__()
        # not `registry or ...`: an empty Registry is falsy (it has a __len__)
        self.registry = registry if registry is not None else Registry()
        self.intent = intent
        self._wanted = DesiredState(self.registry, intent)
        self._override_locks: dict[tuple[str, str], anyio.Lock] = {}
        self.states: dict[ComponentKey, KeyState] = {}
        # The same dict, looked up with a plain (domain, key) tuple on the lease path: a
        # ComponentKey equals and hashes like one, and building one costs ~0.2 µs per lease.
        self._by_pair = cast("dict[tuple[str, str], KeyState]", self.states)
        self.observers: list[RuntimeObserver] = []
        self._order: list[ComponentKey] | None = None  # sorted keys of `states`, while valid
        self._known: list[ComponentKey] | None = None  # sorted states ∪ registry keys
        #: one time budget for the long walks on the loop (reconcile batches, the health
        #: writer's gathering): together they let it poll every couple of ms (runtime/pace.py)
        self.pacer = Pacer()
        #: what happened, for ``oneiricctl events`` and ``status DOMAIN KEY``
        self.history = History()
        self._reconciler = Reconciler(
            changes=self,
            key_changed=self.key_changed,
            intent=intent,
            desired=self._wanted,
            observers=self.observers,
            timeouts=timeouts or Timeouts(),
            task_group=lambda: self.task_group,
            history=self.history,
        )
        self._tg: anyio.abc.TaskGroup | None = None
        self._token: RunvarToken[Runtime] | None = None
        self._shortcut: Token[Runtime | None] | None = None
        self._thread: int | None = None  # the thread of the event loop it runs on, while it runs

    @property
    def timeouts(self) -> Timeouts:
        return self._reconciler.timeouts

    @timeouts.setter
    def timeouts(self, value: Timeouts) -> None:
        self._reconciler.timeouts = value

    @property
    def activation_log_level(self) -> int:
        """The level of each key's "activated provider" log line (swaps are always INFO)."""
        return self._reconciler.activation_log_level

    @activation_log_level.setter
    def activation_log_level(self, level: int) -> None:
        self._reconciler.activation_log_level = level

    @property
    def selections(self) -> dict[str, dict[str, str]]:
        """The config's provider selections: domain -> key -> provider."""
        return self._wanted.selections

    @selections.setter
    def selections(self, value: dict[str, dict[str, str]]) -> None:
        self._wanted.selections = value

    @property
    def stopping(self) -> bool:
        """Shutdown has begun: admission is closed everywhere and nothing new is bound."""
        return self._reconciler.stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self._reconciler.stopping = value

    # -- context ---------------------------------------------------------------------------------
    async def __aenter__(self) -> Runtime:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._thread = get_ident()
        self._token = _current.set(self)
        self._shortcut = _shortcut.set(self)
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
            self._thread = None
            if self._token is not None and _current.get(None) is self:
                _current.reset(self._token)
            if self._shortcut is not None:
                with contextlib.suppress(ValueError):  # exited from another context
                    _shortcut.reset(self._shortcut)
            self._token = self._shortcut = None
        return await self._tg.__aexit__(exc_type, exc, tb)

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise RuntimeError("the runtime is not running (use 'async with Runtime(...)')")
        return self._tg

    # -- keys ------------------------------------------------------------------------------------
    def state(self, domain: str, key: str) -> KeyState:
        st = self._by_pair.get((domain, key))
        if st is None:
            raise NotFound(f"no component {ComponentKey(domain, key)}: see 'oneiricctl list'")
        return st

    def _ensure(self, ck: ComponentKey) -> KeyState:
        st = self.states.get(ck)
        if st is None:
            st = self.states[ck] = KeyState(Slot(ck.domain, ck.key))
            self._order = self._known = None
            self._apply_admission(st)
        return st

    def known_keys(self) -> list[ComponentKey]:
        if self._known is None:
            self._known = sorted(set(self.states) | set(self.registry.keys()))
        return self._known

    def key_changed(self, st: KeyState) -> None:
        """Something observable about the key changed: wake its waiters (only them), drop its
        cached status row, and tell the followers of the whole runtime."""
        st.touch()
        self.bump()

    def use(
        self,
        domain: str,
        key: str,
        *,
        wait: bool = True,
        timeout: float | None = None,
        capabilities: Iterable[str] = (),
    ) -> Lease:
        """``async with rt.use("adapter", "cache") as cache:`` — a lease on the serving instance;
        with ``capabilities``, granted only on an instance whose provider declares them all
        (else :class:`MissingCapability`)."""
        st = self._by_pair.get((domain, key))
        if st is None:
            raise NotFound(f"no component {ComponentKey(domain, key)}")
        caps = () if not capabilities else tuple(capabilities)
        return st.slot.lease(wait=wait, timeout=timeout, capabilities=caps)

    def required(self, domain: str, key: str) -> tuple[str, ...]:
        """The capabilities ``[requires.<domain>] key`` asks of every provider of the key."""
        return self._wanted.required(domain, key)

    def requires_table(self) -> dict[str, dict[str, tuple[str, ...]]]:
        """Every ``[requires]`` rule in force: domain -> key -> capabilities."""
        return self._wanted.requires

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
            st.touch()
            for obs in self.observers:
                obs.admission(st, admitting)

    def _apply_admissions(self, keys: Iterable[ComponentKey] | None = None) -> None:
        """Re-derive admission of ``keys`` (all when None) from intent; their status rows show
        the intent too (its note, author, scope), so each is touched either way."""
        states = self.states
        targets = list(states.values()) if keys is None else [states.get(ck) for ck in keys]
        for st in targets:
            if st is not None:
                self._apply_admission(st)
                st.touch()
        self.bump()

    def admin_state(self, st: KeyState) -> Admin:
        """``active``, ``paused``, ``draining`` or (no lease left in a drain) ``drained``."""
        return status.admin_state(st, self.intent.effective(st.slot.domain, st.slot.key))

    # -- operator intent -------------------------------------------------------------------------
    def _scope_keys(self, domain: str | None, key: str | None) -> list[ComponentKey]:
        """The known keys an intent on (domain, key) covers; a bad scope is ``BadRequest``, a
        named key that does not exist is ``NotFound``."""
        if domain is not None and key is not None:  # one key: O(1), not a scan of every key
            ck = ComponentKey(domain, key)
            known = [ck] if ck in self.states or self.registry.ranked(domain, key) else []
        else:
            known = self.known_keys()
        keys = self.intent.keys_affected(domain, key, known)
        if key is not None and not keys:
            raise NotFound(f"no component {scope_label(domain, key)}: see 'oneiricctl list'")
        return keys

    async def pause(
        self,
        domain: str | None,
        key: str | None,
        *,
        uid: int | None,
        pid: int | None,
        note: str = "",
    ) -> list[ComponentKey]:
        return await self._close(self.intent.pause, domain, key, uid=uid, pid=pid, note=note)

    async def drain(
        self,
        domain: str | None,
        key: str | None,
        *,
        uid: int | None,
        pid: int | None,
        note: str = "",
    ) -> list[ComponentKey]:
        keys = await self._close(self.intent.drain, domain, key, uid=uid, pid=pid, note=note)
        self._watch_drained(keys)
        return keys

    async def _close(
        self,
        record: Callable[..., Awaitable[None]],
        domain: str | None,
        key: str | None,
        **who: Any,
    ) -> list[ComponentKey]:
        """Record a pause/drain intent durably, then close admission for what it covers."""
        keys = self._scope_keys(domain, key)
        try:
            await record(domain, key, **who)
        finally:  # also after a failed (rolled back) write: admission follows the intent
            self._apply_admissions(keys)
        return keys

    def _watch_drained(self, keys: Iterable[ComponentKey]) -> None:
        """Bump when each draining key reaches zero in flight, so status flips to drained."""
        for ck in keys:
            st = self.states.get(ck)
            if st is not None and st.slot.in_flight:
                self.task_group.start_soon(idle.touch_when_idle, st, self.key_changed)

    async def resume(
        self, domain: str | None, key: str | None, *, uid: int | None, pid: int | None
    ) -> list[ComponentKey]:
        keys = self._scope_keys(domain, key)
        try:
            await self.intent.resume(domain, key, uid=uid, pid=pid)
        finally:
            # queue parked changes first (marks them pending), so nothing restarts the
            # instance they are about to replace when admission reopens
            for ck in keys:
                st = self.states.get(ck)
                if st is not None and (st.parked is not None or st.parked_removal):
                    self._reconciler.request(st)
            self._apply_admissions(keys)
        return keys

    def in_flight(self, keys: Iterable[ComponentKey]) -> dict[str, int]:
        """``{"domain/key": leases in flight}`` for each busy key of ``keys``."""
        return idle.in_flight(self.states, keys)

    async def wait_idle(
        self,
        keys: Iterable[ComponentKey],
        *,
        progress: Callable[[dict[str, int]], Any] | None = None,
    ) -> None:
        """Wait until no key of ``keys`` has a lease in flight (see :func:`idle.wait_idle`)."""
        await idle.wait_idle(self.states, keys, progress=progress)

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
                f"{ComponentKey(domain, key)} has no candidate provider {provider!r}; "
                f"candidates: {', '.join(names) or 'none'}"
            )
        if provider is not None:
            refused = self.registry.refusal(domain, key, provider, self.required(domain, key))
            if refused is not None:
                raise MissingCapability(f"swap refused: {refused}")
        # Shielded like the swap itself: once started, the swap and the record of it complete
        # together even if the requester goes away (bounded by the activation, stop and disk
        # timeouts), so the serving provider and the durable override never disagree.
        with anyio.CancelScope(shield=True):
            outcome = await self._try_override(domain, key, provider, uid=uid, pid=pid, note=note)
        return outcome  # noqa: RET504 - outside the scope, or mypy sees a missing return

    async def _try_override(
        self,
        domain: str,
        key: str,
        provider: str | None,
        *,
        uid: int | None,
        pid: int | None,
        note: str,
    ) -> Outcome:
        """Activate first, persist after: the override becomes durable intent only once its
        provider serves (or the change is parked), so a crash during a failing swap restarts on
        the provider that was serving. One operator swap per key at a time."""
        ck = (domain, key)
        lock = self._override_locks.get(ck)
        if lock is None:
            lock = self._override_locks[ck] = anyio.Lock()
        async with lock:
            self._wanted.trial[ck] = provider
            try:
                outcome = await self.reconcile(domain, key, force=True)
            finally:
                # no await between dropping the trial and set_override applying it in memory
                del self._wanted.trial[ck]
            if outcome == "failed":
                self.key_changed(self.state(domain, key))  # status: the durable override again
                return outcome
            try:
                await self.intent.set_override(domain, key, provider, uid=uid, pid=pid, note=note)
            except NotDurable:
                # serving the new provider, but the override could not be recorded: go back
                # to what the durable intent selects, so memory, disk and the key agree
                await self.reconcile(domain, key, force=True)
                raise
        return outcome

    def desired(self, domain: str, key: str) -> Candidate | None:
        """The candidate the key should serve: operator override, config selection, ranking."""
        return self._wanted.desired(ComponentKey(domain, key))

    def resolve(self, domain: str, key: str) -> Resolution:
        """The key's winner and why (see :meth:`DesiredState.resolve`)."""
        return self._wanted.resolve(domain, key)

    def request_reconcile(self, domain: str, key: str, *, force: bool = False) -> None:
        """Schedule a reconcile of the key; coalesced with one already queued."""
        self._reconciler.request(self._ensure(ComponentKey(domain, key)), force=force)

    async def reconcile(self, domain: str, key: str, *, force: bool = False) -> Outcome:
        """Make the key serve its desired provider (see :meth:`Reconciler.reconcile`)."""
        st = self._ensure(ComponentKey(domain, key))
        return await self._reconciler.reconcile(st, force=force)

    # -- configuration ---------------------------------------------------------------------------
    def apply_candidates(
        self,
        sources: set[str],
        candidates: Iterable[Candidate],
        selections: Mapping[str, Mapping[str, str]] | None = None,
        requires: Mapping[str, Mapping[str, tuple[str, ...]]] | None = None,
        *,
        remote_selections: Mapping[str, Mapping[str, str]] | None = None,
    ) -> set[ComponentKey]:
        """Replace every candidate from ``sources`` (and the config or remote selections and
        the requirements, when given) in one step; return the keys whose desired provider may
        have changed. Call :meth:`reconcile` (or :meth:`request_reconcile`) on them."""
        changed = self._wanted.apply(
            sources, candidates, selections, requires, remote_selections=remote_selections
        )
        self._known = None  # the registry's keys may have changed
        for ck in changed:
            self._ensure(ck).touch()  # its winner may differ: a new status row
        self.bump()
        return changed

    def snapshot(self, sources: Iterable[str]) -> Snapshot:
        """The state a :class:`~oneiric.runtime.delta.Delta` for ``sources`` is computed
        against (take it right after applying them)."""
        return self._wanted.snapshot(sources)

    def apply_delta(self, delta: Delta) -> set[ComponentKey] | None:
        """:meth:`apply_candidates` for a change worked out off the loop
        (:func:`oneiric.runtime.delta.plan`), in O(what changed); None (nothing applied) when
        the sources or the config's tables moved since its snapshot."""
        changed = self._wanted.apply_delta(delta)
        if changed is None:
            return None
        self._known = None  # the registry's keys may have changed
        for ck in changed:
            self._ensure(ck).touch()  # its winner may differ: a new status row
        self.bump()
        return changed

    async def reconcile_many(
        self, keys: Iterable[ComponentKey], *, force: bool = False
    ) -> dict[ComponentKey, Outcome]:
        """Reconcile keys concurrently (serialised per key) and wait for all: up to
        :data:`RECONCILE_WORKERS` at a time, each worker taking the next key, rather than a
        task per key (10,000 keys at start-up spawned 10,000 tasks and their cancel scopes)."""
        results: dict[ComponentKey, Outcome] = {}
        todo = sorted(set(keys))
        queue = iter(todo)  # shared: each key is taken by exactly one worker
        pacer = self.pacer  # the batch lets the loop poll every couple of ms

        async def worker() -> None:
            for ck in queue:
                results[ck] = await self.reconcile(ck.domain, ck.key, force=force)
                if pacer.due():
                    await pacer.pause()

        async with anyio.create_task_group() as tg:
            for _ in range(min(len(todo), RECONCILE_WORKERS)):
                tg.start_soon(worker)
        return results

    # -- status ----------------------------------------------------------------------------------
    def component_health(self, st: KeyState) -> ComponentHealth:
        """The key's status row: built once per change of the key (and of its lease count,
        which moves without a touch: leases stay ~1 µs), then served from its cache."""
        cached = st.status
        in_flight = st.slot.in_flight
        if cached is not None and cached[0] == st.version and cached[1] == in_flight:
            return cached[2]
        slot = st.slot
        row = status.component_health(
            st,
            eff=self.intent.effective(slot.domain, slot.key),
            desired=self.desired(slot.domain, slot.key),
        )
        st.status = (st.version, in_flight, row, None)
        return row

    def component_json(self, st: KeyState) -> msgspec.Raw:
        """The key's status row as JSON, encoded once per change of the row."""
        row = self.component_health(st)
        cached = st.status
        assert cached is not None and cached[2] is row
        raw = cached[3]
        if raw is None:
            raw = msgspec.Raw(_ENCODE(row))
            st.status = (cached[0], cached[1], row, raw)
        return raw

    def selected(self, domain: str | None = None, key: str | None = None) -> list[KeyState]:
        """The visible keys of ``domain``/``key`` (all when None), in status order."""
        return self._selected(domain, key)

    def _selected(self, domain: str | None, key: str | None) -> list[KeyState]:
        if domain is not None and key is not None:
            st = self._by_pair.get((domain, key))
            found = [st] if st is not None else []
        else:
            if self._order is None:
                self._order = sorted(self.states)
            states = self.states
            found = [
                states[ck]
                for ck in self._order
                if (domain is None or ck.domain == domain) and (key is None or ck.key == key)
            ]
        return [st for st in found if status.visible(st, self.registry)]

    def components(
        self, domain: str | None = None, key: str | None = None
    ) -> list[ComponentHealth]:
        return [self.component_health(st) for st in self._selected(domain, key)]

    def components_json(
        self, domain: str | None = None, key: str | None = None
    ) -> list[msgspec.Raw]:
        """:meth:`components`, each row already encoded (a reply or file is then a copy)."""
        return [self.component_json(st) for st in self._selected(domain, key)]

    def explain(
        self, domain: str, key: str, capability: tuple[str, ...] | None = None
    ) -> Explanation:
        """``explain``; ``capability`` marks the candidates that declare all of it."""
        st = self.state(domain, key)
        return status.explain(
            st,
            self.registry,
            eff=self.intent.effective(domain, key),
            override=self.intent.override(domain, key),
            selection=self._wanted.selection(domain, key),
            required=self.required(domain, key),
            capability=capability,
            remote=self._wanted.remote_selection(domain, key),
        )

    # -- shutdown --------------------------------------------------------------------------------
    async def shutdown(self, timeout: float) -> dict[str, int]:
        """Close admission everywhere (not persisted), wait up to ``timeout`` for leases to end,
        then stop every instance. Returns what was still in flight when the wait gave up."""
        if self.stopping:
            return {}
        self.stopping = True
        self._apply_admissions()
        keys = list(self.states)
        with anyio.move_on_after(timeout, shield=True):
            await self.wait_idle(keys)
        left = self.in_flight(keys)
        if left:
            log.warning("stopping with leases still in flight: %s", left)
        await self._reconciler.stop_all(self.states)
        return left
