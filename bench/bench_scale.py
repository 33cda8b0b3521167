"""Scale: one real oneiricd with 10, 1,000 and 10,000 adapter keys (two MemoryCache candidates
each, as the issue measured), and how each cost grows with the number of keys.

Per size: spawn → ``READY=1`` on the notify socket; RSS at READY; ``oneiricctl --json status``
wall time and bytes; a one-key config change (rename-save flipping ``k0``'s selection) → the new
provider serving, sampled with ``status adapter k0`` on its own connection; ``ping`` latency
from a separate process pinging back to back during that change; ``reload`` of an unchanged
config. Growth is the 10k figure over the 1k figure.

    python bench/bench_scale.py [--sizes 10,1000,10000]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _daemon import BIN, Line, Spawned, adapters_config, pct, rename_save, rss_mib

SIZES = (10, 1_000, 10_000)
#: sampling interval of the "is the new provider serving yet" probe; it bounds the resolution
#: of that figure (a probe is one cheap status request, not a wait for an event)
PROBE_S = 0.001

_PINGER = r"""
import json, socket, sys, threading, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(sys.argv[1])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
lat, buf = [], b""
print("go", flush=True)
while not stop.is_set():
    t0 = time.perf_counter(); s.sendall(b'{"id":1,"op":"ping"}\n')
    while b"\n" not in buf:
        buf += s.recv(65536)
    _, _, buf = buf.partition(b"\n")
    lat.append((time.perf_counter() - t0) * 1000)
print(json.dumps(lat), flush=True)
"""


def _status_json(sock: str, n: int) -> tuple[float, int]:
    """Median wall (ms) and bytes of ``oneiricctl --json status`` as an operator runs it."""
    cmd = [str(BIN / "oneiricctl"), "--socket", sock, "--json", "status"]
    walls, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, check=False)
        walls.append((time.perf_counter() - t0) * 1000)
        size = len(out.stdout)
        if out.returncode not in (0, 1):
            raise RuntimeError(out.stderr.decode())
    return statistics.median(walls), size


def _serving(line: Line) -> str:
    doc = line.call("status", domain="adapter", key="k0")
    return str(doc["components"][0]["provider"])


def _one_key_change(d: Spawned, n: int, rounds: int) -> tuple[list[float], list[float]]:
    """Rename-save flipping k0; ms from the save returning to k0 serving the other provider,
    and the ping latencies seen meanwhile (by another process, on its own connection)."""
    probe = Line(d.socket)
    changes: list[float] = []
    pings: list[float] = []
    try:
        for i in range(rounds):
            want = "b" if i % 2 == 0 else "a"
            text = adapters_config(n, flip=0 if want == "b" else None)
            pinger = subprocess.Popen(
                [sys.executable, "-c", _PINGER, d.socket],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert pinger.stdout is not None and pinger.stdin is not None
            pinger.stdout.readline()  # connected and pinging
            rename_save(d.config, text)
            t0 = time.perf_counter()
            deadline = t0 + 60
            while _serving(probe) != want:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"k0 never served {want!r} after the save")
                time.sleep(PROBE_S)
            changes.append((time.perf_counter() - t0) * 1000)
            # the reload goes on after the swap (health file, status line): keep pinging a
            # little longer, then stop
            probe.call("reload")  # also a barrier: the watcher's own reload has finished
            pinger.stdin.write("stop\n")
            pinger.stdin.flush()
            pings += json.loads(pinger.stdout.readline())
            pinger.wait()
    finally:
        probe.close()
    return changes, pings


def _unchanged_reload(d: Spawned, rounds: int) -> list[float]:
    line = Line(d.socket)
    out = []
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            result = line.call("reload")
            out.append((time.perf_counter() - t0) * 1000)
            if result["changed"]:
                raise RuntimeError(f"an unchanged config reported changes: {result['changed']}")
    finally:
        line.close()
    return out


def measure(n: int) -> dict[str, Any]:
    rounds = 6 if n >= 10_000 else 10
    with Spawned(adapters_config(n)) as d:
        fig: dict[str, Any] = {"ready_s": d.ready_s, "rss_mib": rss_mib(d.pid)}
        fig["status_ms"], fig["status_bytes"] = _status_json(d.socket, 5)
        changes, pings = _one_key_change(d, n, rounds)
        fig["change_ms"] = statistics.median(changes)
        fig["change_p99_ms"] = pct(changes, 0.99)
        fig["ping_p99_ms"] = pct(pings, 0.99)
        fig["ping_max_ms"] = max(pings)
        fig["unchanged_reload_ms"] = statistics.median(_unchanged_reload(d, 5))
        fig["rss_after_mib"] = rss_mib(d.pid)
    print(f"# scale n={n}: {json.dumps(fig)}", file=sys.stderr)
    return fig


_ROWS: list[tuple[str, str, str, str, float | None, str | None]] = [
    # key, name, unit, goal text, goal at 10k (less than), growth goal
    ("ready_s", "spawn → READY", "s", "10k < 1.5 s; growth ≤ ~10×", 1.5, "≤10"),
    ("rss_mib", "RSS at READY", "MiB", "10k < 150 MiB; growth ≤ ~10×", 150, "≤10"),
    ("status_ms", "oneiricctl --json status wall", "ms", "10k < 100 ms", 100, None),
    ("status_bytes", "oneiricctl --json status bytes", "B", "", None, None),
    ("change_ms", "one-key change → serving (p50)", "ms", "10k < 50 ms; flat", 50, "≤2"),
    ("ping_p99_ms", "ping p99 during that change", "ms", "10k < 10 ms", 10, None),
    ("unchanged_reload_ms", "reload of an unchanged config", "ms", "10k < 200 ms", 200, None),
    ("rss_after_mib", "RSS after the changes", "MiB", "", None, None),
]


def rows_of(figs: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    big = max(figs)
    for key, name, unit, goal, limit, growth_goal in _ROWS:
        by_n = {n: f[key] for n, f in figs.items()}
        growth = by_n[big] / by_n[1_000] if by_n.get(1_000) else None
        row: dict[str, Any] = {
            "name": f"{name} @ {big:,}",
            "unit": unit,
            "value": by_n[big],
            "by_n": {str(n): v for n, v in by_n.items()},
            "sizes": " / ".join(_short(v) for v in by_n.values()),
            "growth": round(growth, 2) if growth is not None else None,
        }
        if goal:
            row["goal"] = goal
            met = limit is None or by_n[big] < limit
            if growth_goal is not None and growth is not None:
                met = met and growth <= float(growth_goal[2:])
            row["met"] = met if big >= 10_000 else None
        rows.append(row)
    return rows


def _short(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    return f"{v:.3g}"


def run(sizes: tuple[int, ...] = SIZES) -> list[dict[str, Any]]:
    return rows_of({n: measure(n) for n in sizes})


if __name__ == "__main__":
    import argparse

    from run import print_table

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = ap.parse_args()
    print_table(run(tuple(int(s) for s in args.sizes.split(","))))
