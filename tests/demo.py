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
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


class Log:
    """The daemon's log, read from its pipe by a thread as it is written (terminal 1)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        with pipe:
            for raw in pipe:
                with self.changed:
                    self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                    self.changed.notify_all()

    def text(self) -> str:
        with self.changed:
            return "\n".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        """Until a line containing ``needle`` was logged (woken by each new line)."""
        with self.changed:
            found = self.changed.wait_for(
                lambda: any(needle in line for line in self.lines), timeout=timeout
            )
            assert found, f"oneiricd never logged {needle!r}:\n" + "\n".join(self.lines)


@dataclass
class Demo:
    root: Path  # stands in for the clone: var/run and var/state live here
    socket: str
    env: dict[str, str]  # what terminal 2 of the walkthrough exports
    proc: subprocess.Popen[bytes]
    log: Log

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop it (SIGINT: what Ctrl-C in its terminal does); its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        status = self.proc.wait(timeout=60)
        self.log.thread.join(timeout=60)  # the whole log, to its last line
        return status

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
    proc = subprocess.Popen(
        [str(VENV_BIN / "oneiricd"), "--log-level", "info"],
        env=daemon_env,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    log = Log(proc.stdout)
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
