"""Pure formatting for oneiricctl: every table, sentence and timestamp an operator reads.

Nothing here does I/O or talks to the daemon. Each function takes decoded JSON (plain dicts and
lists, exactly as the control protocol and the health file deliver them) and returns text, so
the whole of oneiricctl's output is unit-tested without a socket and the command module stays a
thin shell. Unknown or missing fields render as ``-`` instead of failing: the client must keep
working against a newer daemon that adds fields (SPEC §5 only promises never to remove them).
"""

from __future__ import annotations

import datetime as dt  # free: click imports it already
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Doc = Mapping[str, Any]

#: Lifecycle states that make ``status``/``health`` exit 1. Paused or drained components are
#: operator intent, not failure (SPEC §7), so ``admin`` never counts.
FAILING = frozenset({"failed", "degraded"})

_DASH = "-"


def to_json(value: Any) -> str:
    """One compact JSON document on one line (the ``--json`` output unit; ``--watch`` prints
    one per line, so it must never contain a newline: ``json.dumps`` escapes newlines inside
    strings). Stdlib json, not msgspec: importing msgspec would cost more than the encoding."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- time ------------------------------------------------------------------------------------


def parse_time(value: Any) -> float | None:
    """Epoch seconds from whatever the daemon sent: a number (epoch seconds) or an ISO 8601
    string (naive means UTC). ``None`` when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
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


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces; returns the header line followed by one
    line per row (callers interleave detail lines under rows)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(text.ljust(widths[i]) for i, text in enumerate(cells)).rstrip()

    return [line(headers), *(line(row) for row in rows)]


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


# --- status / health -------------------------------------------------------------------------


def component_name(component: Doc) -> str:
    return f"{component.get('domain', '?')}/{component.get('key', '?')}"


def failing(doc: Doc) -> list[str]:
    """``domain/key (why)`` for every failed or degraded component, and every service whose
    ``run()`` keeps crashing (in backoff): a crash loop is not healthy, whatever its lifecycle."""
    out = []
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


def status_header(doc: Doc, now: float) -> list[str]:
    """Daemon state, pid, uptime and freshness; the config error and remote status when they
    matter."""
    parts = [f"oneiricd {doc.get('state', '?')}"]
    if doc.get("version"):
        parts.append(f"v{doc['version']}")
    if doc.get("pid") is not None:
        parts.append(f"pid {doc['pid']}")
    started = parse_time(doc.get("started_at"))
    if started is not None:
        parts.append(f"up {duration(now - started)}")
    if doc.get("updated_at") is not None:
        parts.append(f"updated {ago(doc.get('updated_at'), now)}")
    lines = ["  ".join(parts)]
    config = doc.get("config") or {}
    if config.get("path"):
        lines.append(f"config: {config['path']} (loaded {ago(config.get('loaded_at'), now)})")
    if config.get("last_error"):
        lines.append(f"config error: {config['last_error']} (the running config is kept)")
    remote = doc.get("remote") or {}
    if remote.get("status") or remote.get("url"):
        detail = [remote.get("status") or "?"]
        if remote.get("serial") is not None:
            detail.append(f"serial {remote['serial']}")
        if remote.get("last_sync") is not None:
            detail.append(f"synced {ago(remote['last_sync'], now)}")
        lines.append("remote: " + ", ".join(str(d) for d in detail))
        if remote.get("last_error"):
            lines.append(f"remote error: {remote['last_error']}")
    return lines


def provider_cell(component: Doc) -> str:
    """The serving provider, with a parked selection shown as ``cache→sqlite (parked)``."""
    provider = cell(component.get("provider"))
    parked = component.get("parked_provider")
    return f"{provider}→{parked} (parked)" if parked else provider


def note_cell(component: Doc, now: float) -> str:
    """The operator's note, and who set the intent when (uid, "3m ago"): SPEC §4's who/when."""
    note = component.get("note")
    uid, at = component.get("intent_uid"), component.get("intent_at")
    who = []
    if uid is not None:
        who.append(f"uid {uid}")
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


def render_status(doc: Doc, *, now: float) -> str:
    """The ``status`` screen: header, then DOMAIN KEY PROVIDER ADMIN LIFECYCLE IN-FLIGHT NOTE
    with each component's last error on the line below it."""
    lines = status_header(doc, now)
    lines.append("")
    components = list(doc.get("components") or ())
    if not components:
        lines.append("(no components)")
        return "\n".join(lines)
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
    head, *body = table(headers, rows)
    lines.append(head)
    for component, row in zip(components, body, strict=True):
        lines.append(row)
        lines.extend(f"    {detail}" for detail in _component_details(component))
    bad = failing(doc)
    if bad:
        lines.append("")
        lines.append(f"{len(bad)} failing: {', '.join(bad)}")
    return "\n".join(lines)


def stale_banner(path: str, reason: str, doc: Doc, now: float) -> str:
    """The line that marks a snapshot read from the health file as not live."""
    written = ago(doc.get("updated_at"), now)
    return f"STALE: last health snapshot from {path} (written {written}): {reason}"


# --- intent / swap ---------------------------------------------------------------------------


def target_name(domain: str | None, key: str | None) -> str:
    if domain is None:
        return "everything"
    return domain if key is None else f"{domain}/{key}"


def render_intent(result: Doc, verb: str, target: str) -> str:
    """``pause``/``resume`` acknowledgement: what was affected, and that a domain-wide intent
    also covers keys that appear later."""
    affected = list(result.get("affected") or ())
    state = result.get("state")
    held: dict[str, str] = dict(result.get("still_held") or {})
    suffix = f" (now {state})" if state and not held else ""
    if not affected:
        text = f"{verb} {target}: no keys matched yet; the intent applies to keys that appear later"
    elif affected == [target]:
        text = f"{verb} {target}{suffix}"
    else:
        text = f"{verb} {target}: {names(affected)}{suffix}"
    for name, why in sorted(held.items()):
        scope = why.rsplit(" by ", 1)[-1]
        how = "oneiricctl resume " + (name.split("/")[0] if scope == "domain" else "--all")
        text += f"\n  {name} is still {why.replace(' by ', ' by its ')} intent: {how}"
    return text


def render_swap(result: Doc, domain: str, key: str, *, cleared: bool) -> str:
    name = f"{domain}/{key}"
    provider = cell(result.get("provider"))
    previous = cell(result.get("previous"))
    if result.get("parked"):
        return (
            f"{name}: {provider} selected; the swap is parked until the key is resumed "
            f"(still serving {previous})"
        )
    what = "override cleared, now" if cleared else "swapped to"
    return f"{name}: {what} {provider} (was {previous}, took {millis(result.get('swap_ms'))})"


# --- drain -----------------------------------------------------------------------------------


def in_flight_summary(in_flight: Any) -> str:
    """``adapter/cache 2, service/beat 1``, or ``nothing`` when all leases are gone."""
    if not isinstance(in_flight, Mapping):
        return cell(in_flight)
    busy = [f"{name} {count}" for name, count in in_flight.items() if count]
    return ", ".join(busy) if busy else "nothing"


def drain_progress(event: Doc) -> str:
    return (
        f"draining: {in_flight_summary(event.get('in_flight') or {})} in flight "
        f"({seconds(event.get('elapsed_s'))})"
    )


def render_drain(result: Doc, target: str) -> str:
    affected = list(result.get("affected") or ())
    what = f"{target} ({names(affected)})" if affected and affected != [target] else target
    if result.get("drained"):
        return f"drained {what} in {seconds(result.get('elapsed_s'))}"
    busy = in_flight_summary(result.get("in_flight") or {})
    return f"draining {what}; still in flight: {busy} (follow with: oneiricctl status --watch)"


def drain_timeout_message(detail: Any, timeout: float | None) -> str:
    in_flight = detail.get("in_flight") if isinstance(detail, Mapping) else None
    after = f" after {timeout:g}s" if timeout is not None else ""
    return f"drain timed out{after}; still in flight: {in_flight_summary(in_flight or {})}"


# --- resolution ------------------------------------------------------------------------------


def _marks(candidate: Doc) -> str:
    marks = [m for m in ("winner", "active") if candidate.get(m)]
    return ", ".join(marks)


def render_explain(result: Doc) -> str:
    """Every candidate of a key in rank order with its reasons; ``*`` marks the winner, and a
    sentence says when the active instance is not the winner."""
    name = f"{result.get('domain', '?')}/{result.get('key', '?')}"
    winner, active = result.get("winner"), result.get("active")
    lines = [f"{name}: winner {cell(winner)}, active {cell(active)}"]
    how = [str(p) for p in (result.get("via"), result.get("reason")) if p]
    if how:
        lines.append("  decided by: " + " — ".join(how))
    if result.get("override"):
        lines.append(f"  operator override: {cell(result['override'])} (clear with swap --clear)")
    if result.get("selection"):
        lines.append(f"  config selection: {cell(result['selection'])}")
    candidates = list(result.get("candidates") or ())
    lines.append("")
    if not candidates:
        lines.append("(no candidates)")
    else:
        headers = ("", "RANK", "PROVIDER", "STACK", "PRIORITY", "SEQ", "SOURCE", "FACTORY", "")
        rows = [
            (
                "*" if c.get("winner") else "",
                cell(c.get("rank")),
                cell(c.get("provider")),
                cell(c.get("stack_level")),
                cell(c.get("priority")),
                cell(c.get("seq")),
                cell(c.get("source")),
                cell(c.get("factory")),
                _marks(c),
            )
            for c in candidates
        ]
        head, *body = table(headers, rows)
        lines.append(head)
        for candidate, row in zip(candidates, body, strict=True):
            lines.append(row)
            lines.extend(f"      - {reason}" for reason in candidate.get("reasons") or ())
    mismatch = result.get("mismatch")
    if isinstance(mismatch, str) and mismatch:
        lines.append("")
        lines.append(f"mismatch: {mismatch}")
    elif mismatch or (active is not None and winner is not None and active != winner):
        lines.append("")
        lines.append(
            f"mismatch: the active instance ({cell(active)}) is not the winner ({cell(winner)})"
        )
    for warning in result.get("warnings") or ():
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def render_list(result: Doc) -> str:
    candidates = list(result.get("candidates") or ())
    if not candidates:
        return "(no candidates)"
    headers = ("DOMAIN", "KEY", "PROVIDER", "STACK", "PRIORITY", "SOURCE", "FACTORY", "")
    rows = [
        (
            cell(c.get("domain")),
            cell(c.get("key")),
            cell(c.get("provider")),
            cell(c.get("stack_level")),
            cell(c.get("priority")),
            cell(c.get("source")),
            cell(c.get("factory")),
            _marks(c) or "shadowed",
        )
        for c in candidates
    ]
    return "\n".join(table(headers, rows))


# --- run / emit / reload / ping ----------------------------------------------------------------


def workflow_failed(result: Any) -> bool:
    return isinstance(result, Mapping) and result.get("ok") is False


def render_run(result: Any, kind: str, key: str) -> str:
    name = f"{kind}/{key}"
    if not isinstance(result, Mapping):
        return f"{name}: {cell(result)}"
    nodes = result.get("nodes")
    if isinstance(nodes, Mapping):
        verdict = "failed" if workflow_failed(result) else "ok"
        rows = [
            (
                str(node_id),
                cell(node.get("status")),
                millis(node.get("duration_ms")),
                cell(node.get("error")) if node.get("error") else cell(node.get("result")),
            )
            for node_id, node in nodes.items()
        ]
        return "\n".join(
            [f"{name}: {verdict}", *table(("NODE", "STATUS", "DURATION", "RESULT/ERROR"), rows)]
        )
    if "result" in result:
        took = millis(result.get("duration_ms"))
        return f"{name}: done in {took}\nresult: {cell(result['result'])}"
    return "\n".join([f"{name}: accepted", *mapping_lines(result, "  ")])


def render_emit(result: Doc, topic: str) -> str:
    delivered = list(result.get("delivered") or ())
    held = list(result.get("held") or ())
    dropped = list(result.get("dropped") or ())
    if not delivered and not held and not dropped:
        return f"{topic}: no event key matched"
    lines = [f"{topic}: delivered to {names(delivered)}"] if delivered else [f"{topic}:"]
    if held:
        lines.append(f"held for {names(held)} (paused; delivered on resume)")
    if dropped:
        lines.append(f"DROPPED by {names(dropped)}: queue full (raise queue_size, or resume)")
    return "\n".join(lines)


def render_reload(result: Doc) -> str:
    changed = list(result.get("changed") or ())
    lines = [f"reloaded: {len(changed)} changed" + (f" ({names(changed)})" if changed else "")]
    not_live = list(result.get("not_live") or ())
    if not_live:
        lines.append(f"not applied live (restart oneiricd to apply): {names(not_live)}")
    outcomes: dict[str, str] = dict(result.get("outcomes") or {})
    parked = sorted(k for k, v in outcomes.items() if v == "parked")
    if parked:
        lines.append(f"parked until resumed: {names(parked)}")
    for key, why in sorted(dict(result.get("failed") or {}).items()):
        lines.append(f"FAILED {key}: {why} (the previous provider keeps serving)")
    return "\n".join(lines)


def render_ping(result: Doc) -> str:
    uptime = result.get("uptime_s")
    up = duration(uptime) if isinstance(uptime, int | float) else "?"
    return (
        f"oneiricd {cell(result.get('version'))} {cell(result.get('state'))}, "
        f"pid {cell(result.get('pid'))}, up {up}"
    )


def render_sync(result: Any) -> str:
    return "\n".join(["remote sync:", *mapping_lines(result, "  ")])
