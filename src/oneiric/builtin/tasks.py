"""Built-in tasks: small, useful on their own, and enough to exercise runs, schedules,
concurrency limits and drains in the demo."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio

import oneiric
from oneiric.config import parse_duration

log = logging.getLogger(__name__)


class Echo:
    """Task returning its payload: the smallest end-to-end check that runs work
    (``oneiricctl run task echo --payload '{"hello": "world"}'``). No settings."""

    async def run(self, payload: Any = None) -> Any:
        return payload


class CacheStats:
    """Task reporting the cache adapter's statistics and the last heartbeat it holds.

    Settings: ``cache`` (adapter key; default ``"cache"``), ``heartbeat_key`` (the key the
    heartbeat service writes; default ``"heartbeat"``, empty to leave it out). Waits while the
    cache is paused, like any lease."""

    def __init__(self, cache: str = "cache", heartbeat_key: str = "heartbeat") -> None:
        self.cache = cache
        self.heartbeat_key = heartbeat_key

    async def run(self, payload: Any = None) -> dict[str, Any]:
        async with oneiric.use("adapter", self.cache) as cache:
            stats: dict[str, Any] = dict(await cache.stats())
            if self.heartbeat_key:
                beat = await cache.get(self.heartbeat_key)
                if isinstance(beat, dict) and isinstance(beat.get("at"), int | float):
                    beat = {**beat, "age_s": round(time.time() - beat["at"], 3)}
                stats["heartbeat"] = beat
        log.debug("cache stats: %s", stats)
        return stats


class Sleep:
    """Task that takes its time: ``seconds`` from the payload (``{"seconds": 2}``), else the
    ``seconds`` setting (default ``"3s"``). Handy to watch a drain wait for a run in flight."""

    def __init__(self, seconds: float | str = 3.0) -> None:
        self.seconds = parse_duration(seconds, what="seconds")

    async def run(self, payload: Any = None) -> dict[str, Any]:
        seconds = self.seconds
        if isinstance(payload, dict) and "seconds" in payload:
            seconds = parse_duration(payload["seconds"], what="payload seconds")
        started = time.monotonic()
        await anyio.sleep(seconds)
        return {"slept_s": round(time.monotonic() - started, 3)}
