"""A logging event handler: one log line per event, and the last few kept for inspection."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import msgspec

log = logging.getLogger(__name__)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


class LogEvents:
    """Event handler. Settings: ``level`` (``debug``/``info``/``warning``; default ``info``),
    ``keep`` (how many recent events to remember in :attr:`recent`; default 100)."""

    def __init__(self, level: str = "info", keep: int = 100) -> None:
        if level not in _LEVELS:
            raise ValueError(f"level must be one of {', '.join(_LEVELS)}, got {level!r}")
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep!r}")
        self.level = _LEVELS[level]
        self.recent: deque[Any] = deque(maxlen=keep)
        self.handled = 0

    async def handle(self, event: Any) -> None:
        data = getattr(event, "data", None)
        try:
            text = msgspec.json.encode(data).decode()
        except (TypeError, ValueError):
            text = repr(data)
        log.log(
            self.level,
            "event #%s %s: %s",
            getattr(event, "id", "?"),
            getattr(event, "topic", "?"),
            text,
        )
        self.handled += 1
        self.recent.append(event)
