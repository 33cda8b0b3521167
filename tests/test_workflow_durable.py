"""Durable workflows (SPEC §10): node-level retry, a checkpoint in the state dir after each
node, ``runs``, resume without rerunning completed nodes — in-process over the socket, and
across a SIGKILL of a real oneiricd process — and pruning of finished runs' records."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

import domain_components as dc
from harness import make_dir, running_daemon
from oneiric.config import load_config
from oneiric.control.client import RemoteError
from oneiric.errors import ConfigError
from test_daemon_process import ONEIRICCTL, spawn

HEAD = """
[daemon]
drain_timeout = "5s"
stop_timeout = "5s"
watch = false
"""


def task(key: str, cls: str = "Task", settings: str = "") -> str:
    return f"""
[[component]]
domain = "task"
key = "{key}"
provider = "p"
factory = "domain_components:{cls}"
settings = {{ name = "{key}"{settings} }}
"""


def workflow(key: str, nodes: str, extra: str = "") -> str:
    return f"""
[[component]]
domain = "workflow"
key = "{key}"
provider = "dag"
factory = "oneiric.builtin.workflow:Workflow"
settings.nodes = {nodes}
{extra}"""


def test_node_retry_errors_name_the_node(tmp_path: Path) -> None:
    text = task("a") + workflow("wf", '[{ id = "n", task = "a", retry = { attempts = -1 } }]')
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.toml")
    assert info.value.path == "component[1].settings.nodes[0].retry.attempts"
    assert "expected an integer >= 1" in info.value.detail


CONFIG = (
    HEAD
    + task("prep")
    + task("flaky", "FlakyTask", ", fails = 2")
    + task("broken", "FlakyTask")
    + task("after")
    + workflow(
        "wf",
        """[
  { id = "prep", task = "prep" },
  { id = "flaky", task = "flaky", after = ["prep"], retry = { attempts = 3, backoff = "1ms" } },
  { id = "broken", task = "broken", after = ["flaky"] },
  { id = "after", task = "after", after = ["broken"] },
]""",
    )
)


@pytest.mark.anyio
async def test_retry_checkpoint_and_resume_of_a_failed_run() -> None:
    dc.FlakyTask.BROKEN.add("broken")
    async with running_daemon(CONFIG, directory=make_dir()) as h:
        report = await h.call("run", domain="workflow", key="wf")
        assert report["ok"] is False
        nodes = report["nodes"]
        assert nodes["flaky"]["status"] == "ok" and nodes["flaky"]["attempts"] == 3
        assert nodes["broken"]["status"] == "failed" and nodes["after"]["status"] == "skipped"
        run_id = report["run_id"]
        record = json.loads((h.state_dir / "workflows" / f"{run_id}.json").read_bytes())
        assert record["status"] == "failed"
        assert {n: s["status"] for n, s in record["nodes"].items()} == {
            "prep": "ok",
            "flaky": "ok",
            "broken": "failed",
            "after": "skipped",
        }
        [listed] = (await h.call("runs"))["runs"]
        assert listed["run_id"] == run_id and listed["status"] == "failed"
        assert listed["nodes"]["flaky"] == {"status": "ok", "attempts": 3, "error": None}
        # fixed: the resumed run reruns only what did not succeed
        dc.FlakyTask.BROKEN.clear()
        runs_before = dict(dc.COUNTS)
        report = await h.call("run", domain="workflow", key="wf", resume=run_id)
        assert report["ok"] is True and report["run_id"] == run_id
        assert report["nodes"]["prep"]["resumed"] is True
        assert report["nodes"]["flaky"]["resumed"] is True
        assert dc.COUNTS["prep.run"] == runs_before["prep.run"] == 1
        assert dc.COUNTS["flaky.run"] == runs_before["flaky.run"] == 3
        assert dc.COUNTS["broken.run"] == 2 and dc.COUNTS["after.run"] == 1
        [listed] = (await h.call("runs", key="wf"))["runs"]
        assert listed["status"] == "ok" and listed["resumes"] == 1
        # a finished run cannot be resumed; a task run cannot be resumed at all
        with pytest.raises(RemoteError) as info:
            await h.call("run", domain="workflow", key="wf", resume=run_id)
        assert info.value.code == "conflict" and "finished ok" in info.value.message
        with pytest.raises(RemoteError) as info:
            await h.call("run", domain="workflow", key="wf", resume="wf-nope")
        assert info.value.code == "not_found"


@pytest.mark.anyio
async def test_finished_runs_are_pruned_to_workflow_history() -> None:
    config = HEAD.replace("watch = false", "watch = false\nworkflow_history = 2") + (
        task("prep") + workflow("wf", '[{ id = "prep", task = "prep" }]')
    )
    async with running_daemon(config, directory=make_dir()) as h:
        ids = [(await h.call("run", domain="workflow", key="wf"))["run_id"] for _ in range(4)]
        listed = [r["run_id"] for r in (await h.call("runs"))["runs"]]
        assert listed == ids[:-3:-1]  # the newest two, newest first
        on_disk = sorted(p.stem for p in (h.state_dir / "workflows").glob("*.json"))
        assert on_disk == sorted(ids[2:])


def _accept(listener: socket.socket) -> tuple[socket.socket, str]:
    conn, _ = listener.accept()
    conn.settimeout(60)
    line = b""
    while not line.endswith(b"\n"):
        chunk = conn.recv(100)
        assert chunk, "the task hung up"
        line += chunk
    return conn, line.decode().strip()


def _ctl(sock: str, *args: str) -> Any:
    out = subprocess.run(
        [ONEIRICCTL, "--socket", sock, "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


def test_resume_after_sigkill_does_not_rerun_completed_nodes() -> None:
    d = make_dir()
    os.chmod(d, 0o755)
    log = d / "ran.log"
    control = str(d / "work.sock")
    (d / "oneiricd.toml").write_text(
        HEAD
        + task("prep", "FileTask", f', log = "{log}"')
        + task("work", "SocketTask", f', control = "{control}"')
        + task("finish", "FileTask", f', log = "{log}"')
        + workflow(
            "wf",
            """[
  { id = "prep", task = "prep" },
  { id = "work", task = "work", after = ["prep"] },
  { id = "finish", task = "finish", after = ["work"] },
]""",
        )
    )
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(control)
    listener.listen()
    listener.settimeout(60)
    first = spawn(d)
    try:
        first.expect("READY=1")
        accepted = _ctl(first.socket, "run", "workflow", "wf", "--no-wait")
        assert accepted["accepted"] is True
        run_id = accepted["run_id"]
        conn, line = _accept(listener)  # "work" runs: "prep" ended and was checkpointed
        assert line == "started work"
        first.proc.send_signal(signal.SIGKILL)
        assert first.proc.wait(timeout=30) == -signal.SIGKILL
        conn.close()
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
            first.proc.wait()
        first.notify.close()
    record = json.loads((d / "state" / "workflows" / f"{run_id}.json").read_bytes())
    assert record["status"] == "running"  # as the kill left it
    assert record["nodes"]["prep"]["status"] == "ok"
    assert record["nodes"]["work"]["status"] == "pending"
    assert log.read_text().split() == ["prep"]

    second = spawn(d)
    try:
        second.expect("READY=1")
        [listed] = _ctl(second.socket, "runs")["runs"]
        assert listed["run_id"] == run_id and listed["status"] == "interrupted"
        command = [ONEIRICCTL, "--socket", second.socket, "--json", "run", "workflow", "wf"]
        resumed = subprocess.Popen(
            [*command, "--resume", run_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        conn, line = _accept(listener)
        assert line == "started work"
        conn.sendall(b"go\n")
        out, err = resumed.communicate(timeout=60)
        conn.close()
        assert resumed.returncode == 0, err
        report = json.loads(out)
        assert report["ok"] is True and report["run_id"] == run_id
        assert report["nodes"]["prep"]["resumed"] is True
        assert report["nodes"]["work"]["result"] == "go"
        assert log.read_text().split() == ["prep", "finish"]  # prep was not run again
        [listed] = _ctl(second.socket, "runs")["runs"]
        assert listed["status"] == "ok" and listed["resumes"] == 1
        assert second.stop() == 0
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
            second.proc.wait()
        second.notify.close()
        listener.close()


@pytest.mark.anyio
async def test_a_stop_during_a_run_leaves_it_interrupted_and_resumable() -> None:
    config = HEAD.replace('stop_timeout = "5s"', 'stop_timeout = "300ms"') + (
        task("prep")
        + task("wait")
        + workflow(
            "wf",
            """[
  { id = "prep", task = "prep" },
  { id = "wait", task = "wait", after = ["prep"], payload = { gate = "g" } },
]""",
        )
    )
    directory = make_dir()
    async with running_daemon(config, directory=directory) as h:
        accepted = await h.call("run", domain="workflow", key="wf", wait=False)
        await dc.passed("g.started")  # prep ended (checkpointed); wait is blocked
        run_id = accepted["run_id"]
    # the daemon stopped under the run: its record says so, and what already ended
    record = json.loads((directory / "state" / "workflows" / f"{run_id}.json").read_bytes())
    assert record["status"] == "interrupted"
    assert record["nodes"]["prep"]["status"] == "ok"
    assert dc.COUNTS["prep.run"] == 1
    dc.gate("g").set()
    async with running_daemon(config, directory=directory) as h:
        [listed] = (await h.call("runs", key="wf"))["runs"]
        assert listed["status"] == "interrupted"
        report = await h.call("run", domain="workflow", key="wf", resume=run_id)
        assert report["ok"] is True and report["nodes"]["prep"]["resumed"] is True
        assert dc.COUNTS["prep.run"] == 1 and dc.COUNTS["wait.run"] == 2
