"""Scale: one real oneiricd with 10, 1,000 and 10,000 adapter keys (two MemoryCache candidates
each, as the issue measured), and how each cost grows with the number of keys.

Per size: spawn → ``READY=1`` on the notify socket; RSS at READY; ``oneiricctl --json status``
wall time and bytes; a one-key config change (rename-save flipping ``k0``'s selection) → the new
provider serving, sampled with ``status adapter k0`` on its own connection; ``ping`` latency
from a separate process pinging back to back during that change; ``reload`` of an unchanged
config. Growth is the 10k figure over the 1k figure. Then, for 5,000 and 20,000 keys, a reload
that swaps every key (``measure_mass``) and ``ping`` latency throughout.

    python bench/bench_scale.py [--sizes 10,1000,10000] [--mass 5000,20000]
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


def _pinging(sock: str) -> subprocess.Popen[str]:
    pinger = subprocess.Popen(
        [sys.executable, "-c", _PINGER, sock],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert pinger.stdout is not None
    pinger.stdout.readline()  # connected and pinging
    return pinger


def _pings(pinger: subprocess.Popen[str]) -> list[float]:
    assert pinger.stdout is not None and pinger.stdin is not None
    pinger.stdin.write("stop\n")
    pinger.stdin.flush()
    out: list[float] = json.loads(pinger.stdout.readline())
    pinger.wait()
    return out


def measure_mass(n: int) -> dict[str, Any]:
    """A reload that swaps every one of ``n`` keys (issue 12: "do not let a reload block the
    control plane"): ``reload`` after selecting ``b`` for every key, ping latency from another
    process throughout; twice (to ``b`` and back to ``a``)."""
    with Spawned(adapters_config(n, watch=False)) as d:
        line = Line(d.socket)
        walls: list[float] = []
        pings: list[float] = []
        try:
            for want in ("b", "a"):
                d.config.write_text(adapters_config(n, watch=False, select_all=want))
                pinger = _pinging(d.socket)
                t0 = time.perf_counter()
                result = line.call("reload")
                walls.append((time.perf_counter() - t0) * 1000)
                pings += _pings(pinger)
                if len(result["changed"]) != n:
                    raise RuntimeError(f"expected {n} keys to change, got {len(result['changed'])}")
        finally:
            line.close()
    fig = {
        "mass_reload_ms": statistics.median(walls),
        "mass_ping_p50_ms": pct(pings, 0.5),
        "mass_ping_p99_ms": pct(pings, 0.99),
        "mass_ping_max_ms": max(pings),
        "mass_pings": len(pings),
    }
    print(f"# scale mass swap n={n}: {json.dumps(fig)}", file=sys.stderr)
    return fig


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
                met = met and growth <= float(growth_goal.lstrip("≤~"))
            row["met"] = met if big >= 10_000 else None
        rows.append(row)
    return rows


def _short(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    return f"{v:.3g}"


#: keys swapped by one reload (issue 12 saw ping stall 167 ms at 5,000 and 1.06 s at 20,000)
MASS_SIZES = (5_000, 20_000)


def mass_rows(figs: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for n, f in figs.items():
        rows.append(
            {
                "name": f"reload swapping {n:,} keys: wall",
                "unit": "ms",
                "value": round(f["mass_reload_ms"], 1),
            }
        )
        rows.append(
            {
                "name": f"ping during a reload swapping {n:,} keys",
                "unit": "ms",
                "p50": round(f["mass_ping_p50_ms"], 2),
                "p99": round(f["mass_ping_p99_ms"], 2),
                "value": round(f["mass_ping_max_ms"], 1),  # the max: the stall
                "goal": "p99 < 10 ms",
                "met": f["mass_ping_p99_ms"] < 10,
            }
        )
    return rows


def run(sizes: tuple[int, ...] = SIZES, mass: tuple[int, ...] = MASS_SIZES) -> list[dict[str, Any]]:
    rows = rows_of({n: measure(n) for n in sizes})
    return rows + mass_rows({n: measure_mass(n) for n in mass})


if __name__ == "__main__":
    import argparse

    from run import print_table

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--mass", default=",".join(map(str, MASS_SIZES)), help="'' for none")
    args = ap.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(",") if s)
    mass = tuple(int(s) for s in args.mass.split(",") if s)
    print_table(run(sizes, mass) if sizes else mass_rows({n: measure_mass(n) for n in mass}))
