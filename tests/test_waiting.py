"""The tests' one wait helper: woken by each kind of change source, and a hang becomes a failure."""

from __future__ import annotations

import anyio
import anyio.to_thread
import pytest

from clocks import FakeClock
from oneiric._changes import ChangeCounter
from waiting import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]


async def test_follows_a_change_counter() -> None:
    counter = ChangeCounter()
    seen: list[int] = []

    async def bump_three_times() -> None:
        for _ in range(3):
            await anyio.wait_all_tasks_blocked()
            counter.bump()

    def reached_three() -> bool:
        seen.append(counter.version)
        return counter.version == 3

    async with anyio.create_task_group() as tg:
        tg.start_soon(bump_three_times)
        await wait_until(reached_three, counter)
    assert seen == [0, 1, 2, 3]  # looked once at the start and once per change, no spinning


async def test_follows_a_pulse() -> None:
    pulses = [anyio.Event()]
    count = [0]

    async def next_pulse() -> None:
        await pulses[-1].wait()

    async def pulse_twice() -> None:
        for _ in range(2):
            await anyio.wait_all_tasks_blocked()
            count[0] += 1
            pulses.append(anyio.Event())
            pulses[-2].set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(pulse_twice)
        await wait_until(lambda: count[0] == 2, next_pulse)


async def test_without_a_source_it_waits_for_the_other_tasks_to_settle() -> None:
    done: list[str] = []

    async def worker() -> None:
        await anyio.to_thread.run_sync(done.append, "thread")
        done.append("task")

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        await wait_until(lambda: done == ["thread", "task"])


@pytest.mark.parametrize("source", ["counter", "pulse", "none"])
async def test_a_condition_that_never_holds_fails_instead_of_hanging(source: str) -> None:
    counter = ChangeCounter()
    never = anyio.Event()
    changes = {"counter": counter, "pulse": never.wait, "none": None}[source]
    with pytest.raises(TimeoutError):
        await wait_until(lambda: False, changes, timeout=0.05)


def test_fake_clock_moves_only_forward_and_only_when_told() -> None:
    clock = FakeClock(10.0)
    assert clock() == clock() == 10.0
    clock.advance(2.5)
    assert clock() == 12.5
    with pytest.raises(AssertionError):
        clock.advance(-1)
