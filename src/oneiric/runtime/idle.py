"""Waiting for keys to go idle: what a drain and a shutdown wait on.

A key is idle when no lease on any of its instances is in flight. Nothing here polls: the wait
parks on one event that each of its keys sets when it goes idle or changes (it may start
serving, or be resumed, while the wait is under way), whichever fires first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio

from oneiric.runtime.keys import ComponentKey, KeyState
from oneiric.runtime.lifecycle import call_maybe_async

__all__ = ["in_flight", "touch_when_idle", "wait_idle"]


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


class _Wake:
    """One waiter registered on many keys at once; each round waits on a fresh event."""

    def __init__(self) -> None:
        self.event = anyio.Event()

    def set(self) -> None:
        self.event.set()


async def wait_idle(
    states: Mapping[ComponentKey, KeyState],
    keys: Iterable[ComponentKey],
    *,
    progress: Callable[[dict[str, int]], Any] | None = None,
) -> None:
    """Wait until every key in ``keys`` has no lease in flight, reporting progress (the map of
    what is still in flight) each time it changes. Cancel it to bound it.

    One waiter is registered on the keys themselves (each going idle, each changing), so a
    change elsewhere in the runtime wakes nothing here, and no task is started per wake-up."""
    keys = list(keys)
    wake = _Wake()
    watched: list[KeyState] = []
    last: dict[str, int] | None = None
    try:
        for ck in keys:
            st = states.get(ck)
            if st is not None:
                st.listen(wake)
                st.slot.listen_idle(wake)
                watched.append(st)
        while True:
            now = in_flight(states, keys)
            if now != last and progress is not None:
                await call_maybe_async(progress, now)
            last = now
            if not now:
                return
            await wake.event.wait()
            wake.event = anyio.Event()
    finally:
        for st in watched:
            st.unlisten(wake)
            st.slot.unlisten_idle(wake)


async def touch_when_idle(st: KeyState, touch: Callable[[KeyState], None]) -> None:
    """``touch(st)`` once the key has no lease in flight (status flips to ``drained``)."""
    await st.slot.wait_idle()
    touch(st)
