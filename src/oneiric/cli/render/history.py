"""The daemon's history (``oneiricctl events``, and the tail of ``status DOMAIN KEY``)."""

from __future__ import annotations

import time

from oneiric.cli.render.text import cell, table, user_name

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from oneiric.cli.render.text import Doc


def when(at: Any) -> str:
    """Local wall-clock time of an entry: ``14:03:07``, with the date when not today."""
    if not isinstance(at, int | float):
        return "?"
    local = time.localtime(at)
    today = time.localtime()[:3] == local[:3]
    return time.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S", local)


def message(entry: Doc) -> str:
    """The entry's message, with the daemon's ``by uid N`` told as the user's name (the daemon
    records the uid; the name is looked up here, where a slow NSS lookup blocks no one)."""
    text = cell(entry.get("message"))
    uid = (entry.get("detail") or {}).get("uid")
    if isinstance(uid, int) and not isinstance(uid, bool):
        text = text.replace(f" by uid {uid}", f" by {user_name(uid)}", 1)
    return text


def event_row(entry: Doc) -> tuple[str, str, str, str]:
    return (
        when(entry.get("at")),
        cell(entry.get("kind")),
        cell(entry.get("key") or "-"),
        message(entry),
    )


def render_events(entries: Iterable[Doc]) -> str:
    rows = [event_row(e) for e in entries]
    if not rows:
        return "(no events)"
    return "\n".join(table(("TIME", "KIND", "KEY", "WHAT"), rows))


def render_event_line(entry: Doc) -> str:
    """One followed entry (``events --follow``): the same columns, unaligned."""
    return "  ".join(event_row(entry))


def recent_events_lines(doc: Doc) -> list[str]:
    """``status DOMAIN KEY``'s tail: that key's last history entries."""
    entries = doc.get("recent_events") or ()
    if not entries:
        return []
    return ["", "recent events:", *(f"  {render_event_line(e)}" for e in entries)]
