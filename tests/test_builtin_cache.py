"""The cache adapters: same async API, LRU/TTL in memory, persistence in SQLite."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clocks import FakeClock
from harness import make_dir
from oneiric.builtin.cache import MemoryCache, SqliteCache, state_dir

pytestmark = pytest.mark.anyio


@pytest.fixture
def tmp() -> Iterator[Path]:
    d = make_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def test_memory_get_set_delete_and_stats() -> None:
    c = MemoryCache(max_entries=2)
    assert await c.get("a") is None and await c.get("a", 0) == 0
    await c.set("a", {"n": 1})
    await c.set("b", [2])
    assert await c.get("a") == {"n": 1}  # a is now most recently used
    await c.set("c", 3)  # evicts b, the least recently used
    assert await c.get("b") is None and await c.get("c") == 3
    assert await c.delete("a") is True and await c.delete("a") is False
    stats = await c.stats()
    assert stats == {
        "provider": "memory",
        "entries": 1,
        "max_entries": 2,
        "hits": 2,
        "misses": 3,
        "sets": 3,
        "deletes": 1,
        "evictions": 1,
    }
    assert await c.clear() == 1 and c.health() is True


async def test_memory_ttl() -> None:
    clock = FakeClock()
    c = MemoryCache(clock=clock)
    await c.set("k", "v", ttl="5s")
    await c.set("forever", 1, ttl=0)
    clock.advance(4.999)
    assert await c.get("k") == "v"
    clock.advance(0.001)
    assert await c.get("k") is None and await c.get("forever") == 1


def test_memory_rejects_bad_settings() -> None:
    for bad in (0, -1, True, "10"):
        with pytest.raises(ValueError, match="max_entries"):
            MemoryCache(max_entries=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [MemoryCache, SqliteCache])
def test_clock_is_not_a_setting(cls: type) -> None:
    with pytest.raises(TypeError, match="clock is not a setting"):
        cls(clock="monotonic")


def test_expiry_uses_the_real_clocks_by_default() -> None:
    assert MemoryCache()._clock is time.monotonic  # immune to wall-clock jumps
    assert SqliteCache()._clock is time.time  # stored expiry must mean the same after a restart


async def test_sqlite_persists_across_instances(tmp: Path) -> None:
    path = str(tmp / "sub" / "c.sqlite3")
    c = SqliteCache(path=path)
    await c.start()
    assert await c.health() is True
    await c.set("a", {"n": 1})
    await c.set("b", [1, "x"])
    assert await c.get("a") == {"n": 1}
    assert await c.get("zz", "dflt") == "dflt"
    assert await c.delete("b") is True and await c.delete("b") is False
    await c.stop()
    await c.stop()  # idempotent
    again = SqliteCache(path=path)
    await again.start()
    assert await again.get("a") == {"n": 1}
    stats = await again.stats()
    assert stats["provider"] == "sqlite" and stats["entries"] == 1 and stats["path"] == path
    assert stats["size_bytes"] > 0 and stats["hits"] == 1
    assert await again.clear() == 1
    await again.stop()


async def test_sqlite_ttl_and_json_only(tmp: Path) -> None:
    clock = FakeClock()
    c = SqliteCache(path=str(tmp / "c.db"), clock=clock)
    await c.start()
    await c.set("k", "v", ttl=10)
    clock.advance(9.5)
    assert await c.get("k") == "v"
    clock.advance(0.5)
    assert await c.get("k") is None
    assert (await c.stats())["entries"] == 0  # expired rows are removed when read
    with pytest.raises(TypeError):
        await c.set("obj", object())
    await c.stop()


async def test_sqlite_not_started_says_so(tmp: Path) -> None:
    c = SqliteCache(path=str(tmp / "c.db"))
    with pytest.raises(RuntimeError, match="not open"):
        await c.get("a")


async def test_sqlite_bad_path_fails_start(tmp: Path) -> None:
    (tmp / "file").write_text("")
    c = SqliteCache(path=str(tmp / "file" / "c.db"))
    with pytest.raises(OSError):
        await c.start()


def test_default_path_is_in_the_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/srv/state:/other")
    assert SqliteCache().path == "/srv/state/cache.sqlite3"
    assert SqliteCache(path="x.db").path == "/srv/state/x.db"
    assert SqliteCache(path="/abs/x.db").path == "/abs/x.db"
    monkeypatch.delenv("STATE_DIRECTORY")
    assert SqliteCache().path == "/var/lib/oneiric/cache.sqlite3"
    assert state_dir({"STATE_DIRECTORY": ""}) == "/var/lib/oneiric"
