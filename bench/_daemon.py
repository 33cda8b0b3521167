"""Shared bench plumbing: a real ``oneiricd`` subprocess on a private runtime directory, its
READY time, its memory and CPU from /proc, and a small asyncio-free line client.

Nothing here sleeps to wait for something: READY comes from the systemd notify socket the
daemon writes to, replies from the control socket.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in ns (schedstat: exact, unlike ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return total


def adapters_config(
    n: int, *, flip: int | None = None, watch: bool = True, select_all: str | None = None
) -> str:
    """``n`` adapter keys, two MemoryCache candidates each (``a`` ranked first); key ``k<flip>``
    selects ``b`` instead, which is the one-key change the scale bench makes; ``select_all``
    selects that provider for every key (a reload that swaps them all)."""
    out = [
        "[daemon]",
        'health_interval = "1h"',
        'drain_timeout = "5s"',
        'stop_timeout = "5s"',
        f"watch = {'true' if watch else 'false'}",
    ]
    for i in range(n):
        for prov, prio in (("a", 10), ("b", 0)):
            out += [
                "[[component]]",
                'domain = "adapter"',
                f'key = "k{i}"',
                f'provider = "{prov}"',
                'factory = "oneiric.builtin.cache:MemoryCache"',
                f"priority = {prio}",
            ]
    if flip is not None:
        out += ["[selections.adapter]", f'k{flip} = "b"']
    elif select_all is not None:
        out += ["[selections.adapter]", *(f'k{i} = "{select_all}"' for i in range(n))]
    return "\n".join(out) + "\n"


def rename_save(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Spawned:
    """A real oneiricd in its own directory: config in ``etc/``, socket, state and health file
    beside it (as deployed: config edits are not runtime-directory events)."""

    def __init__(self, config: str, *, pythonpath: str = str(HERE)) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="onb", dir="/tmp"))
        (self.dir / "etc").mkdir()
        self.config = self.dir / "etc" / "oneiricd.toml"
        self.config.write_text(config)
        self.socket = str(self.dir / "oneiricd.sock")
        self.pythonpath = pythonpath
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s = float("nan")

    def start(self, timeout: float = 120) -> Spawned:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(self.dir / "notify"))
        env = dict(
            os.environ,
            PYTHONPATH=self.pythonpath,
            NOTIFY_SOCKET=str(self.dir / "notify"),
            ONEIRIC_CONFIG=str(self.config),
            RUNTIME_DIRECTORY=str(self.dir),
            STATE_DIRECTORY=str(self.dir / "state"),
        )
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([str(BIN / "oneiricd"), "--log-level", "warning"], env=env)
        notify.settimeout(timeout)
        try:
            while b"READY=1" not in notify.recv(65536):
                pass
        finally:
            notify.close()
        self.ready_s = time.perf_counter() - t0
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Spawned:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Line:
    """One blocking control connection: request, wait for the final reply line."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.n = 0

    def call_raw(self, op: str, **args: Any) -> bytes:
        self.n += 1
        self.sock.sendall(json.dumps({"id": self.n, "op": op, **args}).encode() + b"\n")
        while True:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("daemon closed the connection")
                self.buf += chunk
            line, _, self.buf = self.buf.partition(b"\n")
            if b'"event":' not in line[:40]:  # stream items come before the final reply
                return line

    def call(self, op: str, **args: Any) -> Any:
        reply = json.loads(self.call_raw(op, **args))
        if not reply.get("ok"):
            raise RuntimeError(f"{op}: {reply}")
        return reply.get("result")

    def close(self) -> None:
        self.sock.close()
