"""The periodic health-check scheduler (runtime/checks.py): one task for every key's checks.

Time is a clock the test moves by hand: no test sleeps, and "not checked yet" is asserted once
every task is blocked (nothing left to run), not after a pause."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from oneiric.runtime.candidates import Candidate
from oneiric.runtime.checks import GRACE, HealthChecks, check_health, probe
from oneiric.runtime.keys import KeyState
from oneiric.runtime.leases import Binding, Slot

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

INTERVAL = 10.0


class ManualClock:
    """Moves only when told to; wakes the scheduler when its deadline is reached."""

    def __init__(self) -> None:
        self.t = 0.0
        self._waiting: tuple[float, anyio.Event] | None = None

    def now(self) -> float:
        return self.t

    async def wait(self, deadline: float, wake: anyio.Event) -> None:
        if self.t >= deadline:
            return
        self._waiting = (deadline, wake)
        try:
            await wake.wait()
        finally:
            self._waiting = None

    async def advance(self, seconds: float) -> None:
        """Move time on, and return once whatever it made due has run (or is blocked)."""
        self.t += seconds
        if self._waiting is not None and self.t >= self._waiting[0]:
            self._waiting[1].set()
        await anyio.wait_all_tasks_blocked()


class SyncProbe:
    """health() as a plain def, like the built-in providers."""

    def __init__(self, ok: Any = True) -> None:
        self.ok = ok
        self.calls = 0

    def health(self) -> Any:
        self.calls += 1
        if isinstance(self.ok, BaseException):
            raise self.ok
        return self.ok


class SlowProbe:
    """An async health() that answers only when released (or is cancelled)."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self.cancelled = anyio.Event()

    async def health(self) -> bool:
        self.calls += 1
        self.entered.set()
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled.set()
            raise
        return True


def serve(instance: Any, key: str = "k", st: KeyState | None = None) -> tuple[KeyState, Binding]:
    """A key whose current instance is ``instance`` (a new key unless ``st`` is given)."""
    st = st or KeyState(Slot("adapter", key))
    cand = Candidate(domain="adapter", key=key, provider="p", factory="x:Y", source="test")
    binding = Binding(instance, cand, "p", 1)
    st.slot.bind(binding)
    return st, binding


Results = list[tuple[str, bool, str | None]]


@asynccontextmanager
async def scheduler(
    *, timeout: float = 30.0
) -> AsyncIterator[tuple[HealthChecks, ManualClock, Results]]:
    clock = ManualClock()
    results: Results = []

    def on_result(st: KeyState, ok: bool, err: str | None) -> None:
        results.append((st.slot.key, ok, err))

    async with anyio.create_task_group() as tg:
        checks = HealthChecks(
            task_group=lambda: tg,
            interval=lambda: INTERVAL,
            timeout=lambda: timeout,
            on_result=on_result,
            clock=clock,
        )
        yield checks, clock, results
        checks.close()


async def test_checks_come_every_interval_from_the_last_check() -> None:
    async with scheduler() as (checks, clock, results):
        inst = SyncProbe()
        st, b = serve(inst)
        checks.watch(st, b)
        await clock.advance(INTERVAL - 0.01)
        assert inst.calls == 0  # not due yet, and the scheduler has nothing left to do
        await clock.advance(0.01 + GRACE)
        assert inst.calls == 1 and results == [("k", True, None)]
        await clock.advance(INTERVAL - 0.01)
        assert inst.calls == 1
        await clock.advance(0.01 + GRACE)
        assert inst.calls == 2


async def test_a_slow_check_does_not_delay_the_others() -> None:
    async with scheduler() as (checks, clock, results):
        slow, fast = SlowProbe(), SyncProbe()
        checks.watch(*serve(slow, "slow"))
        checks.watch(*serve(fast, "fast"))
        await clock.advance(INTERVAL + GRACE)
        assert slow.entered.is_set() and fast.calls == 1
        for n in range(2, 5):  # the slow one still hangs; the fast one keeps its rhythm
            await clock.advance(INTERVAL + GRACE)
            assert fast.calls == n
        assert slow.calls == 1 and checks.in_flight == 1  # never a second one on top
        slow.release.set()
        await anyio.wait_all_tasks_blocked()
        assert ("slow", True, None) in results and checks.in_flight == 0
        await clock.advance(INTERVAL + GRACE)
        assert slow.calls == 2  # rescheduled an interval after its check ended


async def test_a_check_that_does_not_answer_in_time_is_unhealthy() -> None:
    async with scheduler(timeout=0.05) as (checks, clock, results):
        slow = SlowProbe()
        checks.watch(*serve(slow, "slow"))
        await clock.advance(INTERVAL + GRACE)
        with anyio.fail_after(30):  # the timeout runs on the real clock: wait for its outcome
            await slow.cancelled.wait()
        await anyio.wait_all_tasks_blocked()
        assert results == [("slow", False, "health() did not answer within 0.05s")]


async def test_outcomes_false_raise_and_sys_exit() -> None:
    async with scheduler() as (checks, clock, results):
        checks.watch(*serve(SyncProbe(False), "false"))
        checks.watch(*serve(SyncProbe(ValueError("boom")), "raises"))
        checks.watch(*serve(SyncProbe(SystemExit(0)), "exits"))
        await clock.advance(INTERVAL + GRACE)
    got = {key: err for key, ok, err in results if not ok}
    assert got["false"] == "health() returned false"
    assert got["raises"] == "health() raised ValueError: boom"
    assert "sys.exit(0)" in (got["exits"] or "") and "ComponentExit" in (got["exits"] or "")


async def test_stop_cancels_checks_in_flight_and_runs_no_more() -> None:
    async with scheduler() as (checks, clock, _):
        slow, fast = SlowProbe(), SyncProbe()
        checks.watch(*serve(slow, "slow"))
        checks.watch(*serve(fast, "fast"))
        await clock.advance(INTERVAL + GRACE)
        assert slow.entered.is_set() and fast.calls == 1
        checks.close()
        with anyio.fail_after(30):
            await slow.cancelled.wait()
        await clock.advance(10 * INTERVAL)
        assert fast.calls == 1 and slow.calls == 1 and len(checks) == 0


async def test_a_replaced_instance_is_no_longer_checked() -> None:
    async with scheduler() as (checks, clock, results):
        old = SlowProbe()
        st, b = serve(old)
        checks.watch(st, b)
        await clock.advance(INTERVAL + GRACE)
        assert old.entered.is_set()
        new = SyncProbe()
        st, b2 = serve(new, st=st)  # a swap: the new instance serves the key
        checks.watch(st, b2)
        with anyio.fail_after(30):
            await old.cancelled.wait()  # the old one's check in flight is cancelled
        await clock.advance(INTERVAL + GRACE)
        assert new.calls == 1 and old.calls == 1
        assert results == [("k", True, None)]  # only the new instance's outcome counted


async def test_an_instance_that_stopped_serving_is_dropped_when_due() -> None:
    async with scheduler() as (checks, clock, _):
        inst = SyncProbe()
        st, b = serve(inst)
        checks.watch(st, b)
        st.slot.bind(None)  # removed from the config: nothing serves the key
        await clock.advance(INTERVAL + GRACE)
        assert inst.calls == 0 and len(checks) == 0


async def test_cancelled_entries_do_not_pile_up() -> None:
    async with scheduler() as (checks, clock, _):
        st = KeyState(Slot("adapter", "k"))
        for _ in range(10_000):  # a key swapped back and forth within one interval
            st, b = serve(SyncProbe(), st=st)
            checks.watch(st, b)
        assert len(checks) == 1
        assert len(checks._heap) <= 2 * 64 + 2  # compacted as it went
        await clock.advance(INTERVAL + GRACE)
        assert len(checks) == 1


async def test_many_due_checks_yield_to_the_loop() -> None:
    """10,000 sync checks due at once run in slices: another task gets turns in between."""
    async with scheduler() as (checks, clock, _):
        probes = [SyncProbe() for _ in range(10_000)]
        for i, inst in enumerate(probes):
            checks.watch(*serve(inst, f"k{i}"))
        seen: list[int] = []

        async def other() -> None:
            while probes[-1].calls == 0:  # the last one due is the last one checked
                seen.append(sum(p.calls for p in probes))
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            await clock.advance(INTERVAL + GRACE)
        assert all(p.calls == 1 for p in probes)
        assert any(0 < n < len(probes) for n in seen)  # it ran while checks were half done


async def test_check_health_once() -> None:
    assert await check_health(object(), 1) == (True, None)
    assert await check_health(SyncProbe(False), 1) == (False, "health() returned false")
    outcome = probe(SyncProbe())
    assert outcome == (True, None)


async def test_forgetting_a_check_in_flight_keeps_the_count_exact() -> None:
    """A check in flight is out of the heap: forgetting it then leaves no dead entry behind to
    count (a phantom would make len() wrong, even negative, and compact the heap for nothing)."""
    async with scheduler() as (checks, clock, _):
        slow = SlowProbe()
        st, binding = serve(slow, "slow")
        checks.watch(st, binding)
        await clock.advance(INTERVAL + GRACE)
        assert slow.entered.is_set() and checks.in_flight == 1 and len(checks) == 0
        checks.forget(st)
        with anyio.fail_after(30):
            await slow.cancelled.wait()
        assert len(checks) == 0
        checks.watch(*serve(SyncProbe(), "other"))
        assert len(checks) == 1
