"""Operator actions and idleness, each measured on a real daemon.

* **Drain completion**: a lease is held, ``drain`` is sent on the control socket and its first
  progress line arrives (the drain is waiting on that lease); the clock starts when the lease
  is released and stops when the drain's final reply is read. The daemon runs in-process so
  the bench can hold and release the lease itself; the request goes over the real socket.
* **Pause effect**: the clock starts just before ``oneiricctl pause`` is spawned and stops at
  the first lease refused (``use(wait=False)`` raising ``Paused``), checked on every runtime
  change: so it covers the client's start-up, the durable commit and admission closing.
* **Idle CPU**: a spawned oneiricd with one component and nothing happening, CPU of all its
  threads over 10 s (from /proc schedstat, exact to the ns), with ``watch`` on (the default)
  and off.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from _daemon import BIN, Spawned, cpu_ns, pct

IDLE_S = 10.0
ONE = """
[daemon]
health_interval = "1h"
drain_timeout = "5s"
stop_timeout = "5s"
watch = {watch}
[[component]]
domain = "adapter"
key = "cache"
provider = "memory"
factory = "oneiric.builtin.cache:MemoryCache"
"""


async def _reply(stream: Any, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        buf += await stream.receive(65536)
    i = buf.index(b"\n")
    line = bytes(buf[:i])
    del buf[: i + 1]
    return line


async def _in_process(rounds: int) -> tuple[list[float], list[float]]:
    from oneiric.daemon import Daemon, Options
    from oneiric.errors import Paused

    d = Path(tempfile.mkdtemp(prefix="onb", dir="/tmp"))
    (d / "oneiricd.toml").write_text(ONE.format(watch="false"))
    sock = str(d / "s.sock")
    daemon = Daemon(
        Options(
            config=str(d / "oneiricd.toml"),
            socket=sock,
            state_dir=str(d / "state"),
            health_file=str(d / "health.json"),
        ),
        environ={},
    )
    drains: list[float] = []
    pauses: list[float] = []
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            rt = daemon.runtime
            assert rt is not None
            async with await anyio.connect_unix(sock) as s:
                buf = bytearray()
                for i in range(rounds):
                    with anyio.fail_after(30):
                        lease = rt.use("adapter", "cache")
                        await lease.__aenter__()
                        req = {"id": i, "op": "drain", "domain": "adapter", "key": "cache"}
                        await s.send(json.dumps(req).encode() + b"\n")
                        first = json.loads(await _reply(s, buf))
                        assert "event" in first, first  # progress: waiting on our lease
                        t0 = time.perf_counter()
                        await lease.__aexit__(None, None, None)
                        final = json.loads(await _reply(s, buf))
                        while "event" in final:  # progress: the map emptied
                            final = json.loads(await _reply(s, buf))
                        drains.append((time.perf_counter() - t0) * 1000)
                        assert final.get("ok"), final
                        await s.send(b'{"id":0,"op":"resume"}\n')
                        assert json.loads(await _reply(s, buf)).get("ok")
                for _ in range(rounds):
                    with anyio.fail_after(30):
                        seen = rt.version
                        t0 = time.perf_counter()
                        ctl = await anyio.open_process(
                            [str(BIN / "oneiricctl"), "--socket", sock, "pause", "adapter", "cache"]
                        )
                        while True:
                            try:
                                async with rt.use("adapter", "cache", wait=False):
                                    pass
                            except Paused:
                                break
                            seen = await rt.wait_changed(seen)
                        pauses.append((time.perf_counter() - t0) * 1000)
                        await ctl.wait()
                        await ctl.aclose()
                        await s.send(b'{"id":0,"op":"resume"}\n')
                        assert json.loads(await _reply(s, buf)).get("ok")
            daemon.request_stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return drains, pauses


def _idle(watch: bool) -> float:
    """Percent of one core used over IDLE_S seconds by an idle daemon."""
    with Spawned(ONE.format(watch="true" if watch else "false")) as d:
        time.sleep(1.0)  # let start-up's tail (first health write, watch arming) pass
        c0, t0 = cpu_ns(d.pid), time.perf_counter()
        time.sleep(IDLE_S)  # the measurement window itself
        c1, t1 = cpu_ns(d.pid), time.perf_counter()
    return (c1 - c0) / 1e9 / (t1 - t0) * 100


def run() -> list[dict[str, Any]]:
    drains, pauses = anyio.run(_in_process, 30)
    idle_on, idle_off = _idle(True), _idle(False)
    return [
        {
            "name": "drain: last lease released → drain reply",
            "unit": "ms",
            "p50": statistics.median(drains),
            "p99": pct(drains, 0.99),
        },
        {
            "name": "pause effect: oneiricctl pause spawned → first refused lease",
            "unit": "ms",
            "p50": statistics.median(pauses),
            "p99": pct(pauses, 0.99),
        },
        {
            "name": f"idle CPU over {IDLE_S:g} s, watch on (default)",
            "unit": "% core",
            "value": round(idle_on, 4),
            "goal": "< 0.1 %",
            "met": idle_on < 0.1,
        },
        {
            "name": f"idle CPU over {IDLE_S:g} s, watch = false",
            "unit": "% core",
            "value": round(idle_off, 4),
        },
    ]


if __name__ == "__main__":
    from run import print_table

    print_table(run())
