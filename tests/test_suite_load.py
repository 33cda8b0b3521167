"""Standing suite (issue 12): load. 256 concurrent clients — 255 in 8 processes, plus one that
keeps swapping providers of some keys — mix ``status`` (whole and per key) with pause /
resume for a while (256 is the daemon's connection cap: every one of them is served).
Asserted: zero errors, every client made progress, the daemon stops cleanly. Printed and
recorded: requests, throughput, p50 / p99 / max latency, peak RSS.

``make test`` runs it for 2 s; ``make soak`` (ONEIRIC_SOAK=1) for a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from oneiric.control.client import ControlClient
from suite_support import fresh_dir, percentile, record, running, scale

KEYS = 32
PROCESSES = 8
THREADS = 32
LOAD = Path(__file__).with_name("load_client.py")


def config() -> str:
    out = [
        """
[daemon]
drain_timeout = "2s"
stop_timeout = "5s"
health_interval = "5s"
watch = false
"""
    ]
    for k in range(KEYS):
        for provider, prio in (("a", 1), ("b", 0)):
            out.append(
                f"""
[[component]]
domain = "adapter"
key = "k{k}"
provider = "{provider}"
factory = "oneiric.builtin.cache:MemoryCache"
priority = {prio}
"""
            )
    return "".join(out)


def swapper(sock: str, stop: threading.Event, swaps: list[int], errors: list[str]) -> None:
    n = 0
    with ControlClient(sock, timeout=60) as c:
        while not stop.is_set():
            key = f"k{n % 4}"
            provider = "b" if (n // 4) % 2 == 0 else "a"
            try:
                c.call("swap", domain="adapter", key=key, provider=provider)
                swaps[0] += 1
            except Exception as exc:
                errors.append(f"swap: {exc}")
            n += 1


def test_256_clients_mixing_status_and_mutations_while_components_swap() -> None:
    duration = scale(2, 60)
    with fresh_dir() as d:
        (d / "oneiricd.toml").write_text(config())
        with running(d) as daemon:
            stop = threading.Event()
            swaps, swap_errors = [0], []
            swapping = threading.Thread(
                target=swapper, args=(daemon.socket, stop, swaps, swap_errors)
            )
            swapping.start()
            began = time.monotonic()
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        str(LOAD),
                        daemon.socket,
                        str(THREADS - (1 if i == 0 else 0)),  # + the swapper: 256
                        str(duration),
                        str(KEYS),
                        str(d / f"lat{i}.txt"),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for i in range(PROCESSES)
            ]
            reports = []
            for p in procs:
                out, err = p.communicate(timeout=duration + 300)
                assert p.returncode == 0, err
                reports.append(json.loads(out))
            elapsed = time.monotonic() - began
            stop.set()
            swapping.join(120)
            rss = daemon.peak_rss_kib()
            assert daemon.stop() == 0, daemon.stderr()[-3000:]
            latencies = [
                float(x) for i in range(PROCESSES) for x in (d / f"lat{i}.txt").read_text().split()
            ]
    errors = sum(r["errors"] for r in reports)
    assert errors == 0, [r["first_errors"] for r in reports]
    assert swap_errors == [], swap_errors[:5]
    assert all(r["status"] + r["mutation"] > 0 for r in reports)
    assert swaps[0] > 0
    total = len(latencies)
    record(
        "load",
        {
            "clients": PROCESSES * THREADS,
            "duration_s": duration,
            "requests": total,
            "status": sum(r["status"] for r in reports),
            "mutations": sum(r["mutation"] for r in reports),
            "swaps": swaps[0],
            "errors": errors,
            "requests_per_s": round(total / elapsed),
            "p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "max_ms": round(max(latencies) * 1000, 2),
            "peak_rss_mib": round(rss / 1024, 1),
        },
    )
