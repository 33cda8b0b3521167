"""One load-generating process for the load suite: THREADS clients (each its own connection)
mixing ``status`` and mutations (pause / resume of a key) for DURATION seconds; latencies (s)
go to OUT, one per line; prints one JSON line with counts and errors."""

from __future__ import annotations

import json
import random
import sys
import threading
import time

from oneiric.control.client import ControlClient


def main() -> None:
    sock, threads, duration, keys, out = (
        sys.argv[1],
        int(sys.argv[2]),
        float(sys.argv[3]),
        int(sys.argv[4]),
        sys.argv[5],
    )
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    counts = {"status": 0, "mutation": 0}
    lock = threading.Lock()
    start = threading.Event()
    deadline = [0.0]

    def client(i: int) -> None:
        rng = random.Random(i)
        mine = latencies[i]
        with ControlClient(sock, timeout=60) as c:
            start.wait()
            while time.monotonic() < deadline[0]:
                key = f"k{rng.randrange(keys)}"
                roll = rng.random()
                began = time.perf_counter()
                try:
                    if roll < 0.35:
                        c.call("status")
                        kind = "status"
                    elif roll < 0.7:
                        c.call("status", domain="adapter", key=key)
                        kind = "status"
                    elif roll < 0.85:
                        c.call("pause", domain="adapter", key=key, note="load")
                        kind = "mutation"
                    else:
                        c.call("resume", domain="adapter", key=key)
                        kind = "mutation"
                except Exception as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                mine.append(time.perf_counter() - began)
                with lock:
                    counts[kind] += 1

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    deadline[0] = time.monotonic() + duration
    start.set()
    for w in workers:
        w.join()
    with open(out, "w") as fh:
        for mine in latencies:
            fh.writelines(f"{x:.6f}\n" for x in mine)
    print(json.dumps({**counts, "errors": len(errors), "first_errors": errors[:5]}), flush=True)


if __name__ == "__main__":
    main()
