"""Workflow domain through the daemon and its control socket: the built-in DAG provider over
task keys — concurrency of independent nodes, failure stopping dependants, per-node report,
pause/drain of the workflow key and of its tasks, validation at config load."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import domain_components as dc
from harness import Harness, running_daemon
from oneiric.builtin.workflow import Workflow, parse_nodes
from oneiric.control.client import RemoteError

pytestmark = pytest.mark.anyio


def task(key: str) -> str:
    return f"""
[[component]]
domain = "task"
key = "{key}"
provider = "p"
factory = "domain_components:Task"
settings = {{ name = "{key}" }}
"""


def workflow(key: str, nodes: str) -> str:
    return f"""
[[component]]
domain = "workflow"
key = "{key}"
provider = "dag"
factory = "oneiric.builtin.workflow:Workflow"
settings.nodes = {nodes}
"""


HEAD = """
[daemon]
drain_timeout = "5s"
stop_timeout = "5s"
watch = false
"""

CONFIG = (
    HEAD
    + task("a")
    + task("b")
    + task("c")
    + workflow(
        "wf",
        """[
  { id = "n1", task = "a", payload = { gate = "g1" } },
  { id = "n2", task = "b", payload = { gate = "g2" } },
  { id = "n3", task = "c", after = ["n1", "n2"] },
]""",
    )
    + workflow(
        "fails",
        """[
  { id = "f1", task = "a", payload = { fail = "bad input" } },
  { id = "f2", task = "b", after = ["f1"] },
  { id = "f3", task = "c", after = ["f2"] },
  { id = "solo", task = "c" },
]""",
    )
    + workflow("quick", '[{ id = "only", task = "c" }]')
)


def status(h: Harness, key: str) -> Any:
    return h.rt.component_health(h.rt.state("workflow", key))


async def run(h: Harness, key: str, payload: Any = None, wait: bool = True) -> Any:
    return await h.call("run", domain="workflow", key=key, payload=payload, wait=wait)


async def test_independent_nodes_run_concurrently_and_dependants_after() -> None:
    async with running_daemon(CONFIG) as h:
        reply: dict[str, Any] = {}

        async def go() -> None:
            reply.update(await run(h, "wf"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(go)
            await dc.passed("g1.started")
            await dc.passed("g2.started")  # both in flight at once: concurrent
            assert dc.COUNTS["c.run"] == 0  # n3 waits for both
            assert status(h, "wf").in_flight == 1
            dc.gate("g1").set()
            dc.gate("g2").set()
        assert reply["ok"] is True and reply["duration_ms"] >= 0
        assert list(reply["nodes"]) == ["n1", "n2", "n3"]
        assert all(n["status"] == "ok" for n in reply["nodes"].values())
        assert reply["nodes"]["n3"]["result"] == {"by": "c", "payload": None}
        assert dc.LOG.index("c.run") > max(dc.LOG.index("a.run"), dc.LOG.index("b.run"))
        await h.wait_for(lambda: status(h, "wf").runs == 1)
        # every node was a task run (a lease on its task key)
        assert h.rt.component_health(h.rt.state("task", "a")).runs == 1


async def test_failure_stops_dependants_and_is_reported_per_node() -> None:
    async with running_daemon(CONFIG) as h:
        reply = await run(h, "fails")
        assert reply["ok"] is False
        nodes = reply["nodes"]
        assert nodes["f1"]["status"] == "failed"
        assert nodes["f1"]["error"] == "task/a failed: ValueError: bad input"
        assert nodes["f2"]["status"] == "skipped" and "f1 did not succeed" in nodes["f2"]["error"]
        assert nodes["f3"]["status"] == "skipped" and "f2" in nodes["f3"]["error"]
        assert nodes["solo"]["status"] == "ok"  # the independent branch went on
        assert dc.COUNTS["b.run"] == 0
        await h.wait_for(lambda: status(h, "fails").failed_runs == 1)
        assert "f1 failed" in status(h, "fails").last_run_error


async def test_paused_workflow_refuses_and_drain_waits_for_the_run() -> None:
    async with running_daemon(CONFIG) as h:
        await h.call("pause", domain="workflow", key="quick")
        with pytest.raises(RemoteError) as err:
            await run(h, "quick")
        assert err.value.code == "unavailable" and "workflow/quick is paused" in err.value.message
        await h.call("resume", domain="workflow", key="quick")
        accepted = await run(h, "wf", wait=False)
        assert accepted["accepted"] is True
        await dc.passed("g1.started")
        drained: dict[str, Any] = {}

        async def drain() -> None:
            drained.update(await h.call("drain", domain="workflow", key="wf", timeout=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            await h.wait_for(lambda: status(h, "wf").admin == "draining")
            assert not drained
            dc.gate("g1").set()
            dc.gate("g2").set()
        assert drained["drained"] is True
        assert status(h, "wf").runs == 1


async def test_a_paused_task_fails_its_node() -> None:
    async with running_daemon(CONFIG) as h:
        await h.call("pause", domain="task", key="c")
        reply = await run(h, "quick")
        assert reply["ok"] is False
        assert reply["nodes"]["only"]["status"] == "failed"
        assert "task/c is paused" in reply["nodes"]["only"]["error"]


async def test_run_payload_overrides_node_payloads() -> None:
    async with running_daemon(CONFIG) as h:
        reply = await run(h, "quick", payload={"only": {"x": 1}})
        assert reply["nodes"]["only"]["result"] == {"by": "c", "payload": {"x": 1}}
        with pytest.raises(RemoteError) as err:
            await run(h, "quick", payload={"nope": 1})
        assert err.value.code == "bad_request" and "keyed by node id" in err.value.message


async def test_cycles_and_unknown_tasks_are_rejected_at_config_load() -> None:
    async with running_daemon(CONFIG) as h:
        cyc = workflow(
            "loop",
            '[{ id = "x", task = "a", after = ["y"] }, { id = "y", task = "b", after = ["x"] }]',
        )
        h.write_config(CONFIG + cyc)
        with pytest.raises(RemoteError) as err:
            await h.call("reload")
        assert "'x', 'y' form a cycle" in err.value.message
        h.write_config(CONFIG + workflow("ghost", '[{ id = "z", task = "missing" }]'))
        with pytest.raises(RemoteError) as err:
            await h.call("reload")
        assert "node 'z': no task component has key 'missing'" in err.value.message
        # the provider checks task keys itself at start() (manifests, direct use)
        with pytest.raises(ValueError, match="node 'z': no task component has key 'missing'"):
            Workflow([{"id": "z", "task": "missing"}]).start()
        Workflow([{"id": "z", "task": "a"}]).start()


def test_parse_nodes_names_the_offending_node() -> None:
    with pytest.raises(ValueError, match="form or depend on a cycle"):
        parse_nodes(
            [
                {"id": "a", "task": "t", "after": ["c"]},
                {"id": "b", "task": "t", "after": ["a"]},
                {"id": "c", "task": "t", "after": ["b"]},
            ]
        )
    with pytest.raises(ValueError, match="duplicate node id 'a'"):
        parse_nodes([{"id": "a", "task": "t"}, {"id": "a", "task": "u"}])
    with pytest.raises(ValueError, match="node 'b': 'after' names unknown node id 'zz'"):
        parse_nodes([{"id": "b", "task": "t", "after": ["zz"]}])
    with pytest.raises(ValueError, match="at least one node"):
        parse_nodes([])
    with pytest.raises(ValueError, match="invalid workflow nodes"):
        parse_nodes([{"id": "a"}])
    nodes = parse_nodes(
        [{"id": "a", "task": "t"}, {"id": "b", "task": "t", "after": ["a"], "payload": 1}]
    )
    assert [n.id for n in nodes] == ["a", "b"] and nodes[1].payload == 1
