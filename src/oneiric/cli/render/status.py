"""The status document (``status``, ``health``, ``status --watch``) as an operator reads it:
the daemon header, one row per component, details of the ones that need attention, and what
makes the command exit 1. Pure functions; see :mod:`oneiric.cli.render`."""

from __future__ import annotations

from oneiric.cli.render.history import recent_events_lines
from oneiric.cli.render.text import (
    ago,
    cell,
    duration,
    parse_time,
    split_table,
    table,
    user_name,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

    from oneiric.cli.render.text import Doc

#: Lifecycle states that make ``status``/``health`` exit 1. Paused or drained components are
#: operator intent, not failure (SPEC §7), so ``admin`` never counts.
FAILING = frozenset({"failed", "degraded"})


# --- status / health -------------------------------------------------------------------------


def component_name(component: Doc) -> str:
    return f"{component.get('domain', '?')}/{component.get('key', '?')}"


def failing(doc: Doc) -> list[str]:
    """What makes ``status`` and ``health`` exit 1: a config on disk that does not load, and
    ``domain/key (why)`` for every failed or degraded component and every service whose
    ``run()`` keeps crashing (in backoff): a crash loop is not healthy, whatever its lifecycle."""
    out = []
    error = (doc.get("config") or {}).get("last_error")
    if error:  # the files on disk do not load: the next restart would fail
        out.append("config (the files on disk are broken; the running config is kept)")
    for c in doc.get("components") or ():
        if c.get("lifecycle") in FAILING:
            out.append(f"{component_name(c)} ({c.get('lifecycle')})")
        elif c.get("run_state") == "backoff":
            out.append(f"{component_name(c)} (run() crashing, {c.get('restarts', 0)} restart(s))")
    return out


def filter_components(doc: Doc, domain: str | None, key: str | None) -> dict[str, Any]:
    """The document with only the components of ``domain`` (and ``key``): what the daemon does
    for ``status DOMAIN KEY``, applied locally to a snapshot read from the health file or a
    watch event."""
    out = dict(doc)
    if domain is None:
        return out
    out["components"] = [
        c
        for c in doc.get("components") or ()
        if c.get("domain") == domain and (key is None or c.get("key") == key)
    ]
    return out


def status_header(doc: Doc, now: float, *, live: bool = True) -> list[str]:
    """Daemon state, pid, uptime and freshness; the config error and remote status when they
    matter. ``live=False`` for a snapshot read from the health file of a daemon that does not
    answer: it is never shown as running, nor given an uptime."""
    state = doc.get("state", "?")
    if live or state == "stopped":
        parts = [f"oneiricd {state}"]
    else:
        parts = [f"oneiricd NOT RUNNING (its last snapshot says {state})"]
    if doc.get("version"):
        parts.append(f"v{doc['version']}")
    if doc.get("pid") is not None:
        parts.append(f"pid {doc['pid']}")
    started = parse_time(doc.get("started_at"))
    if started is not None and live:
        parts.append(f"up {duration(now - started)}")
    if doc.get("updated_at") is not None:
        parts.append(f"updated {ago(doc.get('updated_at'), now)}")
    lines = ["  ".join(parts)]
    config = doc.get("config") or {}
    if config.get("path"):
        lines.append(f"config: {config['path']} (loaded {ago(config.get('loaded_at'), now)})")
    if config.get("last_error"):
        lines.append(f"config error: {config['last_error']} (the running config is kept)")
    watcher = doc.get("watcher") or {}
    if watcher.get("state") in ("failed", "off"):  # the unusual only
        why = f": {watcher['last_error']}" if watcher.get("last_error") else ""
        lines.append(
            f"config watch: {watcher['state']}{why} (changes apply on 'oneiricctl reload')"
        )
    plugins = doc.get("plugins") or {}
    for broken in plugins.get("errors") or ():
        lines.append(f"plugin skipped: {broken}")
    remote = doc.get("remote") or {}
    if remote.get("status") or remote.get("url"):
        detail = [remote.get("status") or "?"]
        if remote.get("version") is not None:
            detail.append(f"version {remote['version']}")
        if remote.get("last_check_at") is not None:
            detail.append(f"checked {ago(remote['last_check_at'], now)}")
        if remote.get("next_check_at") is not None and remote.get("status") != "disabled":
            detail.append(f"next {ago(remote['next_check_at'], now)}")
        lines.append("remote: " + ", ".join(str(d) for d in detail))
        if remote.get("last_error"):
            lines.append(f"remote error: {remote['last_error']}")
        for why in remote.get("restart_reasons") or ():
            lines.append(f"restart needed: {why}")
    return lines


def provider_cell(component: Doc) -> str:
    """The serving provider, with a parked selection shown as ``cache→sqlite (parked)``."""
    provider = cell(component.get("provider"))
    parked = component.get("parked_provider")
    return f"{provider}→{parked} (parked)" if parked else provider


def note_cell(component: Doc, now: float) -> str:
    """The operator's note, and who set the intent when (user, "3m ago"): SPEC §4's who/when."""
    note = component.get("note")
    uid, at = component.get("intent_uid"), component.get("intent_at")
    who = []
    if uid is not None:
        who.append(user_name(uid))
    if at is not None:
        who.append(ago(at, now))
    by = component.get("paused_by")
    if by in ("domain", "global"):
        who.append(f"via {'the domain' if by == 'domain' else 'everything'}")
    text = "" if note is None else cell(note)
    if who and component.get("admin") not in (None, "active"):
        return f"{text} ({', '.join(who)})" if text else f"({', '.join(who)})"
    return text


def _component_details(component: Doc) -> list[str]:
    details = []
    if component.get("last_error"):
        details.append(f"error: {component['last_error']}")
    held, dropped = component.get("held_events") or 0, component.get("dropped_events") or 0
    if held or dropped:
        details.append(f"events held: {held}, dropped: {dropped}")
    if component.get("dead_letters"):
        details.append(f"dead letters: {component['dead_letters']} (oneiricctl events --dead)")
    # the unusual only: a healthy key shows no detail lines
    restarts, run_state = component.get("restarts") or 0, component.get("run_state")
    if restarts or run_state in ("backoff", "exited"):
        backoff = component.get("backoff_s")
        extra = f", next try in {duration(backoff)}" if run_state == "backoff" and backoff else ""
        details.append(f"service {run_state or 'run'}: {restarts} restart(s){extra}")
    skipped, failed = component.get("skipped_runs") or 0, component.get("failed_runs") or 0
    if skipped or failed:
        details.append(f"runs: {component.get('runs') or 0}, failed: {failed}, skipped: {skipped}")
    if component.get("last_run_error") and component.get("last_run_error") != component.get(
        "last_error"
    ):
        details.append(f"last run: {component['last_run_error']}")
    return details


def render_status(doc: Doc, *, now: float, live: bool = True) -> str:
    """The ``status`` screen: header, then DOMAIN KEY PROVIDER ADMIN LIFECYCLE IN-FLIGHT NOTE
    with each component's last error on the line below it (``live``: see status_header)."""
    lines = status_header(doc, now, live=live)
    lines.append("")
    components = list(doc.get("components") or ())
    if not components:
        lines.append("(no components)")
    else:
        lines.extend(_component_table(components, now))
    bad = failing(doc)
    if bad:
        lines.append("")
        lines.append(f"{len(bad)} failing: {', '.join(bad)}")
    lines.extend(recent_events_lines(doc))
    return "\n".join(lines)


def _component_table(components: list[Doc], now: float) -> list[str]:
    lines = []
    headers = ("DOMAIN", "KEY", "PROVIDER", "ADMIN", "LIFECYCLE", "IN-FLIGHT", "NOTE")
    rows = [
        (
            cell(c.get("domain")),
            cell(c.get("key")),
            provider_cell(c),
            cell(c.get("admin")),
            cell(c.get("lifecycle")),
            cell(c.get("in_flight", 0)),
            note_cell(c, now),
        )
        for c in components
    ]
    head, body = split_table(table(headers, rows), len(rows))
    lines.extend(head)
    for component, row in zip(components, body, strict=True):
        lines.append(row)
        lines.extend(f"    {detail}" for detail in _component_details(component))
    return lines


def stale_banner(path: str, reason: str, doc: Doc, now: float) -> str:
    """The line that marks a snapshot read from the health file as not live."""
    written = ago(doc.get("updated_at"), now)
    return f"STALE: last health snapshot from {path} (written {written}): {reason}"
