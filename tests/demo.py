"""The demo of ``make run`` (examples/oneiricd.toml, examples/hello.py) as a real oneiricd
process in a temporary ``var/``, for the tests that hold the docs to the real output."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@dataclass
class Demo:
    root: Path  # stands in for the clone: var/run and var/state live here
    socket: str
    env: dict[str, str]  # what terminal 2 of the walkthrough exports
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop it (SIGINT: what Ctrl-C in its terminal does); its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "oneiricctl"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@contextmanager
def demo_daemon() -> Iterator[Demo]:
    """``make run`` in a fresh temporary directory; yields once oneiricd said READY=1."""
    root = Path(tempfile.mkdtemp(prefix="demo", dir="/tmp"))
    (root / "var" / "run").mkdir(parents=True)
    (root / "var" / "state").mkdir()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"\0oneiric-demo-{os.getpid()}-{id(notify)}"
    notify.bind(name)
    notify.settimeout(60)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONEIRIC_", "JOURNAL_"))}
    daemon_env = dict(
        env,
        ONEIRIC_CONFIG=str(REPO / "examples" / "oneiricd.toml"),
        RUNTIME_DIRECTORY=str(root / "var" / "run"),
        STATE_DIRECTORY=str(root / "var" / "state"),
        PYTHONPATH=str(REPO / "examples"),
        NOTIFY_SOCKET="@" + name[1:],
    )
    log = root / "oneiricd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "oneiricd"), "--log-level", "info"],
            env=daemon_env,
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    sock = str(root / "var" / "run" / "oneiricd.sock")
    ctl_env = dict(
        env,
        ONEIRIC_SOCKET=sock,
        PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        PYTHONUNBUFFERED="1",  # stdout and stderr interleave as on a terminal
        COLUMNS="200",
    )
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
        yield Demo(root, sock, ctl_env, proc, log)
    finally:
        notify.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            shutil.rmtree(root, ignore_errors=True)
