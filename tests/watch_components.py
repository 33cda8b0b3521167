"""A test component for the config-watch tests: it counts constructions and starts, records
how many of its starts overlap (at most one swap per key may be in flight), announces each
start through an event, and can hold its start on a gate from ``components.GATES``."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import anyio.lowlevel

import components as comp

CALLS: Counter[str] = Counter()
STARTED: dict[str, anyio.Event] = {}
ACTIVE: list[int] = [0]  # starts in progress right now
MAX_ACTIVE: list[int] = [0]  # the most that were ever in progress at once


def started(name: str) -> anyio.Event:
    ev = STARTED.get(name)
    if ev is None:
        ev = STARTED[name] = anyio.Event()
    return ev


def reset() -> None:
    CALLS.clear()
    STARTED.clear()
    ACTIVE[0] = MAX_ACTIVE[0] = 0


class Tracked:
    """Settings: name, gate (a ``components.gate`` name start() waits on), fail (start raises),
    value (anything; a changed value is a changed candidate)."""

    def __init__(self, name: str, gate: str = "", fail: bool = False, value: Any = None) -> None:
        self.name, self.gate, self.fail, self.value = name, gate, fail, value
        CALLS[f"{name}.init"] += 1

    async def start(self) -> None:
        CALLS[f"{self.name}.start"] += 1
        ACTIVE[0] += 1
        MAX_ACTIVE[0] = max(MAX_ACTIVE[0], ACTIVE[0])
        try:
            started(self.name).set()
            if self.gate:
                await comp.gate(self.gate).wait()
            await anyio.lowlevel.checkpoint()  # so overlapping starts would be seen
            if self.fail:
                raise RuntimeError(f"{self.name} cannot start")
        finally:
            ACTIVE[0] -= 1

    async def stop(self) -> None:
        CALLS[f"{self.name}.stop"] += 1
