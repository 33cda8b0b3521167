"""The runtime's vocabulary: a component's key, its per-key state, outcomes and timeouts.

Every layer above the leases and the candidates speaks in these terms (registry, intent,
status, reconciler, facade, domain managers), so they live here and import nothing from those
layers: imports in :mod:`oneiric.runtime` point down only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import anyio
import anyio.lowlevel
import msgspec

from oneiric._changes import ChangeCounter
from oneiric.runtime.candidates import Candidate
from oneiric.runtime.health import ComponentHealth, Lifecycle
from oneiric.runtime.leases import Binding, Slot, Waker

__all__ = [
    "ComponentKey",
    "KeyLock",
    "KeyState",
    "Lifecycle",
    "Outcome",
    "RuntimeObserver",
    "Timeouts",
]

Outcome = Literal["unchanged", "swapped", "activated", "removed", "parked", "failed", "skipped"]


class ComponentKey(NamedTuple):
    """One (domain, key): ``str()`` gives ``domain/key``, the form every message and the
    control protocol use.

    A ``NamedTuple`` on purpose: immutable, small, and it equals (and hashes like) the plain
    ``(domain, key)`` tuple, so the lease path looks keys up with a plain tuple and never pays
    the ~0.2 µs of building one.
    """

    domain: str
    key: str

    def __str__(self) -> str:
        return f"{self.domain}/{self.key}"


@dataclass(frozen=True, slots=True)
class Timeouts:
    activation: float = 10.0
    stop: float = 30.0
    drain: float = 30.0
    health_interval: float = 5.0


class KeyLock:
    """A key's reconcile lock (one per key, so it is small): two slots, where an
    ``anyio.Lock`` costs ~0.5 KiB (its waiters' deque) and a shielded cancel scope per acquire.
    Uncontended, ``async with`` takes it after one checkpoint; contended, waiters queue in
    order and the lock is handed to the first one on release."""

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters: deque[anyio.Event] | None = None  # made on the first contention

    def locked(self) -> bool:
        return self._held

    async def __aenter__(self) -> None:
        # a cancellation point and a turn for the others first, as anyio.Lock's acquire (and
        # so the same interleaving of concurrent reconciles), for one loop turn, no scope
        await anyio.lowlevel.checkpoint()
        if not self._held:
            self._held = True
            return
        if self._waiters is None:
            self._waiters = deque()
        turn = anyio.Event()
        self._waiters.append(turn)
        try:
            await turn.wait()  # set by release: the lock is ours (still marked held)
        except BaseException:
            if turn.is_set():
                self._release()  # handed over as we were cancelled: pass it on
            else:
                self._waiters.remove(turn)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # handed over: stays held
        else:
            self._held = False


#: How many recent swap durations a key keeps for its percentiles.
SWAP_SAMPLES = 256


@dataclass(slots=True)
class KeyState(ChangeCounter):
    """Everything the runtime tracks about one key besides its slot. Its ``version`` (a
    :class:`ChangeCounter`) moves on every observable change of this key (see :meth:`touch`)."""

    slot: Slot
    lock: KeyLock = field(default_factory=KeyLock)
    lifecycle: Lifecycle = "inactive"
    last_error: str | None = None
    swaps: int = 0
    failed_swaps: int = 0
    last_swap_ms: float | None = None
    parked: Candidate | None = None
    parked_removal: bool = False
    failed_target: Candidate | None = None
    pending: bool = False
    #: the periodic check of the serving instance (runtime/checks.py), when it has health()
    health_check: HealthCheck | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    #: durations (ms) of the last SWAP_SAMPLES successful swaps, for the p50/p95/p99 in status;
    #: made at the first swap (an empty ring is ~0.4 KiB, most keys never swap)
    swap_ms: deque[float] | None = None
    #: the key's status row as last built: (version, in flight, row, its JSON), or None
    status: tuple[int, int, ComponentHealth, msgspec.Raw | None] | None = None
    _listeners: set[Waker] | None = None  # multi-key waiters (a drain's wait)

    def __post_init__(self) -> None:
        ChangeCounter.__init__(self)  # (not super(): a slots dataclass is a new class)

    @property
    def ck(self) -> ComponentKey:
        return ComponentKey(self.slot.domain, self.slot.key)

    def touch(self) -> None:
        """Something observable about this key changed: drop its cached status row and wake
        the waiters of this key — only them (call it through ``Runtime.key_changed``, which
        also tells the followers of the whole runtime)."""
        self.bump()
        self.status = None
        if self._listeners:
            for waiter in self._listeners:
                waiter.set()

    def swapped(self, ms: float) -> None:
        """Record a successful swap's duration."""
        self.swaps += 1
        self.last_swap_ms = ms
        if self.swap_ms is None:
            self.swap_ms = deque(maxlen=SWAP_SAMPLES)
        self.swap_ms.append(ms)

    def listen(self, waiter: Waker) -> None:
        """Also set ``waiter`` on this key's next changes (until :meth:`unlisten`)."""
        if self._listeners is None:
            self._listeners = set()
        self._listeners.add(waiter)

    def unlisten(self, waiter: Waker) -> None:
        if self._listeners is not None:
            self._listeners.discard(waiter)


class HealthCheck(Protocol):
    """What a key knows of its instance's periodic health check."""

    cancelled: bool
    queued: bool  # waiting in the scheduler's heap (not while it runs)

    def cancel(self) -> None: ...


class RuntimeObserver:
    """Domain managers subscribe to bindings and admission changes. Methods may be overridden;
    they run on the event loop and must not block."""

    async def bound(self, state: KeyState, new: Binding | None, old: Binding | None) -> None:
        """``new`` serves the key now (``old``, if any, is retiring and still running)."""

    def admission(self, state: KeyState, admitting: bool) -> None:
        """Admission of the key opened or closed."""
