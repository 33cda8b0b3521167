"""Run every benchmark side by side in one process run; print a table, write JSON.

    make bench            # all (installs the bench extra: supervisor, the yardstick)
    python bench/run.py --only core,control --out bench/results.json

Suites: client (oneiricctl vs supervisorctl vs the bare interpreter), core (leases, durable
intent), control (requests/s and latency over the socket), ops (drain completion, pause effect,
idle CPU), watch (config save → serving), scale (10 / 1,000 / 10,000 components and growth;
a reload swapping 5,000 and 20,000 keys), remote (a 10,000-component TUF manifest verified,
diffed and applied; re-applied unchanged).
Every row with a goal says whether it was met; ``growth`` is the 10k figure over the 1k one.

Figures are medians (and p99 where latency matters) measured in the same run, so ratios between
them are meaningful on a shared, noisy machine; absolute numbers are not goals by themselves.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SUITES = ["client", "core", "control", "ops", "watch", "scale", "remote"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(HERE / "results.json"))
    ap.add_argument("--only", default=",".join(SUITES))
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    rows: list[dict[str, Any]] = []
    for name in args.only.split(","):
        mod = importlib.import_module(f"bench_{name}")
        started = time.perf_counter()
        for row in mod.run():
            row.setdefault("suite", name)
            rows.append(row)
        print(f"# {name}: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print_table(rows)
    print(f"\nwritten to {args.out}")
    return 0


def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 100 else f"{v:,.0f}"
    return "" if v is None else str(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["suite", "name", "unit", "p50", "p99", "value", "sizes", "growth", "goal", "met"]
    table = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
