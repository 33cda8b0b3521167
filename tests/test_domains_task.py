"""Task domain through the daemon and its control socket: on-demand runs (waiting and not),
failures, the concurrency limit, pause/drain/resume, schedules and swaps."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

import domain_components as dc
from harness import Harness, running_daemon
from oneiric.control.client import RemoteError

pytestmark = pytest.mark.anyio


def task(key: str, provider: str, cls: str = "Task", extra: str = "") -> str:
    return f"""
[[component]]
domain = "task"
key = "{key}"
provider = "{provider}"
factory = "domain_components:{cls}"
{extra}
"""


CONFIG = (
    """
[daemon]
drain_timeout = "5s"
stop_timeout = "5s"
watch = false
"""
    + task("t", "a", extra='concurrency = 2\nsettings = { name = "a" }')
    + task("t", "b", extra='concurrency = 2\nsettings = { name = "b" }')
    + task("sched", "s", extra='every = "1h"\nconcurrency = 1\nsettings = { name = "s" }')
    + task("sync", "x", cls="SyncTask")
    + task("odd", "x", cls="OddResult")
    + task("norun", "x", cls="NoRun")
    + task("caller", "x", cls="Caller")
    + '\n[selections.task]\nt = "a"\n'
)


def status(h: Harness, key: str = "t") -> Any:
    return h.rt.component_health(h.rt.state("task", key))


async def run(h: Harness, key: str = "t", payload: Any = None, wait: bool = True) -> Any:
    return await h.call("run", domain="task", key=key, payload=payload, wait=wait)


async def test_run_returns_the_result_and_counts_it() -> None:
    async with running_daemon(CONFIG) as h:
        reply = await run(h, payload={"x": 1})
        assert reply["result"] == {"by": "a", "payload": {"x": 1}}
        assert reply["duration_ms"] >= 0 and reply["run_id"].startswith("task/t#")
        await h.wait_for(lambda: status(h).runs == 1)
        assert status(h).last_run_at is not None and status(h).in_flight == 0


async def test_run_ids_count_per_key_from_one() -> None:
    async with running_daemon(CONFIG) as h:
        assert (await run(h, key="sync"))["run_id"] == "task/sync#1"
        assert (await run(h))["run_id"] == "task/t#1"
        assert (await run(h))["run_id"] == "task/t#2"
        assert (await run(h, key="sync"))["run_id"] == "task/sync#2"


async def test_failure_is_an_error_naming_it() -> None:
    async with running_daemon(CONFIG) as h:
        with pytest.raises(RemoteError) as err:
            await run(h, payload={"fail": "disk full"})
        assert err.value.code == "conflict"
        assert err.value.message == "task/t failed: ValueError: disk full"
        assert err.value.detail["error_type"] == "ValueError"
        snap = (await h.call("status", domain="task", key="t"))["components"][0]
        assert snap["runs"] == 1 and snap["failed_runs"] == 1
        assert "disk full" in snap["last_run_error"]


async def test_no_wait_returns_a_run_id_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="oneiric.audit")
    async with running_daemon(CONFIG) as h:
        reply = await run(h, payload={"gate": "g"}, wait=False)
        assert reply["accepted"] is True and reply["run_id"].startswith("task/t#")
        await dc.passed("g.started")
        assert status(h).in_flight == 1
        # audited as accepted, once: the run has not finished, so it is not "ok"
        audit = [r.getMessage() for r in caplog.records if r.name == "oneiric.audit"]
        assert [line.rsplit(" ", 1)[-1] for line in audit] == ["outcome=accepted"]
        assert "op=run target=task/t" in audit[0]
        dc.gate("g").set()
        await h.wait_for(lambda: status(h).runs == 1 and status(h).in_flight == 0)


async def test_concurrency_limit_answers_busy() -> None:
    async with running_daemon(CONFIG) as h:
        await run(h, payload={"gate": "g1"}, wait=False)
        await run(h, payload={"gate": "g2"}, wait=False)
        await dc.passed("g1.started")
        await dc.passed("g2.started")
        with pytest.raises(RemoteError) as err:
            await run(h)
        assert err.value.code == "unavailable"
        assert "task/t is busy: 2 run(s) in progress, concurrency limit 2" in err.value.message
        dc.gate("g1").set()
        await h.wait_for(lambda: status(h).in_flight == 1)
        assert (await run(h))["result"]["by"] == "a"
        dc.gate("g2").set()


async def test_paused_key_refuses_runs_and_resume_accepts_them() -> None:
    async with running_daemon(CONFIG) as h:
        await h.call("pause", domain="task", key="t")
        with pytest.raises(RemoteError) as err:
            await run(h)
        assert err.value.code == "unavailable"
        assert "task/t is paused" in err.value.message
        assert "oneiricctl resume task t" in err.value.message
        await h.call("resume", domain="task", key="t")
        assert (await run(h))["result"]["by"] == "a"


async def test_drain_waits_for_the_run_in_flight() -> None:
    async with running_daemon(CONFIG) as h:
        await run(h, payload={"gate": "g"}, wait=False)
        await dc.passed("g.started")
        drained: dict[str, Any] = {}

        async def drain() -> None:
            drained.update(await h.call("drain", domain="task", timeout=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            await h.wait_for(lambda: h.rt.admin_state(h.rt.state("task", "t")) == "draining")
            with pytest.raises(RemoteError) as err:
                await run(h)
            assert "task/t is draining" in err.value.message
            assert not drained
            dc.gate("g").set()
        assert drained["drained"] is True
        assert "task/t" in drained["affected"]
        assert status(h).runs == 1  # the run in flight completed
        await h.call("resume", domain="task")
        assert (await run(h))["result"]["by"] == "a"


async def test_schedule_skips_while_paused_and_never_catches_up() -> None:
    async with running_daemon(CONFIG) as h:
        tasks = h.daemon.domains.tasks
        assert status(h, "sched").next_run_at is not None
        assert await tasks.tick("sched") is True
        await h.wait_for(lambda: status(h, "sched").runs == 1)
        await h.call("pause", domain="task", key="sched")
        for _ in range(3):
            assert await tasks.tick("sched") is False
        assert status(h, "sched").skipped_runs == 3
        await h.call("resume", domain="task", key="sched")
        assert await tasks.tick("sched") is True
        await h.wait_for(lambda: status(h, "sched").in_flight == 0)
        assert status(h, "sched").runs == 2  # one run, not the three that were skipped
        assert dc.COUNTS["s.run"] == 2


async def test_schedule_skips_a_tick_while_the_previous_run_is_busy() -> None:
    async with running_daemon(CONFIG) as h:
        await run(h, "sched", payload={"gate": "g"}, wait=False)
        await dc.passed("g.started")
        assert await h.daemon.domains.tasks.tick("sched") is False
        assert status(h, "sched").skipped_runs == 1
        dc.gate("g").set()


async def test_every_runs_the_task_on_its_own() -> None:
    cfg = CONFIG.replace('every = "1h"', 'every = "20ms"')
    async with running_daemon(cfg) as h:
        await h.wait_for(lambda: status(h, "sched").runs >= 2)


async def test_swap_keeps_the_run_in_flight_on_the_old_instance() -> None:
    async with running_daemon(CONFIG) as h:
        await run(h, payload={"gate": "g"}, wait=False)
        await dc.passed("g.started")
        await h.call("swap", domain="task", key="t", provider="b")
        assert (await run(h))["result"]["by"] == "b"
        assert "a.stop" not in dc.LOG  # still pinned by the run in flight
        dc.gate("g").set()
        await h.wait_for(lambda: "a.stop" in dc.LOG)
        assert status(h).runs == 2


async def test_errors_for_unknown_keys_and_unrunnable_providers() -> None:
    async with running_daemon(CONFIG) as h:
        with pytest.raises(RemoteError) as err:
            await run(h, "nope")
        assert err.value.code == "not_found"
        with pytest.raises(RemoteError) as err:
            await run(h, "norun")
        assert err.value.code == "bad_request" and "no run(payload) method" in err.value.message


async def test_sync_runs_and_odd_results() -> None:
    async with running_daemon(CONFIG) as h:
        assert (await run(h, "sync", payload=[1]))["result"] == {"sync": True, "payload": [1]}
        assert (await run(h, "odd"))["result"].startswith("<object object at")


async def test_run_task_from_a_component_waits_for_a_free_slot() -> None:
    async with running_daemon(CONFIG) as h:
        await run(h, payload={"gate": "g1"}, wait=False)
        await run(h, payload={"gate": "g2"}, wait=False)
        await dc.passed("g2.started")
        await dc.passed("g1.started")
        reply: dict[str, Any] = {}

        async def call() -> None:
            reply.update(await run(h, "caller", payload={"task": "t", "payload": 7}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await h.wait_for(lambda: status(h, "caller").in_flight == 1)
            assert dc.COUNTS["a.run"] == 2  # the caller waits: t is at its limit
            dc.gate("g1").set()
        assert reply["result"] == {"by": "a", "payload": 7}
        dc.gate("g2").set()


async def test_run_task_of_a_paused_key_fails_fast() -> None:
    async with running_daemon(CONFIG) as h:
        await h.call("pause", domain="task", key="t")
        with pytest.raises(RemoteError) as err:
            await run(h, "caller", payload={"task": "t"})
        assert err.value.code == "unavailable" and "task/t is paused" in err.value.message


async def test_stopping_daemon_refuses_new_runs() -> None:
    async with running_daemon(CONFIG) as h:
        await run(h, payload={"gate": "g"}, wait=False)
        await dc.passed("g.started")
        h.rt.stopping = True
        h.rt._apply_admissions()
        with pytest.raises(RemoteError) as err:
            await run(h)
        assert "oneiricd is stopping" in err.value.message
        dc.gate("g").set()


async def test_a_scheduled_run_never_overlaps_the_previous_one() -> None:
    dc.reset()
    config = """
[daemon]
watch = false
stop_timeout = "1s"
[[component]]
domain = "task"
key = "slow"
provider = "t"
factory = "domain_components:Task"
every = "10ms"
settings = { name = "t" }
"""
    # the scheduled payload is None: make the task block by patching its run for this test
    async with running_daemon(config) as h:
        st = h.rt.state("task", "slow")
        inst = st.slot.current.instance  # type: ignore[union-attr]
        release = anyio.Event()

        async def blocking_run(payload: object = None) -> None:
            dc.COUNTS["t.run"] += 1
            await release.wait()

        inst.run = blocking_run
        await h.wait_for(lambda: st.extras.get("skipped_runs", 0) >= 3)
        assert dc.COUNTS["t.run"] == 1 and st.slot.in_flight == 1
        release.set()
