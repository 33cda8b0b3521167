"""Process-wide logging: one line per event on stderr, journald-aware.

Under systemd, stderr is a stream into journald, which timestamps each line and reads a leading
``<N>`` as its syslog priority; elsewhere a reader needs the timestamp and level in the line.
Multiline messages and tracebacks stay one visible record: continuation lines are indented
(and, under journald, carry the same ``<N>`` so every journal entry keeps the right priority).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Final, TextIO

from oneiric.systemd import under_journal

__all__ = ["LEVELS", "configure_logging"]

#: Accepted ``--log-level`` values, lowest first (for click.Choice and error messages).
LEVELS: Final[tuple[str, ...]] = ("debug", "info", "warning", "error", "critical")

_CONTINUATION: Final = "  "
_HANDLER_MARK: Final = "_oneiric_handler"


def _syslog_priority(levelno: int) -> int:
    """Map a logging level to a syslog priority; custom levels round down to the nearest."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class _OneLineFormatter(logging.Formatter):
    """``2026-11-25T10:00:00.123Z LEVEL logger: message``; for journald ``<N>logger: message``."""

    def __init__(self, *, journal: bool) -> None:
        super().__init__("%(name)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        # The base class appends exc_text and stack_info after newlines; split it all here.
        # Never empty: the "%(name)s: " prefix is always there.
        lines = super().format(record).splitlines()
        if self.journal:
            prefix = f"<{_syslog_priority(record.levelno)}>"
            head = prefix + lines[0]
        else:
            prefix = ""
            head = f"{self._timestamp(record)} {record.levelname} {lines[0]}"
        tail = [f"{prefix}{_CONTINUATION}{line}" for line in lines[1:]]
        return "\n".join([head, *tail])

    @staticmethod
    def _timestamp(record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def configure_logging(
    level: str = "info",
    *,
    environ: Mapping[str, str] = os.environ,
    stream: TextIO | None = None,
) -> None:
    """Install the single stderr handler on the root logger (so plug-in components' loggers are
    included) at ``level``. Calling it again replaces the handler instead of adding one.

    Raises ValueError for a level name outside :data:`LEVELS` (case-insensitive).
    """
    name = level.strip().lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    target = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(target)
    handler.setFormatter(_OneLineFormatter(journal=under_journal(environ, stream=target)))
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(name.upper())
