"""The dead-letter list: events whose handler failed every try (SPEC §10).

Bounded (``[daemon] dead_letters``, default 1000): when full, the oldest entry is dropped,
counted (``overflow``) and logged — never silently. The list is kept in the state dir
(``dead-letters.json``, replaced atomically and fsync'd after each change, off the event loop)
so a restart does not lose what an operator still has to look at; ``oneiricctl events --dead``
shows it and ``oneiricctl replay ID|--all`` hands entries back to their handler.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections import OrderedDict
from typing import Any

import anyio
import msgspec

from oneiric._files import atomic_write

log = logging.getLogger(__name__)

FILE_NAME = "dead-letters.json"


class DeadLetter(msgspec.Struct, kw_only=True):
    """One event that exhausted its retries on one handler key."""

    id: int  # dead-letter id, what ``replay`` takes; increasing, never reused
    key: str  # the event key whose handler failed ("event/<key>" is its status name)
    provider: str  # the provider that failed it last
    topic: str
    data: Any = None
    event_id: int
    emitted_at: float
    attempts: int  # tries made, all failed
    error: str  # what the last try raised
    dead_at: float
    replays: int = 0  # how many times this event was replayed before dying again


class _File(msgspec.Struct, kw_only=True):
    next_id: int = 1
    overflow: int = 0
    dead: list[DeadLetter] = []


class DeadLetters:
    """In memory, mirrored to ``path`` (None: memory only)."""

    def __init__(self, limit: int = 1000, path: str | None = None) -> None:
        self.limit = limit
        self.path = path
        self.entries: OrderedDict[int, DeadLetter] = OrderedDict()
        self.next_id = 1
        self.overflow = 0  # entries dropped because the list was full
        self._version = 0
        self._saved = 0
        self._lock = anyio.Lock()

    def load(self) -> None:
        """Read the file left by the previous run (blocking). A damaged file is renamed aside
        and reported, not fatal: dead letters are a record, not operator intent."""
        if self.path is None or not os.path.exists(self.path):
            return
        try:
            with open(self.path, "rb") as fh:
                state = msgspec.json.decode(fh.read(), type=_File)
        except (OSError, msgspec.DecodeError) as exc:
            aside = f"{self.path}.broken"
            log.error("cannot read %s (%s); moved it to %s", self.path, exc, aside)
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            return
        self.next_id = max(state.next_id, 1)
        self.overflow = state.overflow
        for entry in state.dead[-self.limit :]:
            self.entries[entry.id] = entry
            self.next_id = max(self.next_id, entry.id + 1)

    def add(self, **fields: Any) -> DeadLetter:
        entry = DeadLetter(id=self.next_id, **fields)
        self.next_id += 1
        self.entries[entry.id] = entry
        while len(self.entries) > self.limit:
            _, oldest = self.entries.popitem(last=False)
            self.overflow += 1
            log.warning(
                "dead-letter list full (%d): dropped the oldest, #%d (event #%d %s on %s)",
                self.limit,
                oldest.id,
                oldest.event_id,
                oldest.topic,
                oldest.key,
            )
        self._version += 1
        return entry

    def take(self, ids: list[int]) -> list[DeadLetter]:
        """Remove and return these entries (unknown ids are skipped)."""
        out = [self.entries.pop(i) for i in ids if i in self.entries]
        if out:
            self._version += 1
        return out

    def put_back(self, entries: list[DeadLetter]) -> None:
        """Undo :meth:`take` for entries that could not be replayed, in id order."""
        for entry in entries:
            self.entries[entry.id] = entry
        self.entries = OrderedDict(sorted(self.entries.items()))
        if entries:
            self._version += 1

    def list(self) -> list[DeadLetter]:
        return list(self.entries.values())

    async def save(self) -> None:
        """Write the list if it changed since the last write (concurrent calls coalesce)."""
        if self.path is None:
            return
        async with self._lock:
            version = self._version
            if version == self._saved:
                return
            data = msgspec.json.encode(
                _File(next_id=self.next_id, overflow=self.overflow, dead=self.list())
            )
            try:
                await anyio.to_thread.run_sync(
                    functools.partial(atomic_write, self.path, data, mode=0o600)
                )
            except OSError as exc:
                log.error("cannot write %s: %s (the list is kept in memory)", self.path, exc)
                return
            self._saved = version
