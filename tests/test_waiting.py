"""The tests' one wait helper: woken by each kind of change source, and a hang becomes a failure."""

from __future__ import annotations

import ast
from pathlib import Path

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


CLOCK_NAMES = {"monotonic", "monotonic_ns", "time", "time_ns", "perf_counter", "perf_counter_ns"}


def house_style_offences(source: str, name: str) -> list[str]:
    """What tests/README.md rules out, found in the syntax tree of one test module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0] if node.args else None
        if called == "sleep" and isinstance(first, ast.Constant) and first.value == 0:
            found.append(
                f"{name}:{node.lineno}: a sleep(0) spin; use waiting.wait_until or "
                "anyio.wait_all_tasks_blocked()"
            )
        elif (
            called == "sleep"
            and isinstance(func, ast.Attribute)
            and (isinstance(func.value, ast.Name) and func.value.id == "time")
        ):
            found.append(f"{name}:{node.lineno}: time.sleep() waits on time; wait on an event")
        elif (
            called == "setattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in CLOCK_NAMES
        ) or (  # setattr("time.monotonic", ...), mock.patch("time.time")
            called in ("setattr", "patch")
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and first.value.rpartition(".")[2] in CLOCK_NAMES
        ):
            found.append(
                f"{name}:{node.lineno}: patches the clock for the whole process; "
                "pass clock=clocks.FakeClock() to the object instead"
            )
    return found


def test_house_style_guard_sees_each_offence() -> None:
    bad = """
async def t(monkeypatch):
    await anyio.sleep(0)
    time.sleep(0.1)
    monkeypatch.setattr(cache_mod.time, "monotonic", lambda: 5)
    await anyio.sleep(1)  # a component simulating work may sleep
    monkeypatch.setattr("time.time", lambda: 5)
    with mock.patch("oneiric.runtime.core.time.monotonic"):
        pass
"""
    lines = sorted(int(o.split(":")[1]) for o in house_style_offences(bad, "x.py"))
    assert lines == [3, 4, 5, 7, 8]


def test_no_test_spins_sleeps_or_patches_the_clock() -> None:
    here = Path(__file__).parent
    offences = [
        o
        for path in sorted(here.glob("*.py"))
        for o in house_style_offences(path.read_text(), path.name)
    ]
    assert not offences, "\n".join(offences)
