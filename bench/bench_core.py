"""Runtime hot paths: one use() lease round trip (plain, public API, asking for a capability);
durable intent mutations (1 and 64 writers)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import oneiric
from oneiric.runtime.core import Runtime, Timeouts
from oneiric.runtime.intent import IntentStore
from oneiric.runtime.registry import Candidate


class Cache:
    def get(self, key: str) -> None:
        return None


async def _lease(rounds: int = 7, n: int = 100_000) -> tuple[list[float], list[float], list[float]]:
    """µs per lease through ``rt.use``, through the public ``oneiric.use`` and through
    ``oneiric.use(..., capabilities={"ttl"})``, alternating rounds in the same loop."""
    tmp = Path(tempfile.mkdtemp(prefix="onb"))
    store = IntentStore(tmp / "intent.json")
    store.load()
    samples: list[float] = []
    public_samples: list[float] = []
    caps_samples: list[float] = []
    async with Runtime(intent=store, timeouts=Timeouts()) as rt:
        cand = Candidate(
            domain="adapter",
            key="cache",
            provider="m",
            factory="bench_core:Cache",
            source="bench",
            capabilities=("ttl", "persist"),
        )
        await rt.reconcile_many(rt.apply_candidates({"bench"}, [cand]))
        use = rt.use
        public = oneiric.use
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(n):
                async with use("adapter", "cache"):
                    pass
            samples.append((time.perf_counter() - t0) / n * 1e6)
            t0 = time.perf_counter()
            for _ in range(n):
                async with public("adapter", "cache"):
                    pass
            public_samples.append((time.perf_counter() - t0) / n * 1e6)
            ttl = {"ttl"}
            t0 = time.perf_counter()
            for _ in range(n):
                async with public("adapter", "cache", capabilities=ttl):
                    pass
            caps_samples.append((time.perf_counter() - t0) / n * 1e6)
    return samples, public_samples, caps_samples


async def _intent(writers: int, total: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="onb", dir="/var/tmp"))
    store = IntentStore(tmp / "intent.json")
    store.load()
    per = total // writers

    async def writer(w: int) -> None:
        for i in range(per):
            if i % 2:
                await store.resume("adapter", f"k{w}", uid=0, pid=0)
            else:
                await store.pause("adapter", f"k{w}", uid=0, pid=0, note="bench")

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for w in range(writers):
            tg.start_soon(writer, w)
    return per * writers / (time.perf_counter() - t0)


def run() -> list[dict[str, Any]]:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    lease, public, caps = anyio.run(_lease)
    one = [anyio.run(_intent, 1, 400) for _ in range(3)]
    many = [anyio.run(_intent, 64, 12_800) for _ in range(3)]
    return [
        {
            "name": "use() lease round trip",
            "unit": "µs",
            "p50": statistics.median(lease),
            "goal": "< 5 µs",
            "met": statistics.median(lease) < 5,
        },
        {
            "name": "oneiric.use() lease round trip (public API)",
            "unit": "µs",
            "p50": statistics.median(public),
            "value": f"{statistics.median(public) / statistics.median(lease):.2f}× rt.use",
            "goal": "≈ rt.use (≤ 1.2×)",
            "met": statistics.median(public) <= 1.2 * statistics.median(lease),
        },
        {
            "name": "oneiric.use(capabilities={'ttl'}) lease round trip",
            "unit": "µs",
            "p50": statistics.median(caps),
            "value": f"{statistics.median(caps) / statistics.median(lease):.2f}× rt.use",
            "goal": "< 2× rt.use",
            "met": statistics.median(caps) < 2 * statistics.median(lease),
        },
        {
            "name": "durable intent mutation, 1 writer",
            "unit": "ops/s",
            "value": statistics.median(one),
            "goal": "(fsync-bound)",
        },
        {
            "name": "durable intent mutations, 64 writers",
            "unit": "ops/s",
            "value": statistics.median(many),
            "goal": "> 5,000/s",
            "met": statistics.median(many) > 5000,
        },
    ]


if __name__ == "__main__":
    from run import print_table

    print_table(run())
