"""One process of light fleet hosts for ``make fleet-sim HOSTS=N`` (see bench/fleet_sim.py).

Each light host is the daemon's own sync code — ``RemoteSync`` with python-tuf's client in a
worker thread, its own state directory (TUF metadata, applied manifest), its own ETag memory,
jittered refresh and backoff — applying into its own candidate registry (the real one-step
diff) instead of a runtime with components. The hosts of one process share a urllib3
connection pool (as one machine's many daemons would share nothing but the network) and the
thread limiter.

Protocol on stdout, one line per event: ``A <host> <version> <epoch> <due>`` when a host
applied a manifest (``due``: when that check was scheduled to start, so the simulator's own
lateness -- event loop, thread limiter, CPU -- shows as ``epoch - due``); ``E <host> <reason>``
on a failed check. Reads ``stop`` on stdin to end.

    python bench/_fleet_light.py FIRST COUNT BASE URL ROOT REFRESH
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import anyio
import urllib3

from oneiric.config.schema import RemoteConfig
from oneiric.remote.apply import ApplyReport
from oneiric.remote.client import TufSource
from oneiric.remote.fetch import Fetcher
from oneiric.remote.sync import RemoteSync
from oneiric.runtime.candidates import Candidate
from oneiric.runtime.registry import Registry


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class LightHost:
    def __init__(self, name: str, sync_factory: object) -> None:
        self.name = name
        self.registry = Registry()
        self.selections: dict[str, dict[str, str]] = {}

    async def apply(
        self, sources: set[str], cands: list[Candidate], sel: dict[str, dict[str, str]]
    ) -> ApplyReport:
        changed = self.registry.replace_sources(sources, cands)
        self.selections = sel
        return ApplyReport(changed=sorted(str(ck) for ck in changed))


async def main(first: int, count: int, base: Path, url: str, root: str, refresh: float) -> None:
    pool = urllib3.PoolManager(
        num_pools=4,
        maxsize=64,
        retries=False,
        timeout=urllib3.Timeout(connect=5, read=15),
    )
    limiter = anyio.CapacityLimiter(8)
    cfg = RemoteConfig(url=url, root=root, refresh=refresh, refresh_max=refresh * 4)
    rng = random.Random(first)
    async with anyio.create_task_group() as tg:
        for i in range(first, first + count):
            name = f"h{i}"
            host = LightHost(name, None)
            state = base / name
            source = TufSource(cfg, state / "remote", fetcher=Fetcher(pool=pool))
            last: dict[str, float | int | None] = {"version": None, "due": None}

            def changed(sync_ref: list[RemoteSync], name: str = name, last: dict = last) -> None:
                h = sync_ref[0].health
                if h.version != last["version"] and h.status == "ok":
                    last["version"] = h.version
                    due = last["due"] if last["due"] is not None else h.last_check_at
                    say(f"A {name} {h.version} {time.time():.3f} {due:.3f}")
                elif h.status != "ok" and h.reason:
                    say(f"E {name} {h.reason}")
                last["due"] = h.next_check_at  # when the next check is meant to start

            ref: list[RemoteSync] = []
            sync = RemoteSync(
                cfg,
                state,
                host.apply,
                on_change=lambda ref=ref, changed=changed: changed(ref),
                limiter=limiter,
                source=source,
                rng=random.Random(rng.random()),
            )
            ref.append(sync)
            # a fleet in steady state: hosts booted at different times, so their checks are
            # spread over one refresh period
            tg.start_soon(lambda s=sync: s.run(first_delay=rng.uniform(0, refresh)))
        await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    f, c, b, u, r, ref = sys.argv[1:7]
    anyio.run(main, int(f), int(c), Path(b), u, r, float(ref))
