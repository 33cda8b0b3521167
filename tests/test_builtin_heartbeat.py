"""The heartbeat service with the cache adapters, in a real daemon: beats go into the cache,
a paused cache makes the beat wait, a swapped cache gets the next beat."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from harness import Harness, running_daemon
from oneiric.builtin.heartbeat import Heartbeat

pytestmark = pytest.mark.anyio

CONFIG = """
[daemon]
drain_timeout = "5s"
stop_timeout = "5s"
watch = false

[[component]]
domain = "adapter"
key = "cache"
provider = "memory"
factory = "oneiric.builtin.cache:MemoryCache"

[[component]]
domain = "adapter"
key = "cache"
provider = "sqlite"
factory = "oneiric.builtin.cache:SqliteCache"
settings = { path = "{dir}/hb.sqlite3" }

[selections.adapter]
cache = "memory"

[[component]]
domain = "service"
key = "heartbeat"
provider = "builtin"
factory = "oneiric.builtin.heartbeat:Heartbeat"
settings = { interval = "1h", key = "hb" }
"""


def beat(h: Harness) -> Heartbeat:
    cur = h.rt.state("service", "heartbeat").slot.current
    assert cur is not None
    hb = cur.instance
    assert isinstance(hb, Heartbeat)
    return hb


async def cached(h: Harness, key: str = "hb") -> Any:
    async with h.rt.use("adapter", "cache") as cache:
        return await cache.get(key)


async def restart_heartbeat(h: Harness) -> None:
    """Pause and resume the service: its run() starts again and beats at once."""
    await h.call("pause", domain="service", key="heartbeat")
    await h.call("resume", domain="service", key="heartbeat")


async def test_beats_wait_for_a_paused_cache_and_follow_swaps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="oneiric.builtin.heartbeat")
    from harness import make_dir

    d = make_dir()
    async with running_daemon(CONFIG.replace("{dir}", str(d)), directory=d) as h:
        hb = beat(h)
        with anyio.fail_after(10):
            await hb.wait_until(lambda b: b.beats >= 1)
        assert (await cached(h))["count"] == 1

        await h.call("pause", domain="adapter", key="cache", note="maintenance")
        await restart_heartbeat(h)
        with anyio.fail_after(10):
            await hb.wait_until(lambda b: b.waiting)
        hstat = h.rt.component_health(h.rt.state("service", "heartbeat"))
        assert hstat.in_flight == 1 and hstat.run_state == "running" and hb.beats == 1
        assert "waiting for adapter/cache" in caplog.text

        await h.call("resume", domain="adapter", key="cache")
        with anyio.fail_after(10):
            await hb.wait_until(lambda b: b.beats >= 2 and not b.waiting)
        assert (await cached(h))["count"] == 2

        await h.call("swap", domain="adapter", key="cache", provider="sqlite")
        await restart_heartbeat(h)
        with anyio.fail_after(10):
            await hb.wait_until(lambda b: b.beats >= 3)
        assert (await cached(h))["count"] == 1  # a fresh SQLite cache
        await h.call("swap", domain="adapter", key="cache", clear=True)
        await restart_heartbeat(h)
        with anyio.fail_after(10):
            await hb.wait_until(lambda b: b.beats >= 4)
        assert (await cached(h))["count"] == 1  # a new in-memory cache: memory is not kept
        await h.call("swap", domain="adapter", key="cache", provider="sqlite")
        await restart_heartbeat(h)
        with anyio.fail_after(10):
            await hb.wait_until(lambda b: b.beats >= 5)
        assert (await cached(h))["count"] == 2  # SQLite kept its count across the swaps


def test_settings_are_validated() -> None:
    assert Heartbeat(interval="250ms").interval == 0.25
    with pytest.raises(ValueError, match="interval"):
        Heartbeat(interval=0)
    with pytest.raises(ValueError, match="interval"):
        Heartbeat(interval="soon")


async def test_stop_gives_up_a_beat_waiting_for_the_cache() -> None:
    from harness import make_dir

    d = make_dir()
    cfg = CONFIG.replace("{dir}", str(d)).replace('stop_timeout = "5s"', 'stop_timeout = "1h"')
    async with running_daemon(cfg, directory=d) as h:
        hb = beat(h)
        with anyio.fail_after(10):
            await hb.wait_until(lambda b: b.beats >= 1)
        await h.call("pause", domain="adapter", key="cache")
        await restart_heartbeat(h)
        with anyio.fail_after(10):
            await hb.wait_until(lambda b: b.waiting)
        # stop_run() cancels the wait: no need for the (1 h) grace to pass
        await h.call("pause", domain="service", key="heartbeat")
        await h.wait_for(
            lambda: h.rt.component_health(h.rt.state("service", "heartbeat")).in_flight == 0
        )
        assert hb.beats == 1 and not hb.waiting
