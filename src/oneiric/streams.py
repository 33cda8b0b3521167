"""The control ops that stream: ``watch`` and ``events --follow`` (SPEC §8, §11).

Each holds a request open and emits events until the daemon stops (or the peer goes): what
they share is waiting on the runtime's change signals and the cost a stream puts on the
daemon. ``watch`` is bounded per uid (every stream copies each snapshot) and encodes one
snapshot per runtime version however many streams follow it; ``events --follow`` wakes on a
new history entry or any runtime change, whichever comes first. :class:`~oneiric.handlers.
ControlHandler` hands these its peer and ``emit``; it owns nothing else of theirs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
import msgspec

from oneiric.control.peers import Peer
from oneiric.control.protocol import EventsRequest
from oneiric.control.replies import (
    EncodedWatchSnapshot,
    EventsEntry,
    EventsReply,
    WatchEnded,
    WatchSnapshot,
)
from oneiric.control.session import Emit
from oneiric.errors import Unavailable
from oneiric.runtime.core import Runtime
from oneiric.runtime.reporter import HealthReporter

__all__ = ["MAX_WATCHES_PER_ADMIN", "MAX_WATCHES_PER_READER", "WatchStreams", "follow_events"]

#: Watch streams one uid may hold open: each costs a copy of every snapshot per change.
MAX_WATCHES_PER_READER = 16
MAX_WATCHES_PER_ADMIN = 256


class WatchStreams:
    """Every open ``watch``: the per-uid count and the one encoded snapshot they share."""

    def __init__(self, rt: Runtime, health: HealthReporter) -> None:
        self.rt = rt
        self.health = health
        self._open: dict[int, int] = {}  # uid -> watch streams open
        self._cache: tuple[tuple[int, str], EncodedWatchSnapshot] | None = None

    async def stream(self, emit: Emit, peer: Peer) -> WatchEnded:
        """A snapshot now and after every change, until the daemon has stopped."""
        limit = MAX_WATCHES_PER_ADMIN if peer.role == "admin" else MAX_WATCHES_PER_READER
        if self._open.get(peer.uid, 0) >= limit:
            raise Unavailable(
                f"too many watch streams from uid {peer.uid} (at most {limit}); end one first"
            )
        self._open[peer.uid] = self._open.get(peer.uid, 0) + 1
        try:
            rt = self.rt
            seen = -1
            while True:
                seen = rt.version
                await emit(self._event(seen))
                if self.health.state == "stopped":
                    return WatchEnded(ended="daemon stopping")
                await rt.wait_changed(seen)
        finally:
            self._open[peer.uid] -= 1
            if not self._open[peer.uid]:
                del self._open[peer.uid]

    def _event(self, version: int) -> EncodedWatchSnapshot:
        """The snapshot event for runtime ``version``, encoded once however many streams
        follow it (each stream copies the bytes into its own line)."""
        key = (version, self.health.state)
        cached = self._cache
        if cached is None or cached[0] != key:
            snap = self.health.snapshot(encoded=True)  # rows: the runtime's cached JSON
            encoded = msgspec.json.encode(WatchSnapshot(snapshot=snap))
            cached = self._cache = (key, EncodedWatchSnapshot(msgspec.Raw(encoded)))
        return cached[1]


async def follow_events(
    rt: Runtime, health: HealthReporter, req: EventsRequest, emit: Emit
) -> EventsReply:
    """``events``: the history entries asked for; with ``follow``, each new one as an event
    until the daemon stops."""
    history = rt.history
    key = None
    if req.domain is not None:
        if req.key is not None:
            rt.state(req.domain, req.key)  # raises not_found naming the key
        key = f"{req.domain}/{req.key}" if req.key is not None else f"{req.domain}/"
    since = None if req.since_s is None else time.time() - req.since_s
    entries = history.entries(since=since, key=key)
    if not req.follow:
        return EventsReply(events=entries)
    seen = history.last_seq
    for entry in entries:
        await emit(EventsEntry(entry=entry))
    while health.state not in ("stopping", "stopped"):
        await _history_or_state_change(rt, seen)
        # taken before the first send: entries recorded while a slow peer's sends wait are
        # after `seen` and go out on the next turn, never skipped
        batch, seen = history.entries(after_seq=seen, key=key), history.last_seq
        for entry in batch:
            await emit(EventsEntry(entry=entry))
    return EventsReply(events=[], ended="daemon stopping")


async def _history_or_state_change(rt: Runtime, seen: int) -> None:
    """Return on a new history entry, or on any runtime change (the daemon stopping is one),
    whichever comes first."""
    version = rt.version
    async with anyio.create_task_group() as tg:

        async def first(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            tg.cancel_scope.cancel()

        tg.start_soon(first, partial(rt.history.wait_after, seen))
        tg.start_soon(first, partial(rt.wait_changed, version))
