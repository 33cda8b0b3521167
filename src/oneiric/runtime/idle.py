"""Waiting for keys to go idle: what a drain and a shutdown wait on.

A key is idle when no lease on any of its instances is in flight. Nothing here polls: the wait
parks on each busy slot's idle event and on the runtime's change counter (a key may appear,
or start serving, while the wait is under way), whichever fires first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio

from oneiric._changes import ChangeCounter
from oneiric.runtime.keys import ComponentKey, KeyState
from oneiric.runtime.leases import Slot
from oneiric.runtime.lifecycle import call_maybe_async

__all__ = ["bump_when_idle", "in_flight", "wait_idle"]


def in_flight(
    states: Mapping[ComponentKey, KeyState], keys: Iterable[ComponentKey]
) -> dict[str, int]:
    """``{"domain/key": leases in flight}`` for each busy key of ``keys``."""
    out: dict[str, int] = {}
    for ck in keys:
        st = states.get(ck)
        if st is not None and st.slot.in_flight:
            out[st.slot.name] = st.slot.in_flight
    return out


async def wait_idle(
    states: Mapping[ComponentKey, KeyState],
    changes: ChangeCounter,
    keys: Iterable[ComponentKey],
    *,
    progress: Callable[[dict[str, int]], Any] | None = None,
) -> None:
    """Wait until every key in ``keys`` has no lease in flight, reporting progress (the map of
    what is still in flight) each time it changes. Cancel it to bound it."""
    keys = list(keys)
    last: dict[str, int] | None = None
    seen = changes.version
    while True:
        now = in_flight(states, keys)
        if now != last and progress is not None:
            await call_maybe_async(progress, now)
        last = now
        if not now:
            return
        async with anyio.create_task_group() as tg:
            # wake on whichever comes first: a key going idle or any runtime change
            async def _idle(slot: Slot) -> None:
                await slot.wait_idle()
                tg.cancel_scope.cancel()

            for ck in keys:
                st = states.get(ck)
                if st is not None and st.slot.in_flight:
                    tg.start_soon(_idle, st.slot)

            async def _changed(since: int) -> None:
                await changes.wait_changed(since)
                tg.cancel_scope.cancel()

            tg.start_soon(_changed, seen)
        seen = changes.version


async def bump_when_idle(slot: Slot, changes: ChangeCounter) -> None:
    """Bump ``changes`` once ``slot`` has no lease in flight (status flips to ``drained``)."""
    await slot.wait_idle()
    changes.bump()
