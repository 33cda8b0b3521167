"""Periodic health checks: one scheduler for every serving instance, not a task per key.

Each instance with a ``health()`` is checked every ``health_interval`` while it serves its key
(SPEC §10), bounded by the activation timeout, and the outcome goes to the reconciler (ready ⇄
degraded). At 10,000 keys a task per key cost 10,000 sleeping tasks with their cancel scopes,
timers and task handles (≈ 5 KiB and ~80 µs of start-up per key); here a key costs one
:class:`Check` and one heap entry.

:class:`HealthChecks` keeps a heap of due times. Its one task sleeps until the earliest is due
(checks due within :data:`GRACE` of it run in the same wake-up), then runs each due check:

- a ``health()`` that answers synchronously (a plain ``def``, like the built-in providers) runs
  inline: a sync call cannot be interrupted by a timeout anyway, and with no task and no
  cancel scope it costs a few µs; every :data:`SLICE` of them the scheduler yields, so a burst
  of due checks does not hold the loop;
- one that returns an awaitable runs in a task of its own under the timeout, at most
  :data:`MAX_IN_FLIGHT` at a time: a slow or hanging ``health()`` delays nobody else's.

The next check of a key is due ``health_interval`` after its last one *ended* (as a loop of
"sleep, check" would), read at that moment, so a reload's new interval applies from each key's
next check. Cancelling a :class:`Check` (a swap replaced the instance, or shutdown) drops its
heap entry lazily and cancels a check in flight.

Time comes from a :class:`Clock`, anyio's by default; tests hand in one they move by hand.
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.lowlevel

from oneiric.errors import ComponentExit
from oneiric.runtime.keys import KeyState
from oneiric.runtime.leases import Binding
from oneiric.runtime.lifecycle import describe

__all__ = [
    "GRACE",
    "MAX_IN_FLIGHT",
    "SLICE",
    "AnyioClock",
    "Check",
    "Clock",
    "HealthChecks",
    "check_health",
    "finish",
    "probe",
]

log = logging.getLogger(__name__)

#: checks due within this many seconds of the earliest one run in the same wake-up (at start-up
#: 10,000 keys activate within a second or so: ~200 wake-ups per interval instead of 10,000)
GRACE = 0.005
#: asynchronous health() calls in flight at once; past that the scheduler waits for one to end
MAX_IN_FLIGHT = 64
#: synchronous checks run back to back before the scheduler yields to the rest of the loop
SLICE = 256

#: (healthy, why not): what a check found
Outcome = tuple[bool, str | None]


class Clock(Protocol):
    """Where the scheduler's time comes from."""

    def now(self) -> float: ...

    async def wait(self, deadline: float, wake: anyio.Event) -> None:
        """Return at ``deadline`` (this clock's time) or once ``wake`` is set, whichever is
        first."""


class AnyioClock:
    """The event loop's clock."""

    def now(self) -> float:
        return anyio.current_time()

    async def wait(self, deadline: float, wake: anyio.Event) -> None:
        with anyio.move_on_after(deadline - anyio.current_time()):
            await wake.wait()


class Check:
    """One instance's periodic check (its key holds it as ``KeyState.health_check``)."""

    __slots__ = ("binding", "cancelled", "queued", "scope", "state")

    def __init__(self, state: KeyState, binding: Binding) -> None:
        self.state = state
        self.binding = binding
        self.cancelled = False
        self.queued = False  # in the heap (not while it runs)
        self.scope: anyio.CancelScope | None = None  # while an async health() runs

    @property
    def live(self) -> bool:
        return not self.cancelled and self.state.slot.current is self.binding

    def cancel(self) -> None:
        """No more checks of this instance; one in flight is cancelled."""
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


_HEALTHY: Outcome = (True, None)


def _verdict(ok: object) -> Outcome:
    return (False, "health() returned false") if ok is False else _HEALTHY


def _raised(exc: BaseException) -> Outcome:
    return False, f"health() raised {describe(exc)}"


def probe(instance: Any) -> Outcome | Awaitable[Any]:
    """Call ``instance.health()``: its outcome when it answered synchronously, else the
    awaitable it returned (for :func:`finish`). ``SystemExit``/``KeyboardInterrupt`` from it
    are a :class:`ComponentExit`, an ordinary failure of that component."""
    fn = instance.health
    try:
        result = fn()
    except (SystemExit, KeyboardInterrupt) as exc:
        return _raised(ComponentExit.from_exit(exc, f"{getattr(fn, '__qualname__', fn)!s}()"))
    except Exception as exc:
        return _raised(exc)
    if result is True:  # the common answer, before the slower awaitable check
        return _HEALTHY
    if inspect.isawaitable(result):
        return result
    return _verdict(result)


async def finish(pending: Awaitable[Any], timeout: float, what: str = "health()") -> Outcome:
    """Await what :func:`probe` returned, within ``timeout`` seconds."""
    try:
        with anyio.fail_after(timeout):
            ok = await pending
    except TimeoutError:
        return False, f"{what} did not answer within {timeout:g}s"
    except (SystemExit, KeyboardInterrupt) as exc:
        return _raised(ComponentExit.from_exit(exc, what))
    except Exception as exc:
        return _raised(exc)
    return _verdict(ok)


async def check_health(instance: Any, timeout: float) -> Outcome:
    """Run the instance's ``health()`` (if any) once, bounded by ``timeout``."""
    if getattr(instance, "health", None) is None:
        return True, None
    outcome = probe(instance)
    return outcome if isinstance(outcome, tuple) else await finish(outcome, timeout)


class HealthChecks:
    """The scheduler (see the module doc). Its task starts in ``task_group()`` with the first
    :meth:`watch`; ``on_result`` is called on the loop with each live check's outcome."""

    def __init__(
        self,
        *,
        task_group: Callable[[], anyio.abc.TaskGroup],
        interval: Callable[[], float],
        timeout: Callable[[], float],
        on_result: Callable[[KeyState, bool, str | None], None],
        clock: Clock | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._task_group = task_group
        self._interval = interval
        self._timeout = timeout
        self._on_result = on_result
        self._clock: Clock = clock or AnyioClock()
        self._heap: list[tuple[float, int, Check]] = []
        self._seq = itertools.count()
        self._dead = 0  # cancelled entries still in the heap (dropped lazily)
        self._wake = anyio.Event()
        #: when the sleeping scheduler wakes up; -inf while it runs (a new entry needs no wake)
        self._sleeping_until = -math.inf
        self._slots = anyio.Semaphore(max_in_flight)
        self._running = False
        self._closed = False
        self._scope: anyio.CancelScope | None = None
        self.in_flight = 0

    def __len__(self) -> int:
        """Checks scheduled (cancelled ones not yet dropped excluded)."""
        return len(self._heap) - self._dead

    def watch(self, st: KeyState, binding: Binding) -> None:
        """Check ``binding`` every interval from now on while it serves ``st``'s key (replacing
        the key's previous check); nothing for an instance without ``health()``."""
        self.forget(st)
        if self._closed or getattr(binding.instance, "health", None) is None:
            return
        check = st.health_check = Check(st, binding)
        self._schedule(check, self._clock.now() + self._interval())
        if not self._running:
            self._running = True
            self._task_group().start_soon(self.run)

    def forget(self, st: KeyState) -> None:
        """Stop checking the key's instance (a check in flight is cancelled)."""
        check = st.health_check
        if check is not None:
            st.health_check = None
            if not check.cancelled:
                check.cancel()
                if check.queued:  # a check in flight has no heap entry to drop later
                    self._dead += 1
                    self._compact()

    def close(self) -> None:
        """Shutdown: cancel every check (those in flight too); nothing runs any more."""
        for _, _, check in self._heap:
            check.cancel()
        self._heap.clear()
        self._dead = 0
        self._closed = True
        if self._scope is not None:
            self._scope.cancel()  # the checks in flight, and the scheduler itself

    def _schedule(self, check: Check, due: float) -> None:
        check.queued = True
        heapq.heappush(self._heap, (due, next(self._seq), check))
        if due < self._sleeping_until:
            self._wake.set()

    def _compact(self) -> None:
        # a key swapped back and forth within one interval leaves cancelled entries behind:
        # once they are half the heap, rebuild it without them (amortised O(1) per cancel)
        if self._dead > 64 and self._dead * 2 > len(self._heap):
            self._heap = [e for e in self._heap if not e[2].cancelled]
            heapq.heapify(self._heap)
            self._dead = 0

    async def run(self) -> None:
        """Run due checks until cancelled (with the runtime's task group)."""
        clock = self._clock
        heap = self._heap
        async with anyio.create_task_group() as tg:
            self._scope = tg.cancel_scope
            while not self._closed:
                heap = self._heap  # _compact may have replaced it
                now = clock.now()
                if not heap or heap[0][0] > now:
                    self._sleeping_until = heap[0][0] + GRACE if heap else math.inf
                    if self._wake.is_set():
                        self._wake = anyio.Event()
                    await clock.wait(self._sleeping_until, self._wake)
                    self._sleeping_until = -math.inf
                    continue
                ran = 0
                next_due = now + self._interval()  # for the checks that answer at once
                while heap and heap[0][0] <= now:
                    check = heapq.heappop(heap)[2]
                    check.queued = False
                    if check.cancelled:
                        self._dead -= 1
                        continue
                    if check.state.slot.current is not check.binding:
                        continue  # replaced or removed: its key watches the new one, if any
                    outcome = probe(check.binding.instance)
                    if isinstance(outcome, tuple):
                        self._done(check, outcome, next_due)
                        ran += 1
                        if ran % SLICE == 0:
                            await anyio.lowlevel.checkpoint()
                            heap = self._heap
                            next_due = clock.now() + self._interval()
                        continue
                    await self._slots.acquire()
                    self.in_flight += 1
                    tg.start_soon(self._finish, check, outcome)
                    heap = self._heap
                if not ran:
                    await anyio.lowlevel.checkpoint()

    async def _finish(self, check: Check, pending: Awaitable[Any]) -> None:
        try:
            if check.cancelled:
                return  # replaced before its turn came: never start it
            with anyio.CancelScope() as scope:
                check.scope = scope
                outcome = await finish(pending, self._timeout())
            if not scope.cancelled_caught:
                self._done(check, outcome, self._clock.now() + self._interval())
        finally:
            check.scope = None
            self.in_flight -= 1
            self._slots.release()
            if inspect.iscoroutine(pending):
                pending.close()  # cancelled before it started: no "never awaited" warning

    def _done(self, check: Check, outcome: Outcome, next_due: float) -> None:
        if not check.live:
            return
        self._on_result(check.state, *outcome)
        if check.live:  # on_result never swaps, but stay exact
            self._schedule(check, next_due)
