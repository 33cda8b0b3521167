"""Cache adapters: :class:`MemoryCache` (in-process LRU) and :class:`SqliteCache` (persistent).

Both have the same async API, so a key can be swapped from one to the other while other
components hold leases on it::

    async with oneiric.use("adapter", "cache") as cache:
        await cache.set("greeting", {"text": "hello"}, ttl=60)
        value = await cache.get("greeting")

``get(key, default=None)``, ``set(key, value, ttl=None)``, ``delete(key) -> bool``,
``clear() -> int`` and ``stats() -> dict``. ``ttl`` is in seconds (a number or a duration
string such as ``"5m"``). The SQLite cache stores values as JSON, so store JSON-compatible values
(dicts, lists, strings, numbers, booleans, None) if you want to swap between the two freely.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import msgspec

from oneiric.config import parse_duration

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_STATE_DIR = "/var/lib/oneiric"
DEFAULT_FILE = "cache.sqlite3"


def _ttl(ttl: float | str | None) -> float | None:
    if ttl is None:
        return None
    seconds = parse_duration(ttl, what="ttl")
    return seconds if seconds > 0 else None


def _clock(clock: Callable[[], float]) -> Callable[[], float]:
    if not callable(clock):
        raise TypeError(f"clock is not a setting (it is for tests and embedding), got {clock!r}")
    return clock


def state_dir(environ: dict[str, str] | None = None) -> str:
    """The daemon's default state directory: the first entry of ``$STATE_DIRECTORY`` (as set by
    systemd's ``StateDirectory=`` and by ``make run``), else ``/var/lib/oneiric``."""
    env = os.environ if environ is None else environ
    first = next((d for d in env.get("STATE_DIRECTORY", "").split(":") if d), None)
    return first or DEFAULT_STATE_DIR


class MemoryCache:
    """An in-process LRU cache; contents are lost on restart or swap.

    Settings: ``max_entries`` (default 10000): the least recently used entry is evicted beyond
    it. ``clock`` (not a setting) is what TTLs are measured on, :func:`time.monotonic` unless a
    test or an embedding program passes another."""

    provider = "memory"

    def __init__(
        self, max_entries: int = 10000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not isinstance(max_entries, int) or isinstance(max_entries, bool) or max_entries < 1:
            raise ValueError(f"max_entries must be an integer >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._clock = _clock(clock)
        self._data: OrderedDict[str, tuple[Any, float | None]] = OrderedDict()
        self._counts = {"hits": 0, "misses": 0, "sets": 0, "deletes": 0, "evictions": 0}

    async def get(self, key: str, default: Any = None) -> Any:
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= self._clock():
            del self._data[key]
            entry = None
        if entry is None:
            self._counts["misses"] += 1
            return default
        self._data.move_to_end(key)
        self._counts["hits"] += 1
        return entry[0]

    async def set(self, key: str, value: Any, ttl: float | str | None = None) -> None:
        seconds = _ttl(ttl)
        expires = self._clock() + seconds if seconds is not None else None
        self._data[key] = (value, expires)
        self._data.move_to_end(key)
        self._counts["sets"] += 1
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
            self._counts["evictions"] += 1

    async def delete(self, key: str) -> bool:
        found = self._data.pop(key, None) is not None
        if found:
            self._counts["deletes"] += 1
        return found

    async def clear(self) -> int:
        n = len(self._data)
        self._data.clear()
        return n

    async def stats(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "entries": len(self._data),
            "max_entries": self.max_entries,
            **self._counts,
        }

    def health(self) -> bool:
        return True


_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL
)
"""


class SqliteCache:
    """A persistent cache in one SQLite file; survives restarts and swaps.

    Settings: ``path`` (default ``<state dir>/cache.sqlite3``, the state dir being
    ``$STATE_DIRECTORY`` or ``/var/lib/oneiric``; relative paths are taken from the state dir
    too). The database is opened in ``start()`` and closed in ``stop()``; every query runs in a
    worker thread so the event loop never blocks on disk. Expiry times are stored as wall-clock
    seconds (:func:`time.time`, or the ``clock`` a test or an embedding program passes; not a
    setting), so they mean the same after a restart."""

    provider = "sqlite"

    def __init__(self, path: str | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = _clock(clock)
        base = state_dir()
        self.path = os.path.join(base, path or DEFAULT_FILE)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one statement at a time on the shared connection
        self._counts = {"hits": 0, "misses": 0, "sets": 0, "deletes": 0}
        self._encoder = msgspec.json.Encoder()

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await anyio.to_thread.run_sync(self._open)
        log.info("sqlite cache: %s", self.path)

    def _open(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        self._db = db

    async def stop(self) -> None:
        def close() -> None:
            with self._lock:
                db, self._db = self._db, None
                if db is not None:
                    db.close()

        await anyio.to_thread.run_sync(close)

    async def health(self) -> bool:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())
        return True

    # -- API -------------------------------------------------------------------------------------
    async def get(self, key: str, default: Any = None) -> Any:
        def q(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT value, expires_at FROM cache WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            if row[1] is not None and row[1] <= self._clock():
                db.execute("DELETE FROM cache WHERE key = ?", (key,))
                return None
            return bytes(row[0])

        raw = await self._run(q)
        if raw is None:
            self._counts["misses"] += 1
            return default
        self._counts["hits"] += 1
        return msgspec.json.decode(raw)

    async def set(self, key: str, value: Any, ttl: float | str | None = None) -> None:
        seconds = _ttl(ttl)
        blob = self._encoder.encode(value)  # raises TypeError for values JSON cannot hold
        expires = self._clock() + seconds if seconds is not None else None
        await self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO cache (key, value, expires_at) VALUES (?, ?, ?)",
                (key, blob, expires),
            )
        )
        self._counts["sets"] += 1

    async def delete(self, key: str) -> bool:
        n = await self._run(
            lambda db: db.execute("DELETE FROM cache WHERE key = ?", (key,)).rowcount
        )
        if n:
            self._counts["deletes"] += 1
        return bool(n)

    async def clear(self) -> int:
        return int(await self._run(lambda db: db.execute("DELETE FROM cache").rowcount))

    async def stats(self) -> dict[str, Any]:
        def q(db: sqlite3.Connection) -> tuple[int, int]:
            entries = int(db.execute("SELECT count(*) FROM cache").fetchone()[0])
            return entries, os.path.getsize(self.path) if os.path.exists(self.path) else 0

        entries, size = await self._run(q)
        return {
            "provider": self.provider,
            "path": self.path,
            "entries": entries,
            "size_bytes": size,
            **self._counts,
        }

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                db = self._db
                if db is None:
                    raise RuntimeError(f"sqlite cache {self.path} is not open (start() not run)")
                return fn(db)

        return await anyio.to_thread.run_sync(call)
