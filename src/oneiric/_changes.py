"""A version number that waiters can follow without polling."""

from __future__ import annotations

import anyio


class ChangeCounter:
    """``version`` moves on every :meth:`bump`; :meth:`wait_changed` parks on one event that
    each bump sets and replaces, so any number of waiters wake together and none polls."""

    def __init__(self) -> None:
        self.version = 0
        self._changed = anyio.Event()

    def bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_changed(self, seen: int) -> int:
        """Return the current version once it differs from ``seen``."""
        while self.version == seen:
            await self._changed.wait()
        return self.version
