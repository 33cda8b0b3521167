"""Targeted wake-ups: a change to one key wakes what waits on that key, and nothing that waits
on another. Counted, not timed: every wait here ends on an event, and "did not wake" is checked
once every task has settled (``anyio.wait_all_tasks_blocked``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from oneiric.domains._base import set_extras, wait_until
from oneiric.runtime import idle, status
from oneiric.runtime.core import Runtime, Timeouts
from oneiric.runtime.intent import IntentStore
from oneiric.runtime.registry import Candidate

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

FAST = Timeouts(activation=2.0, stop=2.0, drain=5.0, health_interval=3600)
WHO: dict[str, Any] = {"uid": 0, "pid": 0}


def cand(key: str, provider: str, priority: int = 0) -> Candidate:
    return Candidate(
        domain="adapter",
        key=key,
        provider=provider,
        factory="components:Thing",
        priority=priority,
        settings={"name": provider},
        source="test",
    )


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    store = IntentStore(tmp_path / "intent.json")
    store.load()
    async with Runtime(intent=store, timeouts=FAST) as runtime:
        keys = runtime.apply_candidates(
            {"test"}, [cand(k, p, prio) for k in "ab" for p, prio in (("x", 1), ("y", 0))]
        )
        await runtime.reconcile_many(keys)
        yield runtime


async def change_b_every_way(rt: Runtime) -> None:
    """Every kind of change to adapter/b: intent, admission, a swap, a status counter."""
    await rt.pause("adapter", "b", **WHO)
    await rt.resume("adapter", "b", **WHO)
    keys = rt.apply_candidates(
        {"test"},
        [cand(k, p, prio) for k in "ab" for p, prio in (("x", 1), ("y", 0))],
        {"adapter": {"b": "y"}},
    )
    await rt.reconcile_many(keys)
    assert rt.state("adapter", "b").slot.current.provider == "y"  # type: ignore[union-attr]
    set_extras(rt, rt.state("adapter", "b"), runs=3)
    await anyio.wait_all_tasks_blocked()  # whatever was woken has run by now


async def test_a_change_to_one_key_does_not_wake_a_waiter_of_another(rt: Runtime) -> None:
    a, b = rt.state("adapter", "a"), rt.state("adapter", "b")
    a_seen, b_seen = a.version, b.version
    woken: list[str] = []

    async def wait_on(st: Any, seen: int, name: str) -> None:
        await st.wait_changed(seen)
        woken.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_on, a, a_seen, "a")
        await anyio.wait_all_tasks_blocked()
        await change_b_every_way(rt)
        assert woken == [] and a.version == a_seen  # four changes to b, none to a
        assert b.version > b_seen
        set_extras(rt, a, runs=1)  # ... and a change to a wakes it
    assert woken == ["a"]


async def test_a_predicate_wait_on_one_key_is_not_evaluated_for_another(rt: Runtime) -> None:
    """What a service runner does: wait_until(st, predicate) re-checks only on its key."""
    a = rt.state("adapter", "a")
    checks = 0

    def predicate() -> bool:
        nonlocal checks
        checks += 1
        return bool(a.extras.get("go"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_until, a, predicate)
        await anyio.wait_all_tasks_blocked()
        assert checks == 1  # checked once on entry, then parked
        await change_b_every_way(rt)
        assert checks == 1
        set_extras(rt, a, go=True)
    assert checks == 2


async def test_a_drain_wait_wakes_only_for_its_own_keys(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wait_idle looks at the in-flight map once per wake-up; changes elsewhere cause none."""
    looks = 0
    real = idle.in_flight

    def counting(*args: Any) -> dict[str, int]:
        nonlocal looks
        looks += 1
        return real(*args)

    monkeypatch.setattr(idle, "in_flight", counting)
    lease = rt.use("adapter", "a")
    await lease.__aenter__()
    async with anyio.create_task_group() as tg:
        tg.start_soon(rt.wait_idle, [rt.state("adapter", "a").ck])
        await anyio.wait_all_tasks_blocked()
        assert looks == 1
        await change_b_every_way(rt)
        assert looks == 1
        await lease.__aexit__(None, None, None)  # a goes idle: the wait looks and ends
    assert looks == 2


async def test_status_rows_are_built_once_per_change_of_their_key(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    real = status.component_health

    def counting(st: Any, **kw: Any) -> Any:
        built.append(st.slot.key)
        return real(st, **kw)

    monkeypatch.setattr(status, "component_health", counting)
    first = rt.components_json()
    assert sorted(built) == ["a", "b"]
    assert rt.components_json() == first and len(built) == 2  # served from the cache
    set_extras(rt, rt.state("adapter", "b"), runs=5)
    rows = rt.components()
    assert built[2:] == ["b"]  # only the changed key was built again
    assert [r.runs for r in rows] == [0, 5]
    async with rt.use("adapter", "a"):  # a lease moves in_flight without a touch...
        assert rt.components()[0].in_flight == 1  # ...and the row follows it
    assert rt.components()[0].in_flight == 0
