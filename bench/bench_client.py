"""The operator's client, side by side with what users would pick instead: ``oneiricctl status``
against a live oneiricd, ``supervisorctl status`` against a live supervisord, and the bare
interpreter, interleaved round-robin (one of each per round) so a machine whose speed drifts
moves all three alike. Ratios are taken against the bare interpreter of the same run.

supervisor comes from the ``bench`` extra (``make bench`` installs it into the venv).
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _daemon import BIN, Spawned

ROUNDS = 30

# Installed code runs from bytecode (the .deb byte-compiles it); measure the same way even
# when the calling shell sets PYTHONDONTWRITEBYTECODE. The first run writes the .pyc files.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

ONE = """
[daemon]
health_interval = "1h"
[[component]]
domain = "adapter"
key = "cache"
provider = "memory"
factory = "oneiric.builtin.cache:MemoryCache"
"""

_SUPERVISORD_CONF = """
[unix_http_server]
file = {dir}/supervisor.sock
[supervisord]
logfile = {dir}/supervisord.log
pidfile = {dir}/supervisord.pid
nodaemon = true
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl = unix://{dir}/supervisor.sock
[program:idle]
command = /bin/sleep 86400
startsecs = 0
"""


class Supervisord:
    def __init__(self) -> None:
        exe = BIN / "supervisord"
        if not exe.exists():
            raise RuntimeError(
                "supervisord is not installed in this environment: run 'make bench' (it "
                "installs the bench extra), or pip install -e '.[bench]'"
            )
        self.dir = Path(tempfile.mkdtemp(prefix="onsv", dir="/tmp"))
        self.conf = self.dir / "supervisord.conf"
        self.conf.write_text(_SUPERVISORD_CONF.format(dir=self.dir))
        self.proc = subprocess.Popen(
            [str(exe), "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.ctl = [str(BIN / "supervisorctl"), "-c", str(self.conf), "status"]
        # supervisord has no readiness signal: its own client says when it answers (exit 0
        # once the program is RUNNING; 3 = not all running yet, 4 = no socket yet)
        deadline = time.monotonic() + 60
        while subprocess.run(self.ctl, capture_output=True, check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("supervisord did not come up")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def run() -> list[dict[str, Any]]:
    sup = Supervisord()
    d = Spawned(ONE).start()
    try:
        cmds = {
            "bare": [sys.executable, "-c", "pass"],
            "oneiricctl": [str(BIN / "oneiricctl"), "--socket", d.socket, "status"],
            "supervisorctl": sup.ctl,
        }
        for cmd in cmds.values():  # warm: bytecode written, page cache filled
            subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, env=_ENV)
        walls: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(ROUNDS):
            for name, cmd in cmds.items():
                t0 = time.perf_counter()
                subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, env=_ENV)
                walls[name].append((time.perf_counter() - t0) * 1000)
    finally:
        d.stop()
        sup.stop()
    med = {k: statistics.median(v) for k, v in walls.items()}
    ratio = med["oneiricctl"] / med["bare"]
    # per-round ratios too: a pair measured back to back is the fairest comparison
    paired = statistics.median(
        o / b for o, b in zip(walls["oneiricctl"], walls["bare"], strict=True)
    )
    return [
        {"name": "bare interpreter (python -c pass)", "unit": "ms", "p50": med["bare"]},
        {
            "name": "oneiricctl status",
            "unit": "ms",
            "p50": med["oneiricctl"],
            "value": f"{ratio:.2f}× bare (paired {paired:.2f}×)",
            "ratio_bare": round(ratio, 3),
            "goal": "≤ 2.5× bare",
            "met": ratio <= 2.5,
        },
        {
            "name": "supervisorctl status",
            "unit": "ms",
            "p50": med["supervisorctl"],
            "value": f"{med['supervisorctl'] / med['bare']:.2f}× bare",
            "ratio_bare": round(med["supervisorctl"] / med["bare"], 3),
        },
        {
            "name": "oneiricctl / supervisorctl",
            "unit": "×",
            "value": round(med["oneiricctl"] / med["supervisorctl"], 3),
            "goal": "≈ 0.35×",
        },
    ]


if __name__ == "__main__":
    from run import print_table

    print_table(run())
