"""The building blocks of oneiricctl's output: JSON lines, times and durations, cells,
tables. Pure functions; see :mod:`oneiric.cli.render`.

The hot commands run without click (:mod:`oneiric.cli._ctl_fast`), and then every import
counts: nothing here imports :mod:`typing`, :mod:`json`, :mod:`datetime` or
:mod:`collections.abc` at run time (``json`` and ``datetime`` load when a value needs them).
"""

from __future__ import annotations

# The ABCs' own module, loaded by the interpreter at start-up: ``collections.abc`` re-exports
# the same classes but imports the whole ``collections`` package first.
from _collections_abc import Mapping

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any, Final, TypeAlias

    Doc: TypeAlias = Mapping[str, Any]

_DASH = "-"


def to_json(value: Any) -> str:
    """One compact JSON document on one line (the ``--json`` output unit; ``--watch`` prints
    one per line, so it must never contain a newline: ``json.dumps`` escapes newlines inside
    strings). Stdlib json, not msgspec: importing msgspec would cost more than the encoding."""
    import json  # on first use: ~0.7× the bare interpreter, paid only by output that needs it

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- who ---------------------------------------------------------------------------------------

_NAMES: dict[int, str] = {}


def user_name(uid: Any) -> str:
    """Who a uid is, for an operator: the user name (``root``), or ``uid 4242`` when the passwd
    database does not know it (a uid from another host's file, a deleted user). ``pwd`` is a
    built-in module: the lookup costs no import."""
    if isinstance(uid, bool) or not isinstance(uid, int):
        return f"uid {uid}"
    name = _NAMES.get(uid)
    if name is None:
        import pwd

        try:
            name = pwd.getpwuid(uid).pw_name
        except (KeyError, OverflowError, ValueError):
            name = f"uid {uid}"
        _NAMES[uid] = name
    return name


# --- time ------------------------------------------------------------------------------------


def parse_time(value: Any) -> float | None:
    """Epoch seconds from whatever the daemon sent: a number (epoch seconds) or an ISO 8601
    string (naive means UTC). ``None`` when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        import datetime as dt  # on first use: the daemon sends epoch seconds

        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.timestamp()
    return None


def duration(seconds: float) -> str:
    """Compact human duration: ``45s``, ``3m07s``, ``2h05m``, ``4d03h``."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def ago(value: Any, now: float) -> str:
    """Relative time for a timestamp: ``3s ago``, ``in 5m00s``, ``never`` when absent."""
    when = parse_time(value)
    if when is None:
        return "never"
    delta = now - when
    if -1 < delta < 1:
        return "just now"
    if delta < 0:
        return f"in {duration(-delta)}"
    return f"{duration(delta)} ago"


def seconds(value: Any) -> str:
    """``1.2s`` for an elapsed-seconds number, ``-`` when absent."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f}s"
    return _DASH


def millis(value: Any) -> str:
    """``12.3 ms`` for a millisecond number, ``-`` when absent."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f} ms"
    return _DASH


# --- generic building blocks -----------------------------------------------------------------


def cell(value: Any) -> str:
    """One table cell: ``-`` for nothing, compact JSON for structures."""
    if value is None or value == "":
        return _DASH
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(value)
    return to_json(value)


class Look:
    """How this process prints tables, set once by the CLI from its options and terminal:
    ``headers`` (off with ``--no-headers``) and ``colour`` (only on a terminal, never under
    ``--json`` or ``NO_COLOR``)."""

    __slots__ = ("colour", "headers")

    def __init__(self) -> None:
        self.headers = True
        self.colour = False


LOOK = Look()

#: Words coloured in tables on a terminal: what needs attention red, operator intent yellow.
_COLOURS: Final = {
    "failed": "red",
    "degraded": "red",
    "dead": "red",
    "rollback": "red",
    "restart": "red",
    "paused": "yellow",
    "draining": "yellow",
    "drained": "yellow",
    "activating": "yellow",
    "interrupted": "yellow",
}


def _paint(padded: str) -> str:
    colour = _COLOURS.get(padded.strip())
    if colour is None:
        return padded
    import click  # loaded already by the CLI

    return click.style(padded, fg=colour)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces; returns the header line (unless
    ``--no-headers``) followed by one line per row (callers interleave detail lines under rows:
    the rows are always the last ``len(rows)`` lines). On a terminal, cells that are a state
    needing attention are coloured (the width is the text's, so columns stay aligned)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    paint = _paint if LOOK.colour else str

    def line(cells: Sequence[str], paint: Callable[[str], str] = str) -> str:
        padded = [paint(text.ljust(widths[i])) for i, text in enumerate(cells)]
        return "  ".join(padded).rstrip()

    body = [line(row, paint) for row in rows]
    return [line(headers), *body] if LOOK.headers else body


def split_table(lines: list[str], rows: int) -> tuple[list[str], list[str]]:
    """``table()``'s output as (header lines, row lines)."""
    return lines[: len(lines) - rows], lines[len(lines) - rows :]


def mapping_lines(result: Any, indent: str = "") -> list[str]:
    """``key: value`` lines for a result whose exact shape the CLI does not interpret (sync,
    ``--no-wait`` acknowledgements): readable, and forward compatible."""
    if not isinstance(result, Mapping):
        return [indent + cell(result)]
    if not result:
        return [indent + "(empty)"]
    return [f"{indent}{name}: {cell(value)}" for name, value in result.items()]


def names(items: Iterable[Any]) -> str:
    """Comma-separated list, ``none`` when empty."""
    listed = [cell(item) for item in items]
    return ", ".join(listed) if listed else "none"
