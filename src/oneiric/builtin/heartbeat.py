"""A heartbeat service: proves the daemon and its cache are alive, one beat per interval.

Each beat leases the cache adapter and writes ``{"count": n, "at": <epoch>, "pid": <pid>}``
under its key. Because a beat is a lease, pausing the cache makes the heartbeat *wait* (it logs
that it is waiting and shows one lease in flight on its service key) and resuming the cache
lets the beat complete — the demo's way of showing admission control at work. Swapping the
cache shows up too: the count restarts from whatever the new cache holds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import anyio

import oneiric
from oneiric.config import parse_duration
from oneiric.errors import Unavailable

log = logging.getLogger(__name__)


class Heartbeat:
    """Service. Settings: ``interval`` (seconds or a duration like ``"5s"``; default 5),
    ``key`` (the cache key written; default ``"heartbeat"``), ``cache`` (the adapter key to
    lease; default ``"cache"``)."""

    def __init__(
        self, interval: float | str = 5.0, key: str = "heartbeat", cache: str = "cache"
    ) -> None:
        self.interval = parse_duration(interval, what="interval")
        if self.interval <= 0:
            raise ValueError(f"interval must be greater than zero, got {interval!r}")
        self.key = key
        self.cache = cache
        self.beats = 0  # beats written by this instance
        self.last: dict[str, Any] | None = None
        self.waiting = False  # a beat is waiting for the cache (paused, draining, inactive)
        self._stop = anyio.Event()
        self._changed = anyio.Event()
        self._waiting_scope: anyio.CancelScope | None = None

    async def run(self) -> None:
        """Beat, then wait ``interval``; until :meth:`stop_run` or cancellation."""
        self._stop = anyio.Event()
        while not self._stop.is_set():
            await self.beat()
            with anyio.move_on_after(self.interval):
                await self._stop.wait()

    def stop_run(self) -> None:
        """Graceful stop: finish a beat being written, give up one that waits for the cache,
        then return from :meth:`run`."""
        self._stop.set()
        if self._waiting_scope is not None:
            self._waiting_scope.cancel()

    async def beat(self) -> dict[str, Any] | None:
        """Write one heartbeat; waits while the cache is paused (None: the wait was given up
        by :meth:`stop_run`)."""
        try:
            async with oneiric.use("adapter", self.cache, wait=False) as cache:
                return await self._write(cache)
        except Unavailable as exc:  # paused, draining or not active: say so, then wait
            log.info("heartbeat: waiting for adapter/%s (%s)", self.cache, exc)
        record = None
        self._set(waiting=True)
        try:
            with anyio.CancelScope() as self._waiting_scope:
                if self._stop.is_set():
                    self._waiting_scope.cancel()
                async with oneiric.use("adapter", self.cache) as cache:
                    record = await self._write(cache)
        finally:
            self._waiting_scope = None
            self._set(waiting=False)
        if record is None:
            log.info("heartbeat: stopped while waiting for adapter/%s", self.cache)
            return None
        log.info("heartbeat: adapter/%s is back; beat %d written", self.cache, record["count"])
        return record

    async def _write(self, cache: Any) -> dict[str, Any]:
        previous = await cache.get(self.key)
        count = previous.get("count", 0) if isinstance(previous, dict) else 0
        record = {"count": int(count) + 1, "at": time.time(), "pid": os.getpid()}
        await cache.set(self.key, record)
        self._set(beats=self.beats + 1, last=record)
        return record

    def _set(self, **values: Any) -> None:
        for name, value in values.items():
            setattr(self, name, value)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(self, predicate: Callable[[Heartbeat], bool]) -> None:
        """Return once ``predicate(self)`` holds, e.g. ``lambda hb: hb.beats >= 3`` or
        ``lambda hb: hb.waiting`` (for tests and embedding; woken by changes, no polling)."""
        while not predicate(self):
            await self._changed.wait()
