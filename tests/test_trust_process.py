"""Issue 12 regressions that need oneiricd as a real process: a permissive umask and
hijackable directories (defect 7), a crash during a failing swap (8), ``--daemonize`` with a
stale pidfile and failures after the fork (9), component threads that never end (11)."""

from __future__ import annotations

import json
import os
import select
import stat
import subprocess
from pathlib import Path

import pytest

from test_daemon_process import ONEIRICCTL, Proc, spawn

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
