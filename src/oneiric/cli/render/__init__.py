"""Pure formatting for oneiricctl: every table, sentence and timestamp an operator reads.

Nothing here does I/O or talks to the daemon. Each function takes decoded JSON (plain dicts and
lists, exactly as the control protocol and the health file deliver them) and returns text, so
the whole of oneiricctl's output is unit-tested without a socket and the command module stays a
thin shell. Unknown or missing fields render as ``-`` instead of failing: the client must keep
working against a newer daemon that adds fields (SPEC §5 only promises never to remove them).

Split by what is rendered — :mod:`~oneiric.cli.render.text` (JSON lines, times, cells and
tables), :mod:`~oneiric.cli.render.status` (the status document) and
:mod:`~oneiric.cli.render.ops` (each operation's reply) — and gathered here, so the commands
keep one vocabulary: ``render.render_status(...)``, ``render.to_json(...)``.
"""

from __future__ import annotations

from oneiric.cli.render.history import (
    recent_events_lines,
    render_event_line,
    render_events,
)
from oneiric.cli.render.ops import (
    drain_progress,
    drain_timeout_message,
    in_flight_summary,
    render_drain,
    render_emit,
    render_explain,
    render_intent,
    render_list,
    render_ping,
    render_reload,
    render_run,
    render_swap,
    render_sync,
    target_name,
    workflow_failed,
)
from oneiric.cli.render.records import render_dead_letters, render_replay, render_runs
from oneiric.cli.render.status import (
    FAILING,
    component_name,
    failing,
    filter_components,
    note_cell,
    provider_cell,
    render_status,
    stale_banner,
    status_header,
)
from oneiric.cli.render.text import (
    LOOK,
    ago,
    cell,
    duration,
    mapping_lines,
    millis,
    names,
    parse_time,
    seconds,
    table,
    to_json,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from oneiric.cli.render.text import Doc

__all__ = [
    "FAILING",
    "LOOK",
    "Doc",
    "ago",
    "cell",
    "component_name",
    "drain_progress",
    "drain_timeout_message",
    "duration",
    "failing",
    "filter_components",
    "in_flight_summary",
    "mapping_lines",
    "millis",
    "names",
    "note_cell",
    "parse_time",
    "provider_cell",
    "recent_events_lines",
    "render_dead_letters",
    "render_drain",
    "render_emit",
    "render_event_line",
    "render_events",
    "render_explain",
    "render_intent",
    "render_list",
    "render_ping",
    "render_reload",
    "render_replay",
    "render_run",
    "render_runs",
    "render_status",
    "render_swap",
    "render_sync",
    "seconds",
    "stale_banner",
    "status_header",
    "table",
    "target_name",
    "to_json",
    "workflow_failed",
]
