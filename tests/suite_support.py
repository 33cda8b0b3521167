"""What the standing suites of issue 12 share: scale (fast in ``make test``, long in
``make soak``), a real oneiricd process with its notify socket followed in a thread (watchdog
gaps), peak RSS, and the figures each suite prints and records.

``ONEIRIC_SOAK=1`` selects the long variants; ``ONEIRIC_FIGURES=PATH`` appends each suite's
figures to PATH as one JSON object per line (``make soak`` writes bench/reliability.jsonl,
which docs/reliability.md quotes).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOAK = os.environ.get("ONEIRIC_SOAK") == "1"
VENV_BIN = Path(sys.executable).parent
TESTS = Path(__file__).parent
ONEIRICD = str(VENV_BIN / "oneiricd")


def scale(fast: int, soak: int) -> int:
    return soak if SOAK else fast


def record(suite: str, figures: dict[str, Any]) -> None:
    """Print the suite's figures and append them to $ONEIRIC_FIGURES (if set)."""
    figures = {"suite": suite, "soak": SOAK, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}
    print(f"\nFIGURES {json.dumps(figures, sort_keys=True)}")
    out = os.environ.get("ONEIRIC_FIGURES")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps(figures, sort_keys=True) + "\n")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Daemon:
    """A real oneiricd under test: its directory, process and notify messages (read by a
    thread, timestamped, so watchdog gaps can be measured)."""

    dir: Path
    proc: subprocess.Popen[bytes]
    notify: socket.socket
    messages: list[tuple[float, str]] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def socket(self) -> str:
        return str(self.dir / "oneiricd.sock")

    @property
    def health_file(self) -> Path:
        return self.dir / "health.json"

    def _follow(self) -> None:
        while True:
            try:
                data = self.notify.recv(4096)
            except OSError:
                return
            text = data.decode(errors="replace")
            with self.changed:
                self.messages.append((time.monotonic(), text))
                self.changed.notify_all()
            if "READY=1" in text:
                self.ready.set()

    def wait_ready(self, timeout: float = 60) -> None:
        if not self.ready.wait(timeout):
            raise AssertionError(f"oneiricd never became ready: {self.stderr()}")

    def watchdog_gaps(self, since: float = 0.0) -> list[float]:
        stamps = [t for t, m in self.messages if "WATCHDOG=1" in m and t >= since]
        return [b - a for a, b in itertools.pairwise(stamps)]

    def peak_rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def stderr(self) -> str:
        """The daemon's log so far (a file: a pipe nobody reads would block a busy daemon)."""
        try:
            return (self.dir / "stderr.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)


def workdir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="on", dir="/tmp"))
    os.chmod(d, 0o755)
    return d


def start(d: Path, *, watchdog_usec: int | None = None) -> Daemon:
    """Start oneiricd on ``d/oneiricd.toml`` (socket, health file and state in ``d``)."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"\0oneiric-suite-{os.getpid()}-{id(notify)}"
    notify.bind(name)
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(TESTS),
        NOTIFY_SOCKET="@" + name[1:],
        ONEIRIC_CONFIG=str(d / "oneiricd.toml"),
        RUNTIME_DIRECTORY=str(d),
        STATE_DIRECTORY=str(d / "state"),
    )
    env.pop("JOURNAL_STREAM", None)
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    with open(d / "stderr.log", "ab") as err:
        proc = subprocess.Popen([ONEIRICD], env=env, stdout=subprocess.DEVNULL, stderr=err)
    daemon = Daemon(d, proc, notify)
    threading.Thread(target=daemon._follow, daemon=True).start()
    return daemon


@contextmanager
def running(d: Path, **kw: Any) -> Iterator[Daemon]:
    daemon = start(d, **kw)
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
        daemon.notify.close()


@contextmanager
def fresh_dir() -> Iterator[Path]:
    d = workdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
