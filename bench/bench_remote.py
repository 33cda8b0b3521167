"""Remote manifests (SPEC §9): a 10,000-component manifest through the host's real sync path.

A TUF repository (made with the publisher library) in a local directory holds one manifest
target with 10,000 adapter keys (MemoryCache, one candidate each, selected). A fresh host
(empty state dir, a real Runtime with durable intent) then runs ``RemoteSync.sync_now()``:

- **apply 10k**: python-tuf's full client workflow (root, timestamp, snapshot, targets), the
  target download and hash check, TOML parse and validation of every entry, the one-step
  candidate replacement and the reconcile that activates 10,000 components;
  the same with the verify part alone (``TufSource.check``) to show the split;
- **re-apply unchanged**: the same 10,000 entries in a new manifest version (a comment
  changed, so a new digest and the whole apply path): the registry diff finds nothing
  changed, so zero keys are reconciled and zero swaps happen;
- **one key of 10k changed**: exactly one swap;
- **nothing new**: the one-request refresh (``timestamp.json`` unchanged).

    python bench/bench_remote.py [--n 10000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from oneiric.config.schema import RemoteConfig
from oneiric.remote import publish
from oneiric.remote.apply import ApplyReport, apply_to_runtime
from oneiric.remote.client import TufSource
from oneiric.remote.sync import RemoteSync
from oneiric.runtime.candidates import Candidate
from oneiric.runtime.core import Runtime
from oneiric.runtime.intent import IntentStore

N = 10_000
ROUNDS = 3


def manifest(n: int, *, flip: int | None = None, note: str = "") -> bytes:
    out = [f"# {note}\n"]
    for i in range(n):
        provider = "b" if i == flip else "a"
        out.append(
            f'[[component]]\ndomain = "adapter"\nkey = "k{i}"\nprovider = "{provider}"\n'
            'factory = "oneiric.builtin.cache:MemoryCache"\n'
        )
    return "".join(out).encode()


async def _round(base: Path, n: int) -> dict[str, float]:
    repo = base / "repo"
    state = base / "state"
    shutil.rmtree(state, ignore_errors=True)
    cfg = RemoteConfig(
        url=str(repo),
        root=str(repo / "metadata" / "1.root.json"),
        refresh=3600,
        refresh_max=7200,
        max_bytes=16 * 1024 * 1024,
    )
    # verify alone (a throwaway state dir): python-tuf + download + parse + validate
    t0 = time.perf_counter()
    TufSource(cfg, base / "verify-only").check()
    verify_s = time.perf_counter() - t0
    shutil.rmtree(base / "verify-only")

    store = IntentStore(state / "intent.json")
    state.mkdir(parents=True)
    store.load()
    activating = [0.0]
    async with Runtime(intent=store) as rt:
        reconcile_many = rt.reconcile_many

        async def timed(keys: Any, **kw: Any) -> Any:  # the activation share of an apply
            t = time.perf_counter()
            try:
                return await reconcile_many(keys, **kw)
            finally:
                activating[0] = time.perf_counter() - t

        rt.reconcile_many = timed  # type: ignore[method-assign]

        async def apply(
            sources: set[str], cands: list[Candidate], sel: dict[str, dict[str, str]]
        ) -> ApplyReport:
            return await apply_to_runtime(rt, sources, cands, sel)

        sync = RemoteSync(cfg, state, apply)
        await sync.boot()
        t0 = time.perf_counter()
        first = await sync.sync_now()
        apply_s = time.perf_counter() - t0
        activate_s = activating[0]
        assert first.outcome == "applied" and len(first.changed) == n, first
        swaps_before = sum(st.swaps for st in rt.states.values())

        publish.publish(repo, {"fleet.toml": manifest(n, note="re-signed")}, {})
        t0 = time.perf_counter()
        same = await sync.sync_now()
        same_s = time.perf_counter() - t0
        assert same.outcome == "applied", same
        unchanged_swaps = sum(st.swaps for st in rt.states.values()) - swaps_before

        publish.publish(repo, {"fleet.toml": manifest(n, flip=0, note="flip")}, {})
        t0 = time.perf_counter()
        one = await sync.sync_now()
        one_s = time.perf_counter() - t0
        assert one.changed == ["adapter/k0"], one.changed

        t0 = time.perf_counter()
        quiet = await sync.sync_now()
        quiet_s = time.perf_counter() - t0
        assert quiet.outcome == "unchanged"
        await rt.shutdown(5)
    publish.publish(repo, {"fleet.toml": manifest(n, note="reset")}, {})
    return {
        "verify": verify_s,
        "apply": apply_s,
        "activate": activate_s,
        "no_activate": apply_s - activate_s,
        "same": same_s,
        "same_swaps": float(unchanged_swaps),
        "same_changed": float(len(same.changed)),
        "one": one_s,
        "one_changed": float(len(one.changed)),
        "quiet": quiet_s,
    }


def run(n: int = N) -> list[dict[str, Any]]:
    base = Path(tempfile.mkdtemp(prefix="onbr"))
    try:
        publish.init(base / "repo")
        publish.publish(base / "repo", {"fleet.toml": manifest(n)}, {})
        size = len(manifest(n))
        rounds = [anyio.run(_round, base, n) for _ in range(ROUNDS)]
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def med(k: str) -> float:
        return statistics.median(r[k] for r in rounds)

    return [
        {
            "name": f"apply {n:,}-component manifest: verify+diff+apply",
            "unit": "ms",
            "p50": med("no_activate") * 1000,
            "value": f"{size / 1024:,.0f} KiB manifest",
            "goal": "< 1,000 ms",
            "met": med("no_activate") < 1.0,
        },
        {
            "name": f"  then activating the {n:,} new components (runtime reconcile)",
            "unit": "ms",
            "p50": med("activate") * 1000,
            "value": f"total {med('apply') * 1000:,.0f} ms",
        },
        {
            "name": f"  of which verify (python-tuf + download + parse + validate {n:,})",
            "unit": "ms",
            "p50": med("verify") * 1000,
        },
        {
            "name": f"re-apply {n:,} unchanged entries (new version, same components)",
            "unit": "ms",
            "p50": med("same") * 1000,
            "value": f"{med('same_swaps'):.0f} swaps, {med('same_changed'):.0f} keys changed",
            "goal": "0 swaps",
            "met": med("same_swaps") == 0 and med("same_changed") == 0,
        },
        {
            "name": f"one key of {n:,} changed",
            "unit": "ms",
            "p50": med("one") * 1000,
            "value": f"{med('one_changed'):.0f} key swapped",
            "goal": "1 swap",
            "met": med("one_changed") == 1,
        },
        {
            "name": "refresh with nothing new (one timestamp.json read)",
            "unit": "ms",
            "p50": med("quiet") * 1000,
        },
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from run import print_table

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=N)
    print_table(run(ap.parse_args().n))
