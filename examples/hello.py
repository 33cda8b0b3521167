"""A component written for the demo: the smallest useful task, and the pattern to copy.

It leases the cache adapter (so pausing the cache makes it wait), keeps a count per name, and
publishes a ``greeting.sent`` event that the demo's ``event/audit`` handler logs.

``make run`` puts this directory on PYTHONPATH, so the config names it ``hello:Greeter``.
"""

from __future__ import annotations

from typing import Any

import oneiric


class Greeter:
    """Task. Settings: ``greeting`` (default ``"hello"``). Payload: ``{"name": "..."}``."""

    def __init__(self, greeting: str = "hello") -> None:
        self.greeting = greeting

    async def run(self, payload: Any = None) -> str:
        name = payload.get("name", "world") if isinstance(payload, dict) else "world"
        async with oneiric.use("adapter", "cache") as cache:
            count = int(await cache.get(f"greeted:{name}", 0)) + 1
            await cache.set(f"greeted:{name}", count)
        await oneiric.emit("greeting.sent", {"name": name, "count": count})
        return f"{self.greeting}, {name}! (greeting #{count})"


class Payments:
    """Event handler for the demo's dead letters: it books ``order.paid`` events and refuses
    those with a negative ``amount`` (raises), so with ``retry`` they are tried again and then
    land in the dead-letter list (``oneiricctl events --dead``)."""

    def __init__(self) -> None:
        self.booked = 0

    async def handle(self, event: oneiric.Event) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        amount = data.get("amount", 0)
        if not isinstance(amount, int | float) or amount < 0:
            raise ValueError(f"cannot book amount {amount!r}")
        async with oneiric.use("adapter", "cache") as cache:
            self.booked += 1
            await cache.set("payments:booked", self.booked)
