"""oneiricctl against a scripted daemon on a real Unix socket (tests/fake_daemon.py).

Each test scripts the daemon's reply, runs the command through click's CliRunner (or a real
subprocess where process behaviour matters: imports, Ctrl-C), and asserts the exact requests
that reached the socket, the output and the exit status (SPEC §7).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from fake_daemon import FakeDaemon
from oneiric.cli import _ctl_base, oneiricctl, render
from oneiric.cli.oneiricctl import cli

NOW = time.time()


def _unknown_uid() -> int:
    """A uid the passwd database does not know."""
    uid = 4_242_424
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


UNKNOWN_UID = _unknown_uid()


# --- documents ---------------------------------------------------------------------------------


def component(domain: str, key: str, provider: str | None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "domain": domain,
        "key": key,
        "provider": provider,
        "admin": "active",
        "lifecycle": "ready",
        "in_flight": 0,
        "parked_provider": None,
        "note": None,
        "last_error": None,
        "swaps": 0,
        "failed_swaps": 0,
        "last_swap_ms": None,
    }
    doc.update(extra)
    return doc


def status_doc(*components: dict[str, Any], pid: int = 4242, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": 1,
        "version": "0.1.0",
        "pid": pid,
        "state": "running",
        "started_at": NOW - 3725,
        "updated_at": NOW - 2,
        "heartbeat_s": 5.0,
        "config": {
            "path": "/etc/oneiric/oneiricd.toml",
            "loaded_at": NOW - 300,
            "last_error": None,
            "files": ["/etc/oneiric/oneiricd.toml"],
        },
        "remote": {
            "status": "disabled",
            "url": None,
            "targets": [],
            "version": None,
            "applied_at": None,
            "last_check_at": None,
            "last_error": None,
            "next_check_at": None,
            "artifacts": 0,
            "restart_needed": False,
        },
        "components": list(components),
    }
    doc.update(extra)
    return doc


CACHE = component(
    "adapter",
    "cache",
    "memory",
    parked_provider="sqlite",
    admin="paused",
    in_flight=2,
    note="db migration",
)
BEAT = component("service", "beat", "heartbeat", last_error="restarted after crash")
DOC = status_doc(CACHE, BEAT)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative times ("5m00s ago") are rendered against the same NOW the documents use."""
    monkeypatch.setattr(_ctl_base, "now", lambda: NOW)


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    with FakeDaemon() as daemon:
        yield daemon


@pytest.fixture
def rundir() -> Iterator[Path]:
    """A runtime directory where no daemon listens (socket path inside it does not exist)."""
    path = Path(tempfile.mkdtemp(prefix="on", dir="/tmp"))
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


CLEAN_ENV = {"ONEIRIC_SOCKET": None, "ONEIRIC_HEALTH_FILE": None, "RUNTIME_DIRECTORY": None}


def ctl(socket_path: str, *args: str, env: dict[str, str | None] | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(cli, ["--socket", socket_path, *args], env={**CLEAN_ENV, **(env or {})})


def err_lines(result: Result) -> list[str]:
    return result.stderr.splitlines()


# --- status ------------------------------------------------------------------------------------


def test_status_prints_header_and_table(fake: FakeDaemon) -> None:
    fake.on("status", DOC)
    result = ctl(fake.path, "status")
    assert result.exit_code == 0, result.output
    assert fake.sent == [{"op": "status"}]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("oneiricd running  v0.1.0  pid 4242  up 1h02m  updated ")
    assert lines[0].endswith("s ago")
    assert lines[1] == "config: /etc/oneiric/oneiricd.toml (loaded 5m00s ago)"
    assert lines[2] == "remote: disabled"
    assert lines[3] == ""
    assert lines[4:] == [
        "DOMAIN   KEY    PROVIDER                ADMIN   LIFECYCLE  IN-FLIGHT  NOTE",
        "adapter  cache  memory→sqlite (parked)  paused  ready      2          db migration",
        "service  beat   heartbeat               active  ready      0",
        "    error: restarted after crash",
    ]
    assert result.stderr == ""


def test_status_filters_by_domain_and_key(fake: FakeDaemon) -> None:
    fake.on("status", status_doc(CACHE))
    result = ctl(fake.path, "status", "adapter", "cache")
    assert result.exit_code == 0
    assert fake.sent == [{"op": "status", "domain": "adapter", "key": "cache"}]


@pytest.mark.parametrize("lifecycle", ["failed", "degraded"])
def test_status_exits_1_on_failing_component(fake: FakeDaemon, lifecycle: str) -> None:
    broken = component("adapter", "db", "sqlite", lifecycle=lifecycle, last_error="disk full")
    fake.on("status", status_doc(CACHE, broken))
    result = ctl(fake.path, "status")
    assert result.exit_code == 1
    assert "    error: disk full" in result.stdout
    assert result.stdout.splitlines()[-1] == f"1 failing: adapter/db ({lifecycle})"


@pytest.mark.parametrize("admin", ["paused", "draining", "drained"])
def test_status_operator_intent_is_not_failure(fake: FakeDaemon, admin: str) -> None:
    fake.on("status", status_doc(component("adapter", "db", "sqlite", admin=admin)))
    assert ctl(fake.path, "status").exit_code == 0


@pytest.mark.parametrize("where", ["before", "after"])
def test_status_json_is_the_document(fake: FakeDaemon, where: str) -> None:
    fake.on("status", DOC)
    args = ["--json", "status"] if where == "before" else ["status", "--json"]
    result = ctl(fake.path, *args)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == DOC
    assert result.stdout.count("\n") == 1


def test_status_shows_config_error_and_remote(fake: FakeDaemon) -> None:
    doc = status_doc(
        config={"path": "/etc/o.toml", "loaded_at": NOW - 10, "last_error": "bad priority"},
        remote={
            "status": "error",
            "url": "https://x/",
            "version": 42,
            "last_check_at": NOW - 65,
            "next_check_at": NOW + 120,
            "last_error": "rejected (expired): timestamp.json is expired",
            "restart_reasons": ["adapter/x provider y: module 'm' is already imported"],
        },
    )
    fake.on("status", doc)
    result = ctl(fake.path, "status")
    assert result.exit_code == 1  # the files on disk would not start the daemon again
    lines = result.stdout.splitlines()
    assert "config error: bad priority (the running config is kept)" in lines
    assert lines[-1] == (
        "1 failing: config (the files on disk are broken; the running config is kept)"
    )
    assert "remote: error, version 42, checked 1m05s ago, next in 2m00s" in lines
    assert "remote error: rejected (expired): timestamp.json is expired" in lines
    assert "restart needed: adapter/x provider y: module 'm' is already imported" in lines
    assert "(no components)" in lines


def write_health(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc))


def test_status_daemon_down_prints_stale_snapshot_and_exits_3(rundir: Path) -> None:
    pid = dead_pid()
    write_health(rundir / "health.json", status_doc(CACHE, BEAT, pid=pid, updated_at=NOW - 60))
    result = ctl(str(rundir / "oneiricd.sock"), "status")
    assert result.exit_code == 3
    out = result.stdout.splitlines()
    assert out[0] == (
        f"STALE: last health snapshot from {rundir / 'health.json'} (written 1m00s ago): "
        f"pid {pid} is not running (the daemon died)"
    )
    # a dead daemon is never shown as running, nor with an uptime
    assert out[1].startswith(
        f"oneiricd NOT RUNNING (its last snapshot says running)  v0.1.0  pid {pid}  updated"
    )
    assert " up " not in out[1]
    assert (
        "adapter  cache  memory→sqlite (parked)  paused  ready      2          db migration" in out
    )
    assert err_lines(result) == [
        f"oneiricctl: cannot reach oneiricd at {rundir / 'oneiricd.sock'}: "
        "no socket file exists there",
        f"oneiricctl: is oneiricd running? start it with: oneiricd --socket "
        f"{rundir / 'oneiricd.sock'} (make run in a checkout), or point --socket / "
        "$ONEIRIC_SOCKET at its socket",
    ]


def test_status_daemon_down_json_carries_snapshot(rundir: Path) -> None:
    pid = dead_pid()
    health = rundir / "elsewhere.json"
    write_health(health, status_doc(CACHE, BEAT, pid=pid))
    sock = str(rundir / "oneiricd.sock")
    result = ctl(sock, "status", "adapter", "--json", env={"ONEIRIC_HEALTH_FILE": str(health)})
    assert result.exit_code == 3
    reply = json.loads(result.stdout)
    assert reply["ok"] is False
    error = reply["error"]
    assert error["code"] == "not_running"
    detail = error["detail"]
    assert detail["socket"] == sock
    assert detail["socket_exists"] is False
    assert detail["health_file"] == str(health)
    assert detail["stale_reason"] == f"pid {pid} is not running (the daemon died)"
    assert [c["key"] for c in detail["snapshot"]["components"]] == ["cache"]
    assert detail["snapshot"]["pid"] == pid


def test_status_daemon_down_clean_stop(rundir: Path) -> None:
    write_health(rundir / "health.json", status_doc(state="stopped", pid=dead_pid()))
    result = ctl(str(rundir / "oneiricd.sock"), "status")
    assert result.exit_code == 3
    assert "oneiricd stopped cleanly; this is its final snapshot" in result.stdout.splitlines()[0]


def test_status_daemon_down_and_no_health_file(rundir: Path) -> None:
    result = ctl(str(rundir / "oneiricd.sock"), "status")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert f"oneiricctl: no health snapshot at {rundir / 'health.json'} either" in err_lines(result)
    assert "is oneiricd running? start it with: oneiricd --socket" in result.stderr


def test_not_running_hint_names_systemctl_only_for_the_packaged_daemon() -> None:
    from oneiric.cli._ctl_errors import not_running_hint

    packaged = not_running_hint("/run/oneiric/oneiricd.sock", systemd=True)
    assert "systemctl status oneiricd" in packaged
    assert "systemctl" not in not_running_hint("/run/oneiric/oneiricd.sock", systemd=False)
    by_hand = not_running_hint("/home/ann/oneiric/var/run/oneiricd.sock", systemd=True)
    assert "systemctl" not in by_hand
    assert "oneiricd --socket /home/ann/oneiric/var/run/oneiricd.sock" in by_hand
    assert "make run" in by_hand


def test_status_with_broken_config_on_disk_exits_1_and_health_too(rundir: Path) -> None:
    doc = status_doc(
        CACHE,
        pid=os.getpid(),
        updated_at=time.time(),
        config={"path": "/etc/o.toml", "loaded_at": NOW - 10, "last_error": "bad priority"},
    )
    write_health(rundir / "health.json", doc)
    result = health_cmd(rundir / "health.json")
    assert result.exit_code == 1
    assert "1 failing: config (the files on disk are broken" in result.stdout


def test_status_daemon_down_and_unreadable_health_file(rundir: Path) -> None:
    (rundir / "health.json").write_text("{not json")
    result = ctl(str(rundir / "oneiricd.sock"), "status")
    assert result.exit_code == 3
    assert f"oneiricctl: cannot read {rundir / 'health.json'}: " in result.stderr


def test_refused_socket_says_the_file_exists(rundir: Path) -> None:
    path = str(rundir / "oneiricd.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)  # a socket file nobody listens on: what a crashed daemon leaves
    sock.close()
    result = ctl(path, "ping")
    assert result.exit_code == 3
    assert err_lines(result)[0] == (
        f"oneiricctl: cannot reach oneiricd at {path}: "
        "the socket file exists but nothing accepts connections (refused)"
    )


def test_connection_dropped_mid_request(fake: FakeDaemon) -> None:
    fake.on("ping", drop=True)
    result = ctl(fake.path, "ping")
    assert result.exit_code == 3
    assert "the daemon closed the connection before replying; the socket file exists" in (
        result.stderr
    )


# --- watch ---------------------------------------------------------------------------------------


def snapshot_event(doc: dict[str, Any]) -> dict[str, Any]:
    return {"type": "snapshot", "snapshot": doc}


def test_watch_json_prints_one_document_per_event(fake: FakeDaemon) -> None:
    docs = [status_doc(CACHE), status_doc(CACHE, BEAT), status_doc(BEAT)]
    events = [snapshot_event(d) for d in docs]
    events.insert(1, {"type": "other"})  # unknown event types are ignored
    fake.on("watch", {"ended": "daemon stopping"}, events=events)
    result = ctl(fake.path, "--json", "status", "--watch")
    assert result.exit_code == 0
    assert fake.sent == [{"op": "watch"}]
    assert [json.loads(line) for line in result.stdout.splitlines()] == docs
    assert err_lines(result) == ["oneiricctl: watch ended: daemon stopping"]


def test_watch_human_redraws_filtered_table(fake: FakeDaemon) -> None:
    events = [snapshot_event(status_doc(CACHE, BEAT)), snapshot_event(status_doc(BEAT))]
    fake.on("watch", {"ended": "daemon stopping"}, events=events)
    result = ctl(fake.path, "status", "service", "--watch")
    assert result.exit_code == 0
    assert result.stdout.count("oneiricd running") == 2
    assert "adapter  cache" not in result.stdout
    assert result.stdout.count("service  beat  heartbeat  active  ready") == 2


def test_watch_ctrl_c_exits_0() -> None:
    with FakeDaemon() as fake:
        fake.on("watch", events=[snapshot_event(DOC)], hold=True)
        cmd = [sys.executable, "-m", "oneiric.cli.oneiricctl", "--socket", fake.path]
        proc = subprocess.Popen(
            [*cmd, "--json", "status", "--watch"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline()) == DOC
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, err
        assert "Traceback" not in err


def test_drain_ctrl_c_stops_waiting_and_exits_1() -> None:
    with FakeDaemon() as fake:
        fake.on("drain", events=[progress({"adapter/cache": 1}, 0.5)], hold=True)
        cmd = [sys.executable, "-m", "oneiric.cli.oneiricctl", "--socket", fake.path]
        proc = subprocess.Popen(
            [*cmd, "drain", "adapter"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            assert proc.stderr.readline() == "draining: adapter/cache 1 in flight (0.5s)\n"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 1, err
        assert err == "oneiricctl: stopped waiting; adapter stays draining (resume to reopen)\n"


# --- pause / resume ------------------------------------------------------------------------------


def test_pause_key_with_note(fake: FakeDaemon) -> None:
    fake.on("pause", {"affected": ["adapter/cache"], "state": "paused"})
    result = ctl(fake.path, "pause", "adapter", "cache", "--note", "db migration")
    assert result.exit_code == 0
    assert fake.sent == [
        {"op": "pause", "domain": "adapter", "key": "cache", "note": "db migration"}
    ]
    assert result.stdout == "paused adapter/cache (now paused)\n"


def test_pause_domain_with_no_keys_yet(fake: FakeDaemon) -> None:
    fake.on("pause", {"affected": [], "state": "paused"})
    result = ctl(fake.path, "pause", "service")
    assert result.exit_code == 0
    assert fake.sent == [{"op": "pause", "domain": "service"}]
    assert "applies to keys that appear later" in result.stdout


def test_pause_all(fake: FakeDaemon) -> None:
    fake.on("pause", {"affected": ["adapter/cache", "service/beat"], "state": "paused"})
    result = ctl(fake.path, "pause", "--all", "--json")
    assert result.exit_code == 0
    assert fake.sent == [{"op": "pause"}]
    assert json.loads(result.stdout) == {
        "affected": ["adapter/cache", "service/beat"],
        "state": "paused",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["resume"], "to resume everything use --all"),
        (["pause"], "to pause everything use --all"),
        (["resume", "adapter", "--all"], "resume takes DOMAIN [KEY] or --all, not both"),
        (["pause", "nodomain"], "'nodomain' is not one of"),
    ],
)
def test_intent_usage_errors(fake: FakeDaemon, args: list[str], message: str) -> None:
    result = ctl(fake.path, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert fake.sent == []


def test_resume_all_omits_domain_and_key(fake: FakeDaemon) -> None:
    fake.on("resume", {"affected": ["adapter/cache"], "state": "active"})
    result = ctl(fake.path, "resume", "--all")
    assert result.exit_code == 0
    assert fake.sent == [{"op": "resume"}]
    assert result.stdout == "resumed everything: adapter/cache (now active)\n"


def test_resume_key(fake: FakeDaemon) -> None:
    fake.on("resume", {"affected": ["adapter/cache"], "state": "active"})
    assert ctl(fake.path, "resume", "adapter", "cache").exit_code == 0
    assert fake.sent == [{"op": "resume", "domain": "adapter", "key": "cache"}]


def test_permission_denied_exits_4(fake: FakeDaemon) -> None:
    message = "uid 1000 is a reader; mutating ops need root, uid 0 or group 'oneiric'"
    fake.fail("pause", "permission_denied", message)
    result = ctl(fake.path, "pause", "adapter")
    assert result.exit_code == 4
    assert err_lines(result)[0] == f"oneiricctl: pause: permission denied: {message}"
    assert "admin group" in err_lines(result)[1]


def test_permission_denied_json(fake: FakeDaemon) -> None:
    fake.fail("drain", "permission_denied", "group 'oneiric' required")
    result = ctl(fake.path, "--json", "drain")
    assert result.exit_code == 4
    assert json.loads(result.stdout) == {
        "ok": False,
        "error": {
            "code": "permission_denied",
            "message": "drain: permission denied: group 'oneiric' required",
            "detail": None,
        },
    }
    assert result.stderr.startswith("oneiricctl: drain: permission denied")


def test_socket_access_denied_exits_4(rundir: Path) -> None:
    path = str(rundir / "oneiricd.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    os.chmod(path, 0)
    os.chmod(rundir, 0o755)
    try:
        if os.geteuid() == 0:  # root ignores file modes: connect as nobody for this call
            os.seteuid(65534)
        try:
            result = ctl(path, "status")
        finally:
            if os.getuid() == 0:
                os.seteuid(0)
    finally:
        listener.close()
    assert result.exit_code == 4
    assert result.stderr.startswith(f"oneiricctl: permission denied connecting to {path}")
    assert "admin group" in result.stderr


# --- drain ---------------------------------------------------------------------------------------


def progress(in_flight: dict[str, int], elapsed: float) -> dict[str, Any]:
    return {"type": "progress", "in_flight": in_flight, "elapsed_s": elapsed}


def test_drain_shows_progress_when_it_changes(fake: FakeDaemon) -> None:
    events = [
        progress({"adapter/cache": 2}, 0.5),
        progress({"adapter/cache": 2}, 1.0),
        progress({"adapter/cache": 1}, 1.5),
        progress({}, 2.0),
    ]
    fake.on(
        "drain", {"drained": True, "affected": ["adapter/cache"], "elapsed_s": 2.0}, events=events
    )
    result = ctl(fake.path, "drain", "adapter", "cache", "--note", "disk", "--timeout", "5s")
    assert result.exit_code == 0
    assert fake.sent == [
        {
            "op": "drain",
            "domain": "adapter",
            "key": "cache",
            "note": "disk",
            "timeout": 5.0,
            "wait": True,
        }
    ]
    assert err_lines(result) == [
        "draining: adapter/cache 2 in flight (0.5s)",
        "draining: adapter/cache 1 in flight (1.5s)",
        "draining: nothing in flight (2.0s)",
    ]
    assert result.stdout == "drained adapter/cache in 2.0s\n"


def test_drain_timeout_names_what_is_in_flight(fake: FakeDaemon) -> None:
    fake.fail(
        "drain",
        "timeout",
        "drain timed out after 5s; still in flight: adapter/cache (2)",
        {"in_flight": {"adapter/cache": 2, "service/beat": 1}},
        events=[progress({"adapter/cache": 2, "service/beat": 1}, 4.9)],
    )
    result = ctl(fake.path, "drain", "--timeout", "5")
    assert result.exit_code == 1
    assert fake.sent == [{"op": "drain", "timeout": 5.0, "wait": True}]
    assert err_lines(result) == [
        "draining: adapter/cache 2, service/beat 1 in flight (4.9s)",
        "oneiricctl: drain timed out after 5s; still in flight: adapter/cache 2, service/beat 1",
        "oneiricctl: everything stays draining; run drain again to keep waiting, "
        "or resume to reopen it",
    ]


def test_drain_timeout_json(fake: FakeDaemon) -> None:
    detail = {"in_flight": {"adapter/cache": 2}}
    fake.fail("drain", "timeout", "timed out", detail, events=[progress({"adapter/cache": 2}, 1)])
    result = ctl(fake.path, "drain", "adapter", "--timeout", "1", "--json")
    assert result.exit_code == 1
    reply = json.loads(result.stdout)  # one document: no progress lines under --json
    assert reply["error"]["code"] == "timeout"
    assert reply["error"]["detail"] == detail


def test_drain_other_error(fake: FakeDaemon) -> None:
    fake.fail("drain", "not_found", "no key adapter/nope")
    result = ctl(fake.path, "drain", "adapter", "nope")
    assert result.exit_code == 1
    assert err_lines(result) == [
        "oneiricctl: drain failed: no key adapter/nope",
        "oneiricctl: see `oneiricctl list` for the known domains, keys and providers",
    ]


def test_drain_no_wait(fake: FakeDaemon) -> None:
    fake.on(
        "drain",
        {
            "drained": False,
            "affected": ["service/beat", "service/x"],
            "in_flight": {"service/beat": 3},
            "elapsed_s": 0.0,
        },
    )
    result = ctl(fake.path, "drain", "service", "--no-wait")
    assert result.exit_code == 0
    assert fake.sent == [{"op": "drain", "domain": "service", "wait": False}]
    assert result.stdout == (
        "draining service (service/beat, service/x); still in flight: service/beat 3 "
        "(follow with: oneiricctl status --watch)\n"
    )


def test_drain_bad_timeout_is_usage_error(fake: FakeDaemon) -> None:
    result = ctl(fake.path, "drain", "--timeout", "soon")
    assert result.exit_code == 2
    assert "invalid duration 'soon': expected a duration like" in result.stderr
    assert fake.sent == []


def test_drain_progress_on_a_terminal_rewrites_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bar = oneiricctl._Progress(enabled=True)
    bar.tty = True
    bar(progress({"adapter/cache": 1}, 0.5))
    bar(progress({"adapter/cache": 1}, 1.0))
    bar({"type": "other"})
    bar.finish()
    bar.finish()
    assert capsys.readouterr().err == (
        "\r\x1b[Kdraining: adapter/cache 1 in flight (0.5s)"
        "\r\x1b[Kdraining: adapter/cache 1 in flight (1.0s)\n"
    )


def test_watch_on_a_terminal_clears_the_screen(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cleared: list[bool] = []
    monkeypatch.setattr(click, "clear", lambda: cleared.append(True))
    screen = oneiricctl._Screen(oneiricctl.Ctl(socket="/x"), None, None)
    screen.tty = True
    screen(snapshot_event(DOC))
    assert cleared == [True]
    assert capsys.readouterr().out.startswith("oneiricd running")


# --- swap / explain / list ---------------------------------------------------------------------


def test_swap(fake: FakeDaemon) -> None:
    fake.on("swap", {"provider": "sqlite", "previous": "memory", "parked": False, "swap_ms": 12.34})
    result = ctl(fake.path, "swap", "adapter", "cache", "sqlite")
    assert result.exit_code == 0
    assert fake.sent == [
        {"op": "swap", "domain": "adapter", "key": "cache", "provider": "sqlite", "clear": False}
    ]
    assert result.stdout == "adapter/cache: swapped to sqlite (was memory, took 12.3 ms)\n"


def test_swap_clear(fake: FakeDaemon) -> None:
    fake.on("swap", {"provider": "memory", "previous": "sqlite", "parked": False, "swap_ms": 3})
    result = ctl(fake.path, "swap", "adapter", "cache", "--clear")
    assert result.exit_code == 0
    assert fake.sent == [{"op": "swap", "domain": "adapter", "key": "cache", "clear": True}]
    assert (
        result.stdout == "adapter/cache: override cleared, now memory (was sqlite, took 3.0 ms)\n"
    )


def test_swap_clear_with_nothing_to_clear(fake: FakeDaemon) -> None:
    fake.on(
        "swap",
        {
            "provider": "memory",
            "previous": "memory",
            "parked": False,
            "swap_ms": 0.0,
            "outcome": "unchanged",
            "nothing_to_clear": True,
        },
    )
    result = ctl(fake.path, "swap", "adapter", "cache", "--clear")
    assert result.exit_code == 0
    assert result.stdout == "adapter/cache: no operator override to clear (memory keeps serving)\n"


def test_swap_parked(fake: FakeDaemon) -> None:
    fake.on("swap", {"provider": "sqlite", "previous": "memory", "parked": True, "swap_ms": 0.1})
    result = ctl(fake.path, "swap", "adapter", "cache", "sqlite")
    assert result.stdout == (
        "adapter/cache: sqlite selected; the swap is parked until the key is resumed "
        "(still serving memory)\n"
    )


def test_swap_failure_exits_1(fake: FakeDaemon) -> None:
    fake.fail("swap", "unavailable", "swap of adapter/cache failed, 'memory' keeps serving: boom")
    result = ctl(fake.path, "swap", "adapter", "cache", "sqlite")
    assert result.exit_code == 1
    assert err_lines(result) == [
        "oneiricctl: swap: swap of adapter/cache failed, 'memory' keeps serving: boom"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["adapter", "cache"], "give the PROVIDER to swap to, or --clear"),
        (["adapter", "cache", "sqlite", "--clear"], "give a PROVIDER or --clear, not both"),
    ],
)
def test_swap_usage(fake: FakeDaemon, args: list[str], message: str) -> None:
    result = ctl(fake.path, "swap", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert fake.sent == []


EXPLAIN = {
    "domain": "adapter",
    "key": "cache",
    "winner": "sqlite",
    "via": "selection",
    "reason": '[selections.adapter] cache = "sqlite"',
    "active": "memory",
    "override": None,
    "selection": "sqlite",
    "mismatch": None,
    "warnings": ["provider 'redis' is selected nowhere"],
    "candidates": [
        {
            "rank": 1,
            "provider": "sqlite",
            "factory": "oneiric.builtin.cache:SQLiteCache",
            "source": "/etc/oneiric/oneiricd.toml",
            "priority": 0,
            "stack_level": 0,
            "seq": 2,
            "reasons": ["selected in config"],
            "winner": True,
            "active": False,
        },
        {
            "rank": 2,
            "provider": "memory",
            "factory": "oneiric.builtin.cache:MemoryCache",
            "source": "/etc/oneiric/oneiricd.toml",
            "priority": 10,
            "stack_level": 0,
            "seq": 1,
            "reasons": ["not the config selection", "priority 10"],
            "winner": False,
            "active": True,
        },
    ],
}


def test_explain(fake: FakeDaemon) -> None:
    fake.on("explain", EXPLAIN)
    result = ctl(fake.path, "explain", "adapter", "cache")
    assert result.exit_code == 0
    assert fake.sent == [{"op": "explain", "domain": "adapter", "key": "cache"}]
    assert result.stdout.splitlines() == [
        "adapter/cache: winner sqlite, active memory",
        '  decided by: selection — [selections.adapter] cache = "sqlite"',
        "  config selection: sqlite",
        "",
        "   RANK  PROVIDER  STACK  PRIORITY  SEQ  SOURCE                      FACTORY",
        "*  1     sqlite    0      0         2    /etc/oneiric/oneiricd.toml  "
        "oneiric.builtin.cache:SQLiteCache  winner",
        "      - selected in config",
        "   2     memory    0      10        1    /etc/oneiric/oneiricd.toml  "
        "oneiric.builtin.cache:MemoryCache  active",
        "      - not the config selection",
        "      - priority 10",
        "",
        "mismatch: the active instance (memory) is not the winner (sqlite)",
        "warning: provider 'redis' is selected nowhere",
    ]


def test_explain_mismatch_sentence_from_daemon_and_override(fake: FakeDaemon) -> None:
    fake.on(
        "explain",
        {
            **EXPLAIN,
            "override": "sqlite",
            "mismatch": "the swap to sqlite is parked (key paused)",
            "candidates": [],
            "warnings": [],
        },
    )
    result = ctl(fake.path, "explain", "adapter", "cache")
    lines = result.stdout.splitlines()
    assert "  operator override: sqlite (clear with swap --clear)" in lines
    assert "(no candidates)" in lines
    assert lines[-1] == "mismatch: the swap to sqlite is parked (key paused)"


def test_explain_unknown_key(fake: FakeDaemon) -> None:
    fake.fail("explain", "not_found", "no candidates for adapter/nope")
    result = ctl(fake.path, "--json", "explain", "adapter", "nope")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] == "not_found"


def test_list(fake: FakeDaemon) -> None:
    fake.on(
        "list",
        {
            "candidates": [
                {
                    "domain": "adapter",
                    "key": "cache",
                    "provider": "sqlite",
                    "factory": "f:S",
                    "source": "a.toml",
                    "priority": 0,
                    "stack_level": 1,
                    "winner": True,
                    "active": True,
                },
                {
                    "domain": "adapter",
                    "key": "cache",
                    "provider": "memory",
                    "factory": "f:M",
                    "source": "a.toml",
                    "priority": 10,
                    "stack_level": 0,
                    "winner": False,
                    "active": False,
                },
            ]
        },
    )
    result = ctl(fake.path, "list", "adapter", "--shadowed")
    assert result.exit_code == 0
    assert fake.sent == [{"op": "list", "domain": "adapter", "shadowed": True}]
    assert result.stdout.splitlines() == [
        "DOMAIN   KEY    PROVIDER  STACK  PRIORITY  SOURCE  FACTORY",
        "adapter  cache  sqlite    1      0         a.toml  f:S      winner, active",
        "adapter  cache  memory    0      10        a.toml  f:M      shadowed",
    ]


def test_list_empty(fake: FakeDaemon) -> None:
    fake.on("list", {"candidates": []})
    result = ctl(fake.path, "list")
    assert fake.sent == [{"op": "list", "shadowed": False}]
    assert result.stdout == "(no candidates)\n"


# --- run / emit --------------------------------------------------------------------------------


def test_run_task_with_payload(fake: FakeDaemon) -> None:
    fake.on("run", {"result": {"removed": 3}, "duration_ms": 41.25})
    result = ctl(fake.path, "run", "task", "cleanup", "--payload", '{"older_than": "7d"}')
    assert result.exit_code == 0
    assert fake.sent == [
        {
            "op": "run",
            "domain": "task",
            "key": "cleanup",
            "payload": {"older_than": "7d"},
            "wait": True,
        }
    ]
    assert result.stdout == 'task/cleanup: done in 41.2 ms\nresult: {"removed":3}\n'


def test_run_payload_parse_error_is_usage_error(fake: FakeDaemon) -> None:
    result = ctl(fake.path, "run", "task", "cleanup", "--payload", "{older: 7}")
    assert result.exit_code == 2
    assert "Invalid value for '--payload': not valid JSON: Expecting property name" in (
        result.stderr
    )
    assert fake.sent == []


def test_run_no_wait(fake: FakeDaemon) -> None:
    fake.on("run", {"started": True, "run_id": "r1"})
    result = ctl(fake.path, "run", "task", "reindex", "--no-wait")
    assert result.exit_code == 0
    assert fake.sent == [{"op": "run", "domain": "task", "key": "reindex", "wait": False}]
    assert result.stdout.splitlines() == [
        "task/reindex: accepted",
        "  started: yes",
        "  run_id: r1",
    ]


def test_run_task_error_exits_1(fake: FakeDaemon) -> None:
    fake.fail("run", "internal", "task raised ValueError: bad input")
    result = ctl(fake.path, "run", "task", "cleanup")
    assert result.exit_code == 1
    assert err_lines(result) == [
        "oneiricctl: run task cleanup failed: task raised ValueError: bad input"
    ]


WORKFLOW = {
    "nodes": {
        "fetch": {"status": "ok", "result": 3, "error": None, "duration_ms": 5.0},
        "load": {"status": "failed", "result": None, "error": "boom", "duration_ms": 1.5},
        "report": {"status": "skipped", "result": None, "error": None, "duration_ms": None},
    },
    "ok": False,
}


def test_run_workflow_failure_exits_1(fake: FakeDaemon) -> None:
    fake.on("run", WORKFLOW)
    result = ctl(fake.path, "run", "workflow", "nightly")
    assert result.exit_code == 1
    assert fake.sent == [{"op": "run", "domain": "workflow", "key": "nightly", "wait": True}]
    assert result.stdout.splitlines() == [
        "workflow/nightly: failed",
        "NODE    STATUS   DURATION  RESULT/ERROR",
        "fetch   ok       5.0 ms    3",
        "load    failed   1.5 ms    boom",
        "report  skipped  -         -",
    ]
    assert err_lines(result) == ["oneiricctl: workflow nightly failed"]


def test_run_workflow_ok_json(fake: FakeDaemon) -> None:
    doc = {**WORKFLOW, "ok": True}
    fake.on("run", doc)
    result = ctl(fake.path, "run", "workflow", "nightly", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == doc


def test_emit(fake: FakeDaemon) -> None:
    fake.on("emit", {"delivered": ["event/audit"], "held": ["event/mail"]})
    result = ctl(fake.path, "emit", "user.created", "--data", '{"id": 42}')
    assert result.exit_code == 0
    assert fake.sent == [{"op": "emit", "topic": "user.created", "data": {"id": 42}}]
    assert result.stdout.splitlines() == [
        "user.created: delivered to event/audit",
        "held for event/mail (paused; delivered on resume)",
    ]


def test_emit_nobody_listening(fake: FakeDaemon) -> None:
    fake.on("emit", {"delivered": [], "held": []})
    result = ctl(fake.path, "emit", "nothing.here")
    assert fake.sent == [{"op": "emit", "topic": "nothing.here"}]
    assert result.stdout == "nothing.here: no event key matched\n"


def test_emit_bad_data(fake: FakeDaemon) -> None:
    result = ctl(fake.path, "emit", "t", "--data", "[1,")
    assert result.exit_code == 2
    assert "Invalid value for '--data': not valid JSON" in result.stderr


@pytest.mark.parametrize("topic", ["bad topic!", "user.*", "", ".leading", "x" * 257])
def test_emit_bad_topic_is_a_usage_error(fake: FakeDaemon, topic: str) -> None:
    """The daemon's rule, applied before any request: exit 2, nothing sent."""
    result = ctl(fake.path, "emit", topic)
    assert result.exit_code == 2, result.output
    assert "Invalid value for 'TOPIC': invalid topic" in result.stderr
    assert fake.sent == []


def test_client_and_daemon_share_the_topic_rule() -> None:
    from oneiric.domains.routing import check_topic
    from oneiric.errors import BadRequest

    for topic in ("bad topic!", "user.*", "x" * 257):
        with pytest.raises(BadRequest):
            check_topic(topic)
    assert check_topic("user.created:v2/eu-west_1") == "user.created:v2/eu-west_1"
    result = CliRunner().invoke(cli, ["--socket", "/nonexistent/s", "emit", "user.created:v2/eu"])
    assert result.exit_code == 3  # valid: it got as far as the (absent) daemon


@pytest.mark.parametrize("data", ["NaN", '{"x": Infinity}', "[-Infinity]"])
def test_non_json_numbers_are_usage_errors(fake: FakeDaemon, data: str) -> None:
    """Python's json accepts NaN/Infinity, but a request carrying them is not JSON."""
    result = ctl(fake.path, "emit", "t", "--data", data)
    assert result.exit_code == 2
    assert "not valid JSON" in result.stderr and "is not valid JSON" in result.stderr
    assert fake.sent == []


# --- reload / sync / ping ------------------------------------------------------------------------


def test_reload(fake: FakeDaemon) -> None:
    fake.on("reload", {"changed": ["adapter/cache"], "not_live": ["daemon.socket_mode"]})
    result = ctl(fake.path, "reload")
    assert result.exit_code == 0
    assert fake.sent == [{"op": "reload"}]
    assert result.stdout.splitlines() == [
        "reloaded: 1 changed (adapter/cache)",
        "not applied live (restart oneiricd to apply): daemon.socket_mode",
    ]


def test_reload_error_exits_1_with_config_message(fake: FakeDaemon) -> None:
    message = "/etc/oneiric/oneiricd.toml, at component[2].priority: expected int, got str"
    fake.fail("reload", "bad_request", message)
    result = ctl(fake.path, "reload")
    assert result.exit_code == 1
    assert err_lines(result) == [
        f"oneiricctl: reload failed: {message}",
        "oneiricctl: the running configuration is kept; fix it and reload again",
    ]


def test_sync_applied(fake: FakeDaemon) -> None:
    fake.on(
        "sync",
        {
            "ok": True,
            "outcome": "applied",
            "status": "ok",
            "version": 7,
            "changed": ["adapter/cache", "task/tick"],
            "outcomes": {"adapter/cache": "swapped", "task/tick": "parked"},
            "failed": {},
            "restart_reasons": [],
            "next_check_at": None,
        },
    )
    result = ctl(fake.path, "sync")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "remote sync: applied version 7: 2 key(s) changed (adapter/cache, task/tick)",
        "parked until resumed: task/tick",
    ]


def test_sync_rejected_exits_1_with_the_reason(fake: FakeDaemon) -> None:
    doc = {
        "ok": False,
        "outcome": "rejected",
        "status": "error",
        "version": 6,
        "reason": "rollback",
        "error": "rejected (rollback): New timestamp version 3 must be >= 5",
    }
    fake.on("sync", doc)
    result = ctl(fake.path, "sync")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "remote sync: REJECTED: rejected (rollback): New timestamp version 3 must be >= 5 "
        "(still running version 6)"
    ]
    as_json = ctl(fake.path, "--json", "sync")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == doc


def test_sync_unavailable(fake: FakeDaemon) -> None:
    fake.fail("sync", "unavailable", "no [remote] source is configured")
    result = ctl(fake.path, "sync")
    assert result.exit_code == 1
    assert "oneiricctl: sync failed: no [remote] source is configured" in result.stderr


def test_ping(fake: FakeDaemon) -> None:
    fake.on("ping", {"version": "0.1.0", "pid": 99, "uptime_s": 3725.5, "state": "running"})
    result = ctl(fake.path, "ping")
    assert result.exit_code == 0
    assert fake.sent == [{"op": "ping"}]
    assert result.stdout == "oneiricd 0.1.0 running, pid 99, up 1h02m\n"


def test_unknown_op_hints_at_version_skew(fake: FakeDaemon) -> None:
    result = ctl(fake.path, "sync")  # not scripted: the fake answers unknown_op
    assert result.exit_code == 1
    assert "versions" in err_lines(result)[-1]


@pytest.mark.parametrize("option", ["--timeout", "--reply-timeout"])
def test_reply_timeout(fake: FakeDaemon, option: str) -> None:
    fake.on("ping", hold=True)
    result = ctl(fake.path, option, "200ms", "ping")
    assert result.exit_code == 1
    assert err_lines(result)[0].startswith("oneiricctl: ping failed: no reply to 'ping'")
    assert "raise --timeout" in err_lines(result)[1]


def test_reply_timeout_never_cuts_a_drain_short() -> None:
    """``--reply-timeout`` bounds replies; a drain waits for its own ``--timeout`` (10m here)
    however long the daemon stays silent between progress events."""
    with FakeDaemon() as fake:
        fake.on("drain", events=[progress({"adapter/cache": 1}, 0.5)], hold=True)
        cmd = [sys.executable, "-m", "oneiric.cli.oneiricctl", "--socket", fake.path]
        proc = subprocess.Popen(
            [*cmd, "--reply-timeout", "50ms", "drain", "adapter", "--timeout", "10m"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            assert proc.stderr.readline() == "draining: adapter/cache 1 in flight (0.5s)\n"
            # 40 reply timeouts of silence: the client must still be waiting
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 1, err
        assert err == "oneiricctl: stopped waiting; adapter stays draining (resume to reopen)\n"
        assert fake.sent == [{"op": "drain", "domain": "adapter", "timeout": 600.0, "wait": True}]


def test_socket_from_environment(fake: FakeDaemon) -> None:
    fake.on("ping", {"version": "0.1.0", "pid": 1, "uptime_s": 1, "state": "running"})
    result = CliRunner().invoke(cli, ["ping"], env={**CLEAN_ENV, "ONEIRIC_SOCKET": fake.path})
    assert result.exit_code == 0
    assert fake.sent == [{"op": "ping"}]


# --- health --------------------------------------------------------------------------------------


def health_cmd(path: Path, *args: str) -> Result:
    return ctl("/nonexistent/oneiricd.sock", "health", "--file", str(path), *args)


def test_health_fresh_file(rundir: Path) -> None:
    doc = status_doc(CACHE, BEAT, pid=os.getpid(), updated_at=time.time())
    write_health(rundir / "health.json", doc)
    result = health_cmd(rundir / "health.json")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"oneiricd running  v0.1.0  pid {os.getpid()}")
    assert "adapter  cache  memory→sqlite (parked)" in result.stdout


def test_health_json_is_the_raw_document(rundir: Path) -> None:
    doc = status_doc(CACHE, pid=os.getpid(), updated_at=time.time())
    write_health(rundir / "health.json", doc)
    result = health_cmd(rundir / "health.json", "--json")
    assert result.exit_code == 0
    printed = json.loads(result.stdout)
    assert printed["pid"] == os.getpid()
    assert printed["components"][0] == {**printed["components"][0], **CACHE}


def test_health_default_path_beside_socket(rundir: Path) -> None:
    write_health(rundir / "health.json", status_doc(pid=os.getpid(), updated_at=time.time()))
    result = ctl(str(rundir / "oneiricd.sock"), "health")
    assert result.exit_code == 0


def test_health_of_a_dead_daemon_exits_3_saying_why(rundir: Path) -> None:
    pid = dead_pid()
    write_health(rundir / "health.json", status_doc(CACHE, pid=pid))
    result = health_cmd(rundir / "health.json")
    assert result.exit_code == 3  # not running, as `status` says
    assert result.stdout.startswith("STALE: last health snapshot from")
    assert err_lines(result) == [
        f"oneiricctl: the health snapshot is stale: pid {pid} is not running (the daemon died)"
    ]


def test_health_not_updating_exits_1(rundir: Path) -> None:
    doc = status_doc(CACHE, pid=os.getpid(), updated_at=time.time() - 3600)
    write_health(rundir / "health.json", doc)
    result = health_cmd(rundir / "health.json")
    assert result.exit_code == 1
    assert "stale" in result.stderr


def test_health_failed_component_exits_1(rundir: Path) -> None:
    broken = component("adapter", "db", "sqlite", lifecycle="failed")
    write_health(rundir / "h.json", status_doc(broken, pid=os.getpid(), updated_at=time.time()))
    result = health_cmd(rundir / "h.json")
    assert result.exit_code == 1
    assert "1 failing: adapter/db (failed)" in result.stdout


def test_health_stopped_exits_3(rundir: Path) -> None:
    write_health(rundir / "h.json", status_doc(state="stopped", pid=dead_pid()))
    result = health_cmd(rundir / "h.json")
    assert result.exit_code == 3
    assert "stopped cleanly" in result.stderr


def test_health_missing_exits_3(rundir: Path) -> None:
    result = health_cmd(rundir / "missing.json", "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["error"]["code"] == "not_running"
    assert f"oneiricctl: no health file at {rundir / 'missing.json'}" in result.stderr


def test_health_corrupt_exits_1(rundir: Path) -> None:
    (rundir / "h.json").write_text('{"schema": 1, "pid": "x"}')
    result = health_cmd(rundir / "h.json")
    assert result.exit_code == 1
    assert f"oneiricctl: cannot read {rundir / 'h.json'}" in result.stderr


def test_health_unreadable_exits_4(rundir: Path) -> None:
    write_health(rundir / "h.json", status_doc(pid=os.getpid()))
    os.chmod(rundir / "h.json", 0)
    os.chmod(rundir, 0o755)
    if os.geteuid() == 0:
        os.seteuid(65534)
    try:
        result = health_cmd(rundir / "h.json")
    finally:
        if os.getuid() == 0:
            os.seteuid(0)
    assert result.exit_code == 4
    assert "Permission denied" in result.stderr


# --- process-level behaviour -------------------------------------------------------------------


#: What a normal command (status, ping, pause, --help, ...) must never import: anyio, asyncio
#: and watchfiles (a broken daemon environment must not break the client), and the modules
#: whose import costs milliseconds of every start (msgspec ~9 ms, pathlib ~4, dataclasses ~2,
#: the Python-level socket wrapper with selectors ~2.5, shutil ~3) or pulls in msgspec (the
#: health reader in oneiric.runtime). click itself loads typing, inspect, datetime and re.
HEAVY = (
    "anyio",
    "watchfiles",
    "asyncio",
    "msgspec",
    "dataclasses",
    "pathlib",
    "socket",
    "selectors",
    "shutil",
    "oneiric.runtime",
    # remote manifests: only `oneiricctl manifest ...` may load python-tuf and its stack
    "oneiric.remote",
    "tuf",
    "securesystemslib",
    "cryptography",
    "urllib3",
)


def is_heavy(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in HEAVY)


_RUN_MAIN = """
import atexit, sys
atexit.register(lambda: print("IMPORTED", *sorted(sys.modules), file=sys.stderr))
from oneiric.cli.oneiricctl import main
main(sys.argv[1:])
"""


def _no_cov() -> dict[str, str]:
    """The environment without coverage's subprocess start-up hook (which imports half the
    stdlib itself)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE", "COVERAGE"))}


def heavy_imports(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, list[str]]:
    """Run oneiricctl in a fresh interpreter; its exit status, stdout, and which HEAVY modules
    it imported by the time it exited."""
    base = _no_cov()
    for name in CLEAN_ENV:
        base.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_MAIN, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**base, **(env or {})},
    )
    report = [line for line in proc.stderr.splitlines() if line.startswith("IMPORTED ")]
    assert len(report) == 1, proc.stderr  # the exit hook really ran
    modules = report[0].split()[1:]
    assert "oneiric.control.client" in modules
    return proc.returncode, proc.stdout, [m for m in modules if is_heavy(m)]


def test_import_is_light() -> None:
    code = "import sys, oneiric.cli.oneiricctl\nprint(*sorted(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_no_cov()
    )
    modules = out.stdout.split()
    assert "oneiric.control.client" in modules
    assert [m for m in modules if is_heavy(m)] == []


def test_ping_and_status_run_without_heavy_imports(fake: FakeDaemon) -> None:
    fake.on("ping", {"version": "0.1.0", "state": "running", "pid": 7, "uptime_s": 5})
    fake.on("status", DOC)
    for command in ("ping", "status"):
        code, out, heavy = heavy_imports("--socket", fake.path, command)
        assert (command, code, heavy) == (command, 0, [])
        assert out.startswith("oneiricd ")


def test_a_command_loads_only_its_own_module(fake: FakeDaemon) -> None:
    """Subcommand modules are imported when their command runs, not all at start-up (and the
    hot commands, run without click, load none: tests/test_ctl_fast.py)."""
    fake.on("list", {"candidates": []})
    base = _no_cov()
    for name in CLEAN_ENV:
        base.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_MAIN, "--socket", fake.path, "list"],
        capture_output=True,
        text=True,
        check=False,
        env=base,
    )
    assert proc.returncode == 0, proc.stderr
    report = next(line for line in proc.stderr.splitlines() if line.startswith("IMPORTED "))
    loaded = {m for m in report.split()[1:] if m.startswith("oneiric.cli.ctl_")}
    assert loaded == {"oneiric.cli.ctl_group", "oneiric.cli.ctl_read"}


def test_daemon_down_without_health_file_skips_the_health_reader(rundir: Path) -> None:
    code, _, heavy = heavy_imports("--socket", str(rundir / "oneiricd.sock"), "status")
    assert (code, heavy) == (3, [])
    code, _, heavy = heavy_imports("health", "--file", str(rundir / "none.json"))
    assert (code, heavy) == (3, [])


def test_health_file_paths_still_use_the_reader(rundir: Path) -> None:
    """The other side of the fast path: with a health file there, the reader is imported."""
    write_health(rundir / "health.json", status_doc(pid=os.getpid()))
    code, out, heavy = heavy_imports("--socket", str(rundir / "oneiricd.sock"), "status")
    assert code == 3
    assert "STALE" in out
    assert "msgspec" in heavy and "oneiric.runtime.health" in heavy


_CLICK_MAIN = "from oneiric.cli.oneiricctl import cli; cli(prog_name='oneiricctl')"


def test_help_runs_as_module_without_heavy_imports() -> None:
    env = {**_no_cov(), "COLUMNS": "60"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "oneiric.cli.oneiricctl", "drain", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("Usage: oneiricctl drain [OPTIONS]")
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]
    assert "oneiric.control.client" in imported  # the importtime report is really there
    assert [m for m in imported if is_heavy(m)] == []
    # the same text as when click measures the terminal itself (with shutil)
    by_click = subprocess.run(
        [sys.executable, "-c", _CLICK_MAIN, "drain", "-h"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert by_click.stdout == proc.stdout
    assert "SECONDS  How long the drain may wait for in-\n" in proc.stdout  # 58, not 78


@pytest.mark.parametrize("columns", ["", "40", "60", "79", "80", "120", "-3", "wide"])
def test_help_width_is_clicks_own_rule(monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    """help_width (no shutil) picks what click's HelpFormatter would: $COLUMNS, else the
    terminal, else 80; capped at 80, minus 2, at least 50."""
    import shutil

    if columns:
        monkeypatch.setenv("COLUMNS", columns)
    else:
        monkeypatch.delenv("COLUMNS", raising=False)
    expected = max(min(shutil.get_terminal_size().columns, 80) - 2, 50)
    assert oneiricctl.help_width(os.environ) == expected


def test_every_command_has_help_with_examples() -> None:
    runner = CliRunner()
    ctx = click.Context(cli)
    assert cli.list_commands(ctx)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None, name
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example" in result.stdout, name
        assert command.help, name


def test_main_entry_point() -> None:
    with pytest.raises(SystemExit) as exc:
        oneiricctl.main(["--version"])
    assert exc.value.code == 0


# --- pure helpers --------------------------------------------------------------------------------


def test_default_socket_and_health_file() -> None:
    assert oneiricctl.default_socket({}) == "/run/oneiric/oneiricd.sock"
    assert oneiricctl.default_socket({"RUNTIME_DIRECTORY": "/run/a:/run/b"}) == (
        "/run/a/oneiricd.sock"
    )
    env = {"ONEIRIC_SOCKET": "/s.sock", "RUNTIME_DIRECTORY": "/run/a"}
    assert oneiricctl.default_socket(env) == "/s.sock"
    assert oneiricctl.default_health_file("/run/a/oneiricd.sock", {}) == "/run/a/health.json"
    assert oneiricctl.default_health_file("x.sock", {}) == "./health.json"
    assert oneiricctl.default_health_file("/s", {"ONEIRIC_HEALTH_FILE": "/h"}) == "/h"


def test_time_rendering() -> None:
    now = 1_700_000_000.0
    assert render.ago(now - 3, now) == "3s ago"
    assert render.ago(now - 0.2, now) == "just now"
    assert render.ago(now + 90, now) == "in 1m30s"
    assert render.ago(None, now) == "never"
    assert render.ago("2023-11-14T22:13:17+00:00", now) == "3s ago"
    assert render.ago("2023-11-14T22:13:17", now) == "3s ago"  # naive means UTC
    assert render.ago("yesterday", now) == "never"
    assert render.ago(True, now) == "never"
    assert render.ago([1], now) == "never"
    assert render.duration(5) == "5s"
    assert render.duration(3 * 86400 + 7200) == "3d02h"
    assert render.seconds(None) == "-"
    assert render.millis("x") == "-"


def test_cells_and_mappings() -> None:
    assert render.cell(None) == "-"
    assert render.cell(False) == "no"
    assert render.cell({"a": [1]}) == '{"a":[1]}'
    assert render.mapping_lines(5) == ["5"]
    assert render.mapping_lines({}) == ["(empty)"]
    assert render.names([]) == "none"
    assert render.in_flight_summary(7) == "7"
    assert render.render_run(42, "task", "t") == "task/t: 42"
    assert render.render_ping({}) == "oneiricd - -, pid -, up ?"
    assert render.render_reload({"changed": []}) == "reloaded: 0 changed"
    assert render.drain_timeout_message(None, None) == "drain timed out; still in flight: nothing"


def test_status_rendering_of_events_and_sparse_documents() -> None:
    doc = {
        "state": "running",
        "components": [component("event", "audit", None, held_events=3, dropped_events=1)],
    }
    text = render.render_status(doc, now=NOW)
    assert text.splitlines()[0] == "oneiricd running"
    assert "event   audit  -         active  ready      0" in text
    assert "    events held: 3, dropped: 1" in text
    assert render.filter_components(doc, "event", "other")["components"] == []


def test_zero_reply_timeout_is_usage_error(fake: FakeDaemon) -> None:
    result = ctl(fake.path, "--timeout", "0", "ping")
    assert result.exit_code == 2
    assert "Invalid value for '--timeout' / '--reply-timeout': must be more than 0" in result.stderr
    assert fake.sent == []


def test_status_details_show_only_the_unusual() -> None:
    doc = status_doc(
        component(
            "service",
            "beat",
            "b",
            restarts=3,
            run_state="backoff",
            backoff_s=4.0,
            last_run_error="RuntimeError: boom",
        ),
        component("task", "t", "x", runs=5, failed_runs=1, skipped_runs=2),
        component("task", "fine", "x", runs=9),
    )
    text = render.render_status(doc, now=NOW)
    assert "service backoff: 3 restart(s), next try in 4s" in text
    assert "last run: RuntimeError: boom" in text
    assert "runs: 5, failed: 1, skipped: 2" in text
    assert "runs: 9" not in text


def test_status_note_says_who_paused_and_when() -> None:
    doc = status_doc(
        component(
            "adapter",
            "cache",
            "m",
            admin="paused",
            note="redis failover",
            intent_uid=UNKNOWN_UID,
            intent_at=NOW - 180,
            paused_by="key",
        ),
        component(
            "task", "t", "x", admin="drained", intent_uid=0, intent_at=NOW - 5, paused_by="domain"
        ),
        component("task", "u", "x", admin="active", intent_uid=None),
    )
    text = render.render_status(doc, now=NOW)
    # a uid the passwd database knows is told by name; one it does not, by number
    assert f"redis failover (uid {UNKNOWN_UID}, 3m00s ago)" in text
    assert f"({pwd.getpwuid(0).pw_name}, 5s ago, via the domain)" in text


def test_events_tell_who_by_name() -> None:
    entry = {"at": NOW, "kind": "intent", "key": "adapter/cache", "detail": {"uid": 0}}
    text = render.render_events([{**entry, "message": "pause adapter/cache by uid 0: redis"}])
    assert f"pause adapter/cache by {pwd.getpwuid(0).pw_name}: redis" in text
    stranger = {**entry, "detail": {"uid": UNKNOWN_UID}}
    text = render.render_events([{**stranger, "message": f"drain task/t by uid {UNKNOWN_UID}"}])
    assert f"drain task/t by uid {UNKNOWN_UID}" in text


def test_resume_render_names_the_wider_intent_still_holding_a_key() -> None:
    text = render.render_intent(
        {
            "affected": ["adapter/cache"],
            "state": "partly active",
            "still_held": {"adapter/cache": "paused by domain"},
        },
        "resumed",
        "adapter/cache",
    )
    assert text.splitlines() == [
        "resumed adapter/cache",
        "  adapter/cache is still paused by its domain intent: oneiricctl resume adapter",
    ]


def test_reload_reports_failed_swaps_and_exits_1(fake: FakeDaemon) -> None:
    fake.on(
        "reload",
        {
            "changed": ["adapter/cache"],
            "not_live": [],
            "outcomes": {"adapter/cache": "failed", "task/t": "parked"},
            "failed": {"adapter/cache": "start() raised RuntimeError: down"},
        },
    )
    result = ctl(fake.path, "reload")
    assert result.exit_code == 1
    assert "FAILED adapter/cache: start() raised RuntimeError: down" in result.stdout
    assert "parked until resumed: task/t" in result.stdout


def test_emit_with_a_full_queue_says_dropped_and_exits_1(fake: FakeDaemon) -> None:
    fake.on("emit", {"delivered": [], "held": [], "dropped": ["event/audit"]})
    result = ctl(fake.path, "emit", "user.created")
    assert result.exit_code == 1
    assert "DROPPED by event/audit: queue full" in result.stdout


def test_status_counts_a_crash_looping_service_as_failing(fake: FakeDaemon) -> None:
    fake.on("status", status_doc(component("service", "w", "p", run_state="backoff", restarts=7)))
    result = ctl(fake.path, "status")
    assert result.exit_code == 1
    assert "service/w (run() crashing, 7 restart(s))" in result.stdout


# --- --no-headers, colour ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["global", "after the command"])
def test_no_headers_leaves_out_the_header_line_of_tables(fake: FakeDaemon, where: str) -> None:
    fake.on("status", DOC)
    fake.on(
        "events",
        {"events": [{"seq": 1, "at": NOW, "kind": "swap", "key": "adapter/cache", "message": "m"}]},
    )
    for command in (["status"], ["events"]):
        args = ["--no-headers", *command] if where == "global" else [*command, "--no-headers"]
        with_headers = ctl(fake.path, *command).stdout.splitlines()
        without = ctl(fake.path, *args).stdout.splitlines()
        header = next(line for line in with_headers if line.startswith(("DOMAIN", "TIME")))
        assert header not in without, command
        assert [line for line in with_headers if line != header] == without, command


def test_no_headers_keeps_detail_lines_under_their_rows() -> None:
    render.LOOK.headers = False
    try:
        text = render.render_status(DOC, now=NOW)
    finally:
        render.LOOK.headers = True
    lines = text.splitlines()
    assert not any(line.startswith("DOMAIN") for line in lines)
    beat = next(i for i, line in enumerate(lines) if line.startswith("service"))
    assert lines[beat + 1].strip() == "error: restarted after crash"


FAILED_DOC = status_doc(
    component("adapter", "cache", "memory", admin="paused"),
    component("service", "beat", "heartbeat", lifecycle="failed"),
)
RED, YELLOW = "\x1b[31m", "\x1b[33m"


def on_a_terminal(*args: str, env: dict[str, str] | None = None) -> str:
    """Run oneiricctl with its stdout on a real pseudo-terminal; what it printed there."""
    import pty

    leader, follower = pty.openpty()
    base = {k: v for k, v in _no_cov().items() if k not in ("NO_COLOR", "TERM")}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "oneiric.cli.oneiricctl", *args],
            stdout=follower,
            stderr=subprocess.PIPE,
            env={**base, "TERM": "xterm", **(env or {})},
            timeout=60,
            check=False,
        )
    finally:
        os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.returncode in (0, 1), proc.stderr
    return b"".join(chunks).decode()


def test_colour_on_a_terminal_only(fake: FakeDaemon) -> None:
    fake.on("status", FAILED_DOC)
    shown = on_a_terminal("--socket", fake.path, "status")
    assert f"{RED}failed" in shown and f"{YELLOW}paused" in shown
    plain = re.sub(r"\x1b\[[0-9;]*m", "", shown).replace("\r\n", "\n")
    assert re.search(r"service +beat +heartbeat +active +failed", plain)
    # NO_COLOR (https://no-color.org), --json and a pipe: never
    assert "\x1b[" not in on_a_terminal("--socket", fake.path, "status", env={"NO_COLOR": "1"})
    assert "\x1b[" not in on_a_terminal("--socket", fake.path, "--json", "status")
    assert "\x1b[" not in on_a_terminal("--socket", fake.path, "status", "--json")
    piped = subprocess.run(
        [sys.executable, "-m", "oneiric.cli.oneiricctl", "--socket", fake.path, "status"],
        capture_output=True,
        text=True,
        env={**_no_cov(), "TERM": "xterm"},
        check=False,
    )
    assert "failed" in piped.stdout and "\x1b[" not in piped.stdout
    # columns stay aligned: once the escapes are gone, the table is the piped one
    table = piped.stdout[piped.stdout.index("DOMAIN") :]
    assert plain[plain.index("DOMAIN") :] == table


def test_no_color_set_but_empty_still_colours(fake: FakeDaemon) -> None:
    """no-color.org: NO_COLOR counts only when it is set to a non-empty string."""
    fake.on("status", FAILED_DOC)
    assert f"{RED}failed" in on_a_terminal("--socket", fake.path, "status", env={"NO_COLOR": ""})
