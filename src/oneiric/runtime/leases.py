"""Leases: admission gate, in-flight counting and idle events, per (domain, key).

A *binding* is one live instance serving a key; it counts its own leases so a retired instance
is stopped exactly when its last lease ends. A *slot* is the key: it holds the current binding,
the retiring ones, the admission gate and key-wide in-flight count. Nothing here polls: waiters
park on an ``anyio.Event`` that is set by the state change they wait for.

The fast path of :meth:`Slot.lease` (admission open, instance bound) does no awaiting and no
allocation besides the lease object itself, which keeps a lease round trip to about a
microsecond.
"""

from __future__ import annotations

import math
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from oneiric.errors import MissingCapability, Paused, Timeout, Unavailable

if TYPE_CHECKING:
    from oneiric.runtime.candidates import Candidate


class Waker(Protocol):
    """What a multi-key waiter registers: anything with ``set()`` (an ``anyio.Event``)."""

    def set(self) -> None: ...


class _InFlight:
    """A count of leases and an "idle" event set the moment it reaches zero."""

    __slots__ = ("_idle", "_idle_listeners", "in_flight")

    def __init__(self) -> None:
        self.in_flight = 0
        self._idle: anyio.Event | None = None  # made only when someone waits
        self._idle_listeners: set[Waker] | None = None  # multi-key waiters

    def _done_one(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            if self._idle is not None:
                self._idle.set()
            if self._idle_listeners:
                for waiter in self._idle_listeners:
                    waiter.set()

    def listen_idle(self, waiter: Waker) -> None:
        """Also set ``waiter`` each time the count reaches zero (until :meth:`unlisten_idle`)."""
        if self._idle_listeners is None:
            self._idle_listeners = set()
        self._idle_listeners.add(waiter)

    def unlisten_idle(self, waiter: Waker) -> None:
        if self._idle_listeners is not None:
            self._idle_listeners.discard(waiter)

    async def wait_idle(self) -> None:
        """Return once no lease is held."""
        while self.in_flight:
            if self._idle is None or self._idle.is_set():
                self._idle = anyio.Event()
            await self._idle.wait()


class Binding(_InFlight):
    """One live instance bound to a key; its count is the leases on this instance."""

    __slots__ = ("candidate", "generation", "instance", "provider", "stopped")

    def __init__(self, instance: Any, candidate: Candidate, provider: str, generation: int) -> None:
        super().__init__()
        self.instance = instance
        self.candidate = candidate
        self.provider = provider
        self.generation = generation
        self.stopped = False


class Slot(_InFlight):
    """Admission and in-flight state of one (domain, key); its count is the leases on every
    instance of the key (current and retiring), so a drain waits on it."""

    __slots__ = (
        "_changed",
        "admitting",
        "current",
        "domain",
        "key",
        "name",
        "reason",
        "retiring",
    )

    def __init__(self, domain: str, key: str) -> None:
        super().__init__()
        self.domain = domain
        self.key = key
        self.name = f"{domain}/{key}"
        self.current: Binding | None = None
        self.retiring: list[Binding] = []
        self.admitting = True
        self.reason = ""  # why admission is closed ("paused", "draining", "stopping")
        self._changed: anyio.Event | None = None  # made only when someone waits

    # -- state changes (called by the runtime) -------------------------------------------------
    def _wake(self) -> None:
        ev = self._changed
        if ev is not None:
            self._changed = None
            ev.set()

    def set_admission(self, admitting: bool, reason: str = "") -> None:
        if admitting == self.admitting and reason == self.reason:
            return
        self.admitting = admitting
        self.reason = "" if admitting else reason
        self._wake()

    def bind(self, binding: Binding | None) -> Binding | None:
        """Make ``binding`` current; return the previous one (now retiring, if any)."""
        old = self.current
        self.current = binding
        if old is not None:
            self.retiring.append(old)
        self._wake()
        return old

    def forget(self, binding: Binding) -> None:
        if binding in self.retiring:
            self.retiring.remove(binding)

    # -- leases --------------------------------------------------------------------------------
    def lease(
        self, *, wait: bool = True, timeout: float | None = None, capabilities: tuple[str, ...] = ()
    ) -> Lease:
        return Lease(self, wait, timeout, capabilities)

    def _release(self, binding: Binding) -> None:
        binding._done_one()
        self._done_one()

    async def wait_changed(self) -> None:
        """Return at the next admission or binding change."""
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()


class Lease:
    """``async with slot.lease() as instance:`` — pins the instance for the block."""

    __slots__ = ("_binding", "_caps", "_slot", "_timeout", "_wait")

    def __init__(
        self, slot: Slot, wait: bool, timeout: float | None, capabilities: tuple[str, ...] = ()
    ) -> None:
        self._slot = slot
        self._wait = wait
        self._timeout = timeout
        self._caps = capabilities
        self._binding: Binding | None = None

    def _check_caps(self, b: Binding) -> None:
        """Refuse an instance whose provider lacks a capability the caller asked for."""
        have = b.candidate.capabilities
        for cap in self._caps:  # the common case allocates nothing
            if cap not in have:
                break
        else:
            return
        missing = [c for c in self._caps if c not in have]
        if missing:
            raise MissingCapability(
                f"{self._slot.name}: provider {b.provider!r} lacks capabilit"
                f"{'y' if len(missing) == 1 else 'ies'} {', '.join(map(repr, missing))} "
                f"asked for by the caller (it declares {list(have)}); select a provider "
                "that has them (oneiricctl explain "
                f"{self._slot.domain} {self._slot.key} --capability {missing[0]})"
            )

    async def __aenter__(self) -> Any:
        slot = self._slot
        b = slot.current
        if self._caps and b is not None and slot.admitting:
            self._check_caps(b)
        if slot.admitting and b is not None:
            b.in_flight += 1
            slot.in_flight += 1
            self._binding = b
            return b.instance
        return await self._acquire_slow()

    async def _acquire_slow(self) -> Any:
        slot = self._slot
        deadline = math.inf if self._timeout is None else anyio.current_time() + self._timeout
        while True:
            b = slot.current
            if slot.admitting and b is not None:
                if self._caps:
                    self._check_caps(b)
                b.in_flight += 1
                slot.in_flight += 1
                self._binding = b
                return b.instance
            if not self._wait:
                if not slot.admitting:
                    raise Paused(f"{slot.name} is {slot.reason or 'paused'}; not admitting leases")
                raise Unavailable(f"{slot.name} has no active instance")
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                why = slot.reason if not slot.admitting else "waiting for an active instance"
                raise Timeout(f"lease on {slot.name} timed out ({why})")
            with anyio.move_on_after(remaining):
                await slot.wait_changed()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        b = self._binding
        if b is not None:
            self._binding = None
            self._slot._release(b)
