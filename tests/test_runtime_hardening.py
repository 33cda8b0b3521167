"""Regressions from review: cancellation, shutdown races, parked retries, failed overrides."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import components as comp
from oneiric.runtime.core import Runtime, Timeouts
from oneiric.runtime.intent import IntentStore
from oneiric.runtime.registry import Candidate
from waiting import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]


def cand(provider: str, factory: str = "components:Thing", **settings: object) -> Candidate:
    settings.setdefault("name", provider)
    return Candidate(
        domain="adapter",
        key="cache",
        provider=provider,
        factory=factory,
        settings=settings,
        source="test",
    )


def serving(rt: Runtime) -> str | None:
    cur = rt.state("adapter", "cache").slot.current
    return None if cur is None else cur.provider


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    store = IntentStore(tmp_path / "intent.json")
    store.load()
    async with Runtime(intent=store, timeouts=Timeouts(activation=30, stop=5)) as runtime:
        runtime.selections = {"adapter": {"cache": "a"}}
        keys = runtime.apply_candidates({"test"}, [cand("a"), cand("b", block="start")])
        await runtime.reconcile_many(keys)
        yield runtime


async def test_swap_completes_when_its_requester_is_cancelled(rt: Runtime) -> None:
    scope = anyio.CancelScope()

    async def requester() -> None:
        with scope:
            await rt.set_override("adapter", "cache", "b", uid=0, pid=1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(requester)
        await comp.gate("b.starting").wait()
        scope.cancel()  # the operator's client hung up mid-activation
        comp.gate("b.start").set()
    # the swap was not half-done: b serves, a retires, nothing leaks
    await wait_until(lambda: "a" not in comp.LIVE, rt)
    assert rt.state("adapter", "cache").slot.current.provider == "b"  # type: ignore[union-attr]
    assert comp.LIVE == {"b"}


async def test_shutdown_waits_for_a_swap_in_progress_and_binds_nothing(rt: Runtime) -> None:
    rt.selections = {"adapter": {"cache": "b"}}
    rt.request_reconcile("adapter", "cache")
    await comp.gate("b.starting").wait()
    async with anyio.create_task_group() as tg:
        tg.start_soon(rt.shutdown, 5)
        await anyio.wait_all_tasks_blocked()  # shutdown has begun and waits for the swap
        comp.gate("b.start").set()
    assert comp.LIVE == set(), "an instance started during shutdown was left running"
    assert comp.CALLS["b.stop"] == 1


async def test_parked_retry_of_a_failed_swap_is_applied_on_resume(rt: Runtime) -> None:
    rt.apply_candidates({"test"}, [cand("a"), cand("f", factory="components:Flaky")])
    comp.FAIL_START.add("f")
    assert await rt.set_override("adapter", "cache", "f", uid=0, pid=1) == "failed"
    await rt.pause("adapter", "cache", uid=0, pid=1)
    comp.FAIL_START.clear()  # the backend is fixed; the operator asks again while paused
    assert await rt.set_override("adapter", "cache", "f", uid=0, pid=1) == "parked"
    await rt.resume("adapter", "cache", uid=0, pid=1)
    await wait_until(lambda: serving(rt) == "f", rt)


async def test_failed_operator_swap_does_not_stay_durable(rt: Runtime, tmp_path: Path) -> None:
    rt.apply_candidates({"test"}, [cand("a"), cand("f", factory="components:Flaky")])
    comp.FAIL_START.add("f")
    assert await rt.set_override("adapter", "cache", "f", uid=0, pid=1) == "failed"
    assert rt.intent.override("adapter", "cache") is None
    again = IntentStore(tmp_path / "intent.json")
    again.load()  # what a restart would read
    assert again.override("adapter", "cache") is None
