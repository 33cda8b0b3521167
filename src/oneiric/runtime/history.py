"""The daemon's recent history (SPEC §11): swaps with their durations and outcomes, rollbacks,
operator intent changes with who and why, reloads, remote syncs, service restarts.

A bounded in-memory ring (``oneiricctl events``, ``--follow`` streams new entries as they are
recorded), plus the last few entries of each key (shown by ``status DOMAIN KEY``; dropped when
the key is gone, :meth:`History.forget`). Recording is synchronous and cheap (a Struct, a
deque append and a small tuple); followers park on one event that the next record sets, made
only when someone follows, so recording with nobody following costs no event at all.
``listeners`` are called with each entry as it is recorded (the metrics exporter observes swap
durations this way).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import anyio

from oneiric.runtime.health import HistoryEntry, HistoryKind

__all__ = ["HISTORY_SIZE", "KEY_HISTORY", "History", "HistoryEntry", "HistoryKind"]

#: Entries the ring keeps (the oldest go first).
HISTORY_SIZE: Final = 1000
#: Entries kept per key for ``status DOMAIN KEY``.
KEY_HISTORY: Final = 5


class History:
    def __init__(self, size: int = HISTORY_SIZE, *, clock: Callable[[], float] = time.time) -> None:
        self._ring: deque[HistoryEntry] = deque(maxlen=size)
        # a tuple per key, not a deque: most keys have one entry (their activation), and an
        # empty deque is ~0.4 KiB (4 MiB at 10,000 keys) against ~50 B for a 1-tuple
        self._by_key: dict[str, tuple[HistoryEntry, ...]] = {}
        self._clock = clock
        self._seq = 0
        self._changed: anyio.Event | None = None  # made only when a follower waits
        self.listeners: list[Callable[[HistoryEntry], object]] = []

    @property
    def last_seq(self) -> int:
        return self._seq

    def record(
        self, kind: HistoryKind, message: str, *, key: object = None, **detail: Any
    ) -> HistoryEntry:
        self._seq += 1
        name = None if key is None else str(key)
        entry = HistoryEntry(
            seq=self._seq,
            at=self._clock(),
            kind=kind,
            message=message,
            key=name,
            detail={k: v for k, v in detail.items() if v is not None},
        )
        self._ring.append(entry)
        if name is not None:
            per_key = self._by_key.get(name, ())
            self._by_key[name] = (*per_key[1 - KEY_HISTORY :], entry)
        changed = self._changed
        if changed is not None:  # made only when someone waits (10,000 records at start-up)
            self._changed = None
            changed.set()
        for listener in self.listeners:
            listener(entry)
        return entry

    def entries(
        self, *, since: float | None = None, after_seq: int = 0, key: str | None = None
    ) -> list[HistoryEntry]:
        """Entries newer than ``after_seq`` recorded at or after ``since`` (epoch s), of ``key``
        (``domain/key``, or ``domain/`` for a whole domain) when given, oldest first."""
        return [
            e
            for e in self._ring
            if e.seq > after_seq
            and (since is None or e.at >= since)
            and (key is None or (e.key is not None and _matches(e.key, key)))
        ]

    def of_key(self, key: str) -> list[HistoryEntry]:
        """The last :data:`KEY_HISTORY` entries of one key, oldest first."""
        return list(self._by_key.get(key, ()))

    def forget(self, key: object) -> None:
        """Drop the per-key entries of a key that is gone (removed from every source, nothing
        serving or retiring): a reload adding and removing keys must not grow them forever.
        Its entries stay in the ring."""
        self._by_key.pop(str(key), None)

    @property
    def keys_kept(self) -> int:
        """How many keys have per-key entries (a memory figure, for tests and debugging)."""
        return len(self._by_key)

    async def wait_after(self, seq: int) -> None:
        """Return once an entry newer than ``seq`` exists."""
        while self._seq <= seq:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()


def _matches(entry_key: str, wanted: str) -> bool:
    return entry_key.startswith(wanted) if wanted.endswith("/") else entry_key == wanted
