"""Issue 12 regressions that need oneiricd as a real process: a permissive umask and
hijackable directories (defect 7), a crash during a failing swap (8), ``--daemonize`` with a
stale pidfile and failures after the fork (9), component threads that never end (11)."""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from test_daemon_process import ONEIRICCTL, ONEIRICD, Proc, env_for, spawn

HEAD = """
[daemon]
drain_timeout = "2s"
stop_timeout = "{stop}"
activation_timeout = "60s"
health_interval = "1h"
watch = false
"""

CACHE = """
[[component]]
domain = "adapter"
key = "cache"
provider = "a"
factory = "components:Thing"
settings = { name = "a" }
"""


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="on", dir="/tmp"))
    os.chmod(d, 0o755)
    return d


def ctl(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ONEIRICCTL, "--socket", sock, "--timeout", "60", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def finish(p: Proc) -> None:
    if p.proc.poll() is None:
        p.proc.kill()
        p.proc.wait()
    p.notify.close()


# -- defect 7: permissive umask, hijackable directories ---------------------------------------


def writable_by_others(path: Path) -> bool:
    return bool(stat.S_IMODE(path.stat().st_mode) & 0o022)


def test_a_permissive_umask_creates_nothing_others_may_write(workdir: Path) -> None:
    (workdir / "oneiricd.toml").write_text(HEAD.format(stop="5s") + CACHE)
    run, state = workdir / "run" / "sub", workdir / "state" / "deep"
    old = os.umask(0)
    try:
        p = spawn(
            workdir,
            env_extra={"RUNTIME_DIRECTORY": str(run), "STATE_DIRECTORY": str(state)},
        )
    finally:
        os.umask(old)
    try:
        p.expect("READY=1")
        sock = str(run / "oneiricd.sock")
        assert ctl(sock, "pause", "adapter", "cache").returncode == 0
        made = [run.parent, run, state.parent, state, *state.iterdir(), run / "health.json"]
        assert len(made) > 5  # the intent's files are there
        assert [m for m in made if writable_by_others(m)] == [], [
            (str(m), oct(m.stat().st_mode)) for m in made
        ]
        assert p.stop() == 0
    finally:
        finish(p)


@pytest.mark.parametrize("which", ["run", "state", "ancestor"])
def test_a_directory_others_may_write_is_refused(workdir: Path, which: str) -> None:
    (workdir / "oneiricd.toml").write_text(HEAD.format(stop="5s") + CACHE)
    shared = workdir / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # no sticky bit: anyone may replace what is inside
    env = {
        "run": {"RUNTIME_DIRECTORY": str(shared)},
        "state": {"STATE_DIRECTORY": str(shared)},
        "ancestor": {"STATE_DIRECTORY": str(shared / "x" / "state")},
    }[which]
    p = spawn(workdir, env_extra=env)
    try:
        try:
            code = p.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"oneiricd started in a world-writable directory ({which})")
        err = p.stderr_text()
        assert code == 78, err
        assert f"{shared} is not safe" in err and "writable by every user" in err, err
    finally:
        finish(p)


def test_sticky_shared_directories_are_fine(workdir: Path) -> None:
    (workdir / "oneiricd.toml").write_text(HEAD.format(stop="5s") + CACHE)
    shared = workdir / "tmpish"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp: others cannot replace our entries
    p = spawn(workdir, env_extra={"STATE_DIRECTORY": str(shared / "state")})
    try:
        p.expect("READY=1")
        assert p.stop() == 0
    finally:
        finish(p)


# -- defect 8: a crash during a failing swap --------------------------------------------------


def wait_fifo(fd: int, timeout: float = 60) -> bytes:
    """Block until the FIFO ``fd`` has data (a component wrote to it); fail after ``timeout``."""
    ready, _, _ = select.select([fd], [], [], timeout)
    assert ready, "the component never reported"
    return os.read(fd, 64)


def test_a_crash_during_a_failing_swap_restarts_on_the_previous_provider(workdir: Path) -> None:
    flag, fifo = workdir / "hang", workdir / "mark.fifo"
    os.mkfifo(fifo)
    (workdir / "oneiricd.toml").write_text(
        HEAD.format(stop="5s")
        + CACHE
        + f"""
[[component]]
domain = "adapter"
key = "cache"
provider = "b"
factory = "hostile_components:HangsWhileFlagged"
settings = {{ flag = "{flag}", mark = "{fifo}" }}

[selections.adapter]
cache = "a"
"""
    )
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    p = spawn(workdir)
    swap: subprocess.Popen[str] | None = None
    try:
        p.expect("READY=1")
        flag.touch()
        swap = subprocess.Popen(
            [ONEIRICCTL, "--socket", p.socket, "--timeout", "120", "swap", "adapter", "cache", "b"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_fifo(reader)  # b is starting: the swap is in flight
        p.proc.kill()  # crash mid-swap
        p.proc.wait(timeout=30)
        assert swap.wait(timeout=60) != 0  # the operator was never told it worked
    finally:
        finish(p)
        if swap is not None and swap.poll() is None:
            swap.kill()
    flag.unlink()  # from now on b fails at once: a restart on b would leave nothing serving
    again = spawn(workdir)
    try:
        again.expect("READY=1")
        out = ctl(again.socket, "--json", "status", "adapter", "cache")
        [comp] = json.loads(out.stdout)["components"]
        assert (comp["provider"], comp["lifecycle"]) == ("a", "ready"), comp
        assert again.stop() == 0
    finally:
        finish(again)
        os.close(reader)


# -- defect 9: --daemonize ---------------------------------------------------------------------


def gone(pid: int, timeout: float = 60) -> None:
    """Wait until process ``pid`` has exited (pidfd: readable at exit)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        assert ready, f"pid {pid} did not exit"
    finally:
        os.close(pidfd)


def test_daemonize_takes_over_a_stale_pidfile_and_reports_start_up_failures(
    workdir: Path,
) -> None:
    (workdir / "oneiricd.toml").write_text(HEAD.format(stop="5s") + CACHE)
    env = env_for(workdir, "")
    pidfile, log = workdir / "oneiricd.pid", workdir / "oneiricd.log"
    cmd = [ONEIRICD, "--daemonize", "--pidfile", str(pidfile), "--logfile", str(log)]

    def start() -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90, check=False)

    sock = str(workdir / "oneiricd.sock")
    first = start()
    assert first.returncode == 0, (first.stderr, log.read_text())
    pid = int(pidfile.read_text())
    assert json.loads(ctl(sock, "--json", "ping").stdout)["pid"] == pid  # READY when it returned
    os.kill(pid, signal.SIGKILL)
    gone(pid)
    assert pidfile.exists()  # stale: its lock died with the process

    second = start()
    assert second.returncode == 0, (second.stderr, log.read_text())
    pid2 = int(pidfile.read_text())
    assert pid2 != pid and json.loads(ctl(sock, "--json", "ping").stdout)["pid"] == pid2
    assert "stale pidfile" in second.stderr
    locked = start()  # a live daemon holds it (the socket answers too): 75 reaches the caller
    assert locked.returncode == 75, locked.stderr
    os.kill(pid2, signal.SIGTERM)
    gone(pid2)
    assert not pidfile.exists()

    (workdir / "state" / "intent.json").write_bytes(b"{not json")  # corrupt: 78, after the fork
    broken = start()
    assert broken.returncode == 78, (broken.returncode, broken.stderr, log.read_text())
    assert "corrupt" in log.read_text()


# -- defect 11: threads that never end --------------------------------------------------------


def test_sigterm_finishes_past_component_threads_and_exits_non_zero(workdir: Path) -> None:
    fifo = workdir / "run.fifo"
    os.mkfifo(fifo)
    (workdir / "oneiricd.toml").write_text(
        HEAD.format(stop="1s")
        + f"""
[[component]]
domain = "service"
key = "stubborn"
provider = "x"
factory = "hostile_components:StubbornService"
settings = {{ mark = "{fifo}" }}

[[component]]
domain = "adapter"
key = "leaker"
provider = "x"
factory = "hostile_components:ThreadLeaker"
"""
    )
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    p = spawn(workdir)
    try:
        p.expect("READY=1")
        wait_fifo(reader)  # the plain run() is blocking its worker thread
        p.proc.send_signal(signal.SIGTERM)
        try:
            code = p.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM never finished: a component thread holds the daemon")
        err = p.stderr_text()
        assert code == 1, err
        assert "service/stubborn: StubbornService.run()" in err, err
        assert "leaked-by-component" in err, err
        assert json.loads((workdir / "health.json").read_text())["state"] == "stopped"
        assert not os.path.exists(p.socket)
    finally:
        finish(p)
        os.close(reader)


# -- defect 4: a client that stops reading cannot hold up SIGTERM -----------------------------


def test_a_client_that_stops_reading_cannot_hold_up_sigterm(workdir: Path) -> None:
    # idle_timeout of an hour: before the fix each queued reply waited that long
    (workdir / "oneiricd.toml").write_text(
        HEAD.format(stop="2s").replace("watch = false", 'watch = false\nidle_timeout = "1h"')
        + CACHE
    )
    p = spawn(workdir)
    p.expect("READY=1")
    peers = Path(__file__).with_name("hostile_peers.py")
    flood = subprocess.Popen(
        [sys.executable, str(peers), "--uid", "0", p.socket, "noread", "20000", "status"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert flood.stdout is not None
        sent = json.loads(flood.stdout.readline())["sent"]
        assert sent > 0
        p.proc.send_signal(signal.SIGTERM)
        try:
            code = p.proc.wait(timeout=45)  # stop_timeout 2s: generous for a loaded machine
        except subprocess.TimeoutExpired:
            pytest.fail("a client that stopped reading held SIGTERM up")
        assert code == 0, p.stderr_text()
        assert json.loads((workdir / "health.json").read_text())["state"] == "stopped"
        assert not os.path.exists(p.socket)
    finally:
        finish(p)
        flood.kill()
        flood.wait()
