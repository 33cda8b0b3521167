"""Process-wide logging: one line per event on stderr, journald-aware.

Under systemd, stderr is a stream into journald, which timestamps each line and reads a leading
``<N>`` as its syslog priority; elsewhere a reader needs the timestamp and level in the line.
Multiline messages and tracebacks stay one visible record: continuation lines are indented
(and, under journald, carry the same ``<N>`` so every journal entry keeps the right priority).

Under journald each record also goes through the journal's native protocol (one datagram of
``FIELD=value`` pairs on ``/run/systemd/journal/socket``) instead of the stream, so the
structured fields a record carries — the component key, the control op, the peer's uid
(:func:`fields`) — become journal fields: ``journalctl -u oneiricd ONEIRIC_KEY=adapter/cache``.
When the datagram cannot be sent (no socket, a full buffer) the record falls back to the
stream line, so nothing is lost.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Mapping
from typing import Any, Final, TextIO

from oneiric.systemd import under_journal

__all__ = ["JOURNAL_SOCKET", "LEVELS", "configure_logging", "fields"]

#: Accepted ``--log-level`` values, lowest first (for click.Choice and error messages).
LEVELS: Final[tuple[str, ...]] = ("debug", "info", "warning", "error", "critical")

_CONTINUATION: Final = "  "
_HANDLER_MARK: Final = "_oneiric_handler"
#: journald's native-protocol socket.
JOURNAL_SOCKET: Final = "/run/systemd/journal/socket"
_FIELDS_ATTR: Final = "oneiric_fields"


def fields(*, key: object = None, op: str | None = None, uid: int | None = None) -> dict[str, Any]:
    """``extra=`` for a log call that concerns a component key, a control op or a peer:
    ``log.info("swapped %s", key, extra=fields(key=key))``. Under journald they become the
    ``ONEIRIC_KEY``, ``ONEIRIC_OP`` and ``ONEIRIC_UID`` fields; the stream line is unchanged."""
    values = {"ONEIRIC_KEY": key, "ONEIRIC_OP": op, "ONEIRIC_UID": uid}
    return {_FIELDS_ATTR: {k: str(v) for k, v in values.items() if v is not None}}


def _journal_field(name: str, value: str) -> bytes:
    """One field of the native protocol: ``NAME=value\\n``, or, when the value holds a newline,
    ``NAME\\n`` + its length as 64-bit little-endian + the value + ``\\n``."""
    data = value.encode("utf-8", "replace")
    if b"\n" in data:
        return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name.encode() + b"=" + data + b"\n"


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


class _JournalHandler(logging.Handler):
    """Sends each record to journald as one native-protocol datagram with its fields; falls
    back to ``fallback`` (the stream handler's line) when the send fails."""

    def __init__(self, path: str, fallback: logging.Handler, identifier: str) -> None:
        super().__init__()
        self.path = path
        self.fallback = fallback
        self.identifier = identifier
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)  # never stall the event loop on a busy journal

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            parts = [
                _journal_field("MESSAGE", f"{record.name}: {message}"),
                _journal_field("PRIORITY", str(_syslog_priority(record.levelno))),
                _journal_field("SYSLOG_IDENTIFIER", self.identifier),
                _journal_field("LOGGER", record.name),
                _journal_field("CODE_FILE", str(record.pathname)),
                _journal_field("CODE_LINE", str(record.lineno)),
            ]
            if record.funcName:
                parts.append(_journal_field("CODE_FUNC", record.funcName))
            for name, value in getattr(record, _FIELDS_ATTR, {}).items():
                parts.append(_journal_field(name, value))
            self.sock.sendto(b"".join(parts), self.path)
        except OSError:  # no journal socket, buffer full, datagram too large: keep the line
            self.fallback.handle(record)
        except Exception:  # a record that cannot be formatted: logging's own reporting
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        self.fallback.close()
        super().close()


def configure_logging(
    level: str = "info",
    *,
    environ: Mapping[str, str] = os.environ,
    stream: TextIO | None = None,
    journal_socket: str = JOURNAL_SOCKET,
) -> None:
    """Install the single stderr handler on the root logger (so plug-in components' loggers are
    included) at ``level``. Calling it again replaces the handler instead of adding one.

    Raises ValueError for a level name outside :data:`LEVELS` (case-insensitive).
    """
    name = level.strip().lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    target = sys.stderr if stream is None else stream
    journal = under_journal(environ, stream=target)
    lines = logging.StreamHandler(target)
    lines.setFormatter(_OneLineFormatter(journal=journal))
    handler: logging.Handler = lines
    if journal:
        handler = _JournalHandler(journal_socket, lines, identifier="oneiricd")
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(name.upper())
    # watchfiles logs "N change(s) detected" at INFO on every save; the daemon says what the
    # save did itself, so only its warnings are worth a line
    logging.getLogger("watchfiles").setLevel(max(logging.WARNING, root.level))
