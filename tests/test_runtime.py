"""The runtime composed: activation, make-before-break swaps, rollback, leases, intent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import components as comp
import oneiric
from oneiric.errors import NotFound, Paused, Timeout, Unavailable
from oneiric.runtime.core import Runtime, RuntimeObserver, Timeouts, current_runtime
from oneiric.runtime.intent import IntentStore
from oneiric.runtime.registry import Candidate, Registry
from waiting import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

FAST = Timeouts(activation=2.0, stop=2.0, drain=5.0, health_interval=3600)


def cand(
    provider: str,
    *,
    key: str = "cache",
    factory: str = "components:Thing",
    priority: int = 0,
    **settings: Any,
) -> Candidate:
    settings.setdefault("name", provider)
    return Candidate(
        domain="adapter",
        key=key,
        provider=provider,
        factory=factory,
        priority=priority,
        settings=settings,
        source="test",
    )


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    store = IntentStore(tmp_path / "intent.json")
    store.load()
    async with Runtime(intent=store, timeouts=FAST) as runtime:
        yield runtime


def serving(rt: Runtime, key: str = "cache") -> str | None:
    """The provider bound to ``adapter/<key>`` right now."""
    cur = rt.state("adapter", key).slot.current
    return None if cur is None else cur.provider


async def setup(rt: Runtime, *cands: Candidate, select: str | None = None) -> None:
    sel = {"adapter": {"cache": select}} if select else {}
    keys = rt.apply_candidates({"test"}, cands, sel)
    await rt.reconcile_many(keys)


async def test_activates_winner_and_leases_it(rt: Runtime) -> None:
    await setup(rt, cand("a", priority=1), cand("b", priority=5))
    async with rt.use("adapter", "cache") as inst:
        assert inst.name == "b"
        assert rt.state("adapter", "cache").slot.in_flight == 1
    st = rt.state("adapter", "cache")
    assert st.lifecycle == "ready" and st.slot.in_flight == 0
    assert comp.CALLS["b.start"] == 1 and comp.CALLS["b.health"] == 1
    assert comp.CALLS["a.init"] == 0


async def test_public_use_reaches_current_runtime(rt: Runtime) -> None:
    await setup(rt, cand("a"))
    assert current_runtime() is rt
    async with oneiric.use("adapter", "cache") as inst:
        assert inst.name == "a"


async def test_current_runtime_belongs_to_its_event_loop(rt: Runtime) -> None:
    """Another event loop (here in a worker thread, which inherits this task's context) sees no
    runtime: there is no process-wide fallback to whichever runtime started last."""

    async def probe() -> str:
        try:
            current_runtime()
        except RuntimeError as exc:
            return str(exc)
        return "found a runtime of another event loop"

    text = await anyio.to_thread.run_sync(anyio.run, probe)
    assert "no oneiric runtime is running in this event loop" in text


async def test_current_runtime_is_not_reachable_from_a_worker_thread(rt: Runtime) -> None:
    """The runtime is not thread-safe: a worker thread (which inherits the task's context) gets
    a clear error, not the runtime."""

    def probe() -> str:
        try:
            current_runtime()
        except RuntimeError as exc:
            return str(exc)
        return "found the runtime from a worker thread"

    text = await anyio.to_thread.run_sync(probe)
    assert "no event loop is running in this thread" in text


async def test_current_runtime_reaches_tasks_started_before_it(tmp_path: Path) -> None:
    """Tasks of the loop see the runtime even when they were started before it (the daemon's
    own task group is), and nobody sees it once it has stopped."""
    store = IntentStore(tmp_path / "intent.json")
    store.load()
    entered, probed = anyio.Event(), anyio.Event()
    seen: list[Runtime] = []

    async def probe() -> None:
        await entered.wait()
        seen.append(current_runtime())
        probed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe)
        async with Runtime(intent=store, timeouts=FAST) as runtime:
            entered.set()
            await probed.wait()
    assert seen == [runtime]
    with pytest.raises(RuntimeError, match="no oneiric runtime"):
        current_runtime()


async def test_the_registry_it_is_given_is_the_one_it_serves_from(tmp_path: Path) -> None:
    store = IntentStore(tmp_path / "intent.json")
    store.load()
    registry = Registry()  # empty, so falsy: it must still be the one used
    async with Runtime(intent=store, registry=registry, timeouts=FAST) as runtime:
        assert runtime.registry is registry
        registry.register(cand("a"))
        assert await runtime.reconcile("adapter", "cache") == "activated"
        assert serving(runtime) == "a"


async def test_unknown_key_is_not_found(rt: Runtime) -> None:
    with pytest.raises(NotFound):
        rt.use("adapter", "nope")


async def test_swap_is_make_before_break_and_waits_for_leases(rt: Runtime) -> None:
    await setup(rt, cand("a"), cand("b"), select="a")
    async with rt.use("adapter", "cache") as old:
        assert old.name == "a"
        rt.selections = {"adapter": {"cache": "b"}}
        assert await rt.reconcile("adapter", "cache") == "swapped"
        # new leases go to the new instance while the old lease is still held
        async with rt.use("adapter", "cache") as new:
            assert new.name == "b"
        assert comp.CALLS["a.stop"] == 0, "old instance stopped while still leased"
        assert "a" in comp.LIVE
    # the old instance stops once its last lease ends
    await wait_until(lambda: "a" not in comp.LIVE, rt)
    st = rt.state("adapter", "cache")
    assert st.swaps == 1 and st.last_swap_ms is not None and comp.CALLS["a.stop"] == 1


@pytest.mark.parametrize(
    ("settings", "factory", "needle"),
    [
        ({}, "components_missing:Thing", "cannot import"),
        ({}, "components:NOT_CALLABLE", "cannot import"),
        ({"fail": "init"}, "components:Thing", "constructing"),
        ({"fail": "start"}, "components:Thing", "start() raised"),
        ({"fail": "health"}, "components:Thing", "health gate"),
        ({"fail": "health_raise"}, "components:Thing", "health gate raised"),
    ],
)
async def test_failed_swap_rolls_back_to_serving_instance(
    rt: Runtime, settings: dict[str, Any], factory: str, needle: str
) -> None:
    await setup(rt, cand("a"), cand("bad", factory=factory, **settings), select="a")
    rt.selections = {"adapter": {"cache": "bad"}}
    assert await rt.reconcile("adapter", "cache") == "failed"
    st = rt.state("adapter", "cache")
    assert st.failed_swaps == 1 and st.swaps == 0
    assert st.last_error is not None and needle in st.last_error
    assert st.lifecycle == "ready"
    async with rt.use("adapter", "cache") as inst:
        assert inst.name == "a"
    # whatever was built for the failed attempt was stopped, nothing leaks
    assert comp.LIVE == {"a"}
    # a failed target is not retried until forced (config change or reload)
    assert await rt.reconcile("adapter", "cache") == "skipped"
    assert await rt.reconcile("adapter", "cache", force=True) == "failed"
    assert st.failed_swaps == 2
    # explain says why the active provider differs from the winner
    assert "bad" in rt.explain("adapter", "cache").mismatch


@pytest.mark.parametrize("stage", ["start", "health"])
async def test_activation_timeout_rolls_back(tmp_path: Path, stage: str) -> None:
    store = IntentStore(tmp_path / "intent.json")
    store.load()
    async with Runtime(intent=store, timeouts=Timeouts(activation=0.05, stop=1)) as rt:
        await setup(rt, cand("a"), cand("slow", block=stage), select="a")
        rt.selections = {"adapter": {"cache": "slow"}}
        assert await rt.reconcile("adapter", "cache") == "failed"
        st = rt.state("adapter", "cache")
        assert "did not finish within" in (st.last_error or "")
        assert comp.LIVE == {"a"}
        async with rt.use("adapter", "cache") as inst:
            assert inst.name == "a"


class SyncUntilTheGate:
    """Constructed and started synchronously; only its health gate awaits (and hangs)."""

    started = 0
    stopped = 0

    def __init__(self, name: str = "") -> None:
        self.name = name

    def start(self) -> None:
        SyncUntilTheGate.started += 1

    async def health(self) -> bool:
        await anyio.Event().wait()
        return True

    def stop(self) -> None:
        SyncUntilTheGate.stopped += 1


async def test_the_activation_timeout_covers_an_await_after_synchronous_steps(
    tmp_path: Path,
) -> None:
    """The timeout's scope is entered only at the first step that awaits (sync steps cannot be
    interrupted anyway): a health gate that hangs after a sync start() still times out."""
    SyncUntilTheGate.started = SyncUntilTheGate.stopped = 0
    store = IntentStore(tmp_path / "intent.json")
    store.load()
    async with Runtime(intent=store, timeouts=Timeouts(activation=0.05, stop=1)) as rt:
        await setup(rt, cand("gate", factory="test_runtime:SyncUntilTheGate"))
        st = rt.state("adapter", "cache")
        assert st.lifecycle == "failed"
        assert "health gate did not finish within 0.05s" in (st.last_error or "")
        assert SyncUntilTheGate.started == SyncUntilTheGate.stopped == 1  # nothing leaks


async def test_initial_activation_failure_is_failed_lifecycle(rt: Runtime) -> None:
    await setup(rt, cand("bad", fail="start"))
    st = rt.state("adapter", "cache")
    assert st.lifecycle == "failed"
    with pytest.raises(Unavailable):
        async with rt.use("adapter", "cache", wait=False):
            pass
    health = rt.components()[0]
    assert health.lifecycle == "failed" and health.provider is None and health.winner == "bad"


async def test_concurrent_swaps_of_one_key_never_leak_or_double_stop(rt: Runtime) -> None:
    await setup(rt, *(cand(f"p{i}") for i in range(6)), select="p0")

    async def swap_to(name: str) -> None:
        rt.selections = {"adapter": {"cache": name}}
        await rt.reconcile("adapter", "cache")

    for _ in range(3):
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(swap_to, f"p{i}")
    await wait_until(lambda: len(comp.LIVE) <= 1, rt)
    assert not comp.ERRORS
    current = rt.state("adapter", "cache").slot.current
    assert current is not None and comp.LIVE == {current.provider}


async def test_request_reconcile_coalesces_bursts(rt: Runtime) -> None:
    await setup(
        rt, *(cand(f"p{i}", block="start" if i == 1 else "") for i in range(20)), select="p0"
    )
    rt.selections = {"adapter": {"cache": "p1"}}
    rt.request_reconcile("adapter", "cache")
    await comp.gate("p1.starting").wait()
    for i in range(2, 20):  # nineteen more saves while p1 is starting
        rt.selections = {"adapter": {"cache": f"p{i}"}}
        rt.request_reconcile("adapter", "cache")
    comp.gate("p1.start").set()
    await wait_until(lambda: serving(rt) == "p19", rt)
    # one swap in flight plus one queued: intermediate selections were never built
    assert sum(comp.CALLS[f"p{i}.init"] for i in range(2, 19)) == 0


async def test_drain_timeout_stops_old_instance_and_is_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = IntentStore(tmp_path / "intent.json")
    store.load()
    async with Runtime(intent=store, timeouts=Timeouts(drain=0.05, stop=1)) as rt:
        await setup(rt, cand("a"), cand("b"), select="a")
        async with rt.use("adapter", "cache"):
            rt.selections = {"adapter": {"cache": "b"}}
            await rt.reconcile("adapter", "cache")
            await wait_until(lambda: comp.CALLS["a.stop"] > 0, rt)
    assert "drain timeout" in caplog.text


async def test_sync_and_bare_components(rt: Runtime) -> None:
    await setup(
        rt,
        cand("s", factory="components:SyncThing"),
        cand("bare", key="other", factory="components:Bare"),
    )
    async with rt.use("adapter", "cache") as inst:
        assert inst.name == "s"
    async with rt.use("adapter", "other") as bare:
        assert bare.settings == {"name": "bare"}
    rt.apply_candidates({"test"}, [cand("s2", factory="components:SyncThing", healthy=False)])
    await rt.reconcile("adapter", "cache")
    assert "health gate" in (rt.state("adapter", "cache").last_error or "")


async def test_pause_closes_admission_and_resume_reopens(rt: Runtime) -> None:
    await setup(rt, cand("a"))
    await rt.pause("adapter", "cache", uid=0, pid=1, note="redis failover")
    with pytest.raises(Paused):
        async with rt.use("adapter", "cache", wait=False):
            pass
    got: list[str] = []

    async def waiter() -> None:
        async with rt.use("adapter", "cache") as inst:
            got.append(inst.name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()  # the waiter is parked at admission
        assert got == []
        h = rt.components()[0]
        assert h.admin == "paused" and h.note == "redis failover" and h.paused_by == "key"
        await rt.resume("adapter", "cache", uid=0, pid=1)
    assert got == ["a"]


async def test_lease_timeout_while_paused(rt: Runtime) -> None:
    await setup(rt, cand("a"))
    await rt.pause("adapter", None, uid=0, pid=1)
    with pytest.raises(Timeout):
        async with rt.use("adapter", "cache", timeout=0.01):
            pass


async def test_swap_while_paused_is_parked_and_applied_once_on_resume(rt: Runtime) -> None:
    await setup(rt, cand("a"), cand("b"), select="a")
    await rt.pause("adapter", "cache", uid=0, pid=1)
    rt.selections = {"adapter": {"cache": "b"}}
    assert await rt.reconcile("adapter", "cache") == "parked"
    assert rt.components()[0].parked_provider == "b"
    assert "parked" in (rt.explain("adapter", "cache").mismatch or "")
    assert comp.CALLS["b.init"] == 0
    await rt.resume("adapter", "cache", uid=0, pid=1)
    await wait_until(lambda: serving(rt) == "b", rt)
    assert comp.CALLS["b.init"] == 1
    assert rt.components()[0].parked_provider is None


async def test_drain_completes_exactly_when_last_lease_ends(rt: Runtime) -> None:
    await setup(rt, cand("a"))
    release = anyio.Event()
    holding = anyio.Event()

    async def holder() -> None:
        async with rt.use("adapter", "cache"):
            holding.set()
            await release.wait()

    progress: list[dict[str, int]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await holding.wait()
        keys = await rt.drain("adapter", None, uid=0, pid=1, note="maint")
        assert rt.components()[0].admin == "draining"
        done = anyio.Event()

        async def drainer() -> None:
            await rt.wait_idle(keys, progress=progress.append)
            done.set()

        tg.start_soon(drainer)
        await anyio.wait_all_tasks_blocked()  # the drainer is waiting on the lease
        assert not done.is_set()
        release.set()
        with anyio.fail_after(5):
            await done.wait()
    assert progress[0] == {"adapter/cache": 1} and progress[-1] == {}
    assert rt.components()[0].admin == "drained"


async def test_domain_intent_applies_to_keys_that_appear_later(rt: Runtime) -> None:
    await rt.pause("adapter", None, uid=0, pid=1, note="all adapters")
    await setup(rt, cand("late", key="later"))
    with pytest.raises(Paused):
        async with rt.use("adapter", "later", wait=False):
            pass
    assert rt.components()[0].paused_by == "domain"


async def test_override_beats_selection_and_clear_restores(rt: Runtime) -> None:
    await setup(rt, cand("a"), cand("b"), select="a")
    assert await rt.set_override("adapter", "cache", "b", uid=0, pid=1) == "swapped"
    assert rt.state("adapter", "cache").slot.current.provider == "b"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        await rt.set_override("adapter", "cache", "zzz", uid=0, pid=1)
    await rt.set_override("adapter", "cache", None, uid=0, pid=1)
    assert rt.state("adapter", "cache").slot.current.provider == "a"  # type: ignore[union-attr]


async def test_removed_candidate_falls_back_then_retires(rt: Runtime) -> None:
    await setup(rt, cand("a", priority=1), cand("b", priority=5))
    assert rt.state("adapter", "cache").slot.current.provider == "b"  # type: ignore[union-attr]
    keys = rt.apply_candidates({"test"}, [cand("a", priority=1)])
    await rt.reconcile_many(keys)
    assert rt.state("adapter", "cache").slot.current.provider == "a"  # type: ignore[union-attr]
    keys = rt.apply_candidates({"test"}, [])
    assert await rt.reconcile_many(keys) == {("adapter", "cache"): "removed"}

    # once the old instance has retired, the key leaves status altogether
    def retired() -> bool:
        left = rt.components()
        assert all(c.lifecycle == "inactive" for c in left)  # nothing else on the way out
        return not left

    await wait_until(retired, rt)
    assert "b" not in comp.LIVE


async def test_periodic_health_marks_degraded_and_recovers(tmp_path: Path) -> None:
    store = IntentStore(tmp_path / "intent.json")
    store.load()
    async with Runtime(intent=store, timeouts=Timeouts(health_interval=0.001)) as rt:
        await setup(rt, cand("a"))
        inst = rt.state("adapter", "cache").slot.current.instance  # type: ignore[union-attr]
        inst.fail = "health"
        await wait_until(lambda: rt.state("adapter", "cache").lifecycle == "degraded", rt)
        inst.fail = ""
        await wait_until(lambda: rt.state("adapter", "cache").lifecycle == "ready", rt)


async def test_shutdown_waits_for_leases_then_stops_everything(rt: Runtime) -> None:
    await setup(rt, cand("a"), cand("x", key="other"))
    release = anyio.Event()
    holding = anyio.Event()

    async def holder() -> None:
        async with rt.use("adapter", "cache"):
            holding.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await holding.wait()

        async def stopper() -> None:
            assert await rt.shutdown(5) == {}

        tg.start_soon(stopper)
        await anyio.wait_all_tasks_blocked()  # shutdown is waiting on the lease
        assert comp.CALLS["a.stop"] == 0 and rt.stopping
        release.set()
    assert comp.LIVE == set()
    # intent was not touched by the shutdown
    assert rt.intent.effective("adapter", "cache").state == "active"


async def test_observers_see_bindings_and_admission(rt: Runtime) -> None:
    seen: list[tuple[str, Any, Any]] = []

    class Obs(RuntimeObserver):
        async def bound(self, state: Any, new: Any, old: Any) -> None:
            seen.append(("bound", new and new.provider, old and old.provider))

        def admission(self, state: Any, admitting: bool) -> None:
            seen.append(("admission", admitting, None))

    rt.observers.append(Obs())
    await setup(rt, cand("a"), cand("b"), select="a")
    await rt.pause("adapter", "cache", uid=0, pid=1)
    await rt.resume(None, None, uid=0, pid=1)
    rt.selections = {"adapter": {"cache": "b"}}
    await rt.reconcile("adapter", "cache")
    assert seen == [
        ("bound", "a", None),
        ("admission", False, None),
        ("admission", True, None),
        ("bound", "b", "a"),
    ]


class Grumpy:
    """stop() misbehaves in the way named by ``how``; health() may hang."""

    def __init__(self, how: str = "", hang_health: bool = False) -> None:
        self.how, self.hang_health, self.probe = how, hang_health, anyio.Event()

    async def health(self) -> bool:
        if self.hang_health and self.probe.is_set():
            await anyio.Event().wait()
        return True

    async def stop(self) -> None:
        if self.how == "raise":
            raise RuntimeError("stop exploded")
        if self.how == "hang":
            await anyio.Event().wait()


@pytest.mark.parametrize(
    ("how", "needle"), [("raise", "stop() raised"), ("hang", "did not finish")]
)
async def test_misbehaving_stop_is_bounded_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str, needle: str
) -> None:
    store = IntentStore(tmp_path / "intent.json")
    store.load()
    async with Runtime(intent=store, timeouts=Timeouts(stop=0.05)) as rt:
        c = Candidate(
            domain="adapter",
            key="g",
            provider="g",
            factory="test_runtime:Grumpy",
            settings={"how": how},
            source="test",
        )
        await rt.reconcile_many(rt.apply_candidates({"test"}, [c]))
    assert needle in caplog.text


async def test_hanging_health_probe_degrades(tmp_path: Path) -> None:
    store = IntentStore(tmp_path / "intent.json")
    store.load()
    async with Runtime(
        intent=store, timeouts=Timeouts(health_interval=0.001, activation=0.05)
    ) as rt:
        c = Candidate(
            domain="adapter",
            key="g",
            provider="g",
            factory="test_runtime:Grumpy",
            settings={"hang_health": True},
            source="test",
        )
        await rt.reconcile_many(rt.apply_candidates({"test"}, [c]))
        rt.state("adapter", "g").slot.current.instance.probe.set()  # type: ignore[union-attr]
        await wait_until(lambda: rt.state("adapter", "g").lifecycle == "degraded", rt)
        assert "did not answer" in (rt.state("adapter", "g").last_error or "")


async def test_a_removed_key_keeps_no_health_check_nor_its_retired_instance(rt: Runtime) -> None:
    """Once a key's last candidate goes, so does its periodic check: the key's state stays
    ("inactive", for status) and must not hold the Check, whose binding holds the retired
    instance (with 20,000 keys removed by a reload, 20,000 instances kept for good). The
    scheduler's heap drops the cancelled entry lazily, within one health_interval."""
    await setup(rt, cand("a"))
    st = rt.state("adapter", "cache")
    assert st.slot.current is not None and st.health_check is not None
    await rt.reconcile_many(rt.apply_candidates({"test"}, [], {}))
    await wait_until(lambda: not st.slot.retiring, rt)
    assert st.lifecycle == "inactive" and comp.CALLS["a.stop"] == 1
    assert st.health_check is None
    assert len(rt._reconciler.checks) == 0


async def test_a_component_changing_its_settings_in_place_leaves_the_config_as_written(
    rt: Runtime,
) -> None:
    """The config's parsed settings outlive an instance (a swap back builds from the same
    entry), so what a component does to a list or table it was given stays with it."""
    a = cand("a", value={"tags": ["x"]})
    b = cand("b")
    await setup(rt, a, b, select="a")
    async with rt.use("adapter", "cache") as inst:
        inst.value["tags"].append("changed by the component")
        inst.value["extra"] = 1
    await setup(rt, a, b, select="b")
    assert serving(rt) == "b"
    await setup(rt, a, b, select="a")
    async with rt.use("adapter", "cache") as inst:
        assert inst.name == "a" and comp.CALLS["a.init"] == 2
        assert inst.value == {"tags": ["x"]}
    assert a.settings["value"] == {"tags": ["x"]}
