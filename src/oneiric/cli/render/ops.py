"""What each operation's reply says, as text: pause/resume/drain/swap, explain and list, run,
emit, reload, ping, sync. Pure functions; see :mod:`oneiric.cli.render`."""

from __future__ import annotations

import time
from _collections_abc import Mapping  # collections.abc without the collections package

from oneiric.cli.render.text import (
    ago,
    cell,
    duration,
    mapping_lines,
    millis,
    names,
    seconds,
    split_table,
    table,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

    from oneiric.cli.render.text import Doc

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
    if result.get("nothing_to_clear"):
        return f"{name}: no operator override to clear ({provider} keeps serving)"
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
    if candidate.get("eligible") is False:
        marks.append("not eligible")
    if candidate.get("matches") is True:
        marks.append("matches")
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
    if result.get("requires"):
        lines.append(f"  requires: {', '.join(map(str, result['requires']))}")
    asked = result.get("capability")
    if asked is not None:
        matching = list(result.get("matching") or ())
        lines.append(
            f"  with capability {', '.join(map(str, asked))}: "
            + (", ".join(map(str, matching)) if matching else "no candidate")
        )
    candidates = list(result.get("candidates") or ())
    lines.append("")
    if not candidates:
        lines.append("(no candidates)")
    else:
        with_caps = any(c.get("capabilities") for c in candidates)  # a column only if used
        headers: tuple[str, ...] = ("", "RANK", "PROVIDER", "STACK", "PRIORITY", "SEQ")
        headers += ("CAPABILITIES",) * with_caps + ("SOURCE", "FACTORY", "")
        rows = [
            (
                "*" if c.get("winner") else "",
                cell(c.get("rank")),
                cell(c.get("provider")),
                cell(c.get("stack_level")),
                cell(c.get("priority")),
                cell(c.get("seq")),
                *((",".join(map(str, c.get("capabilities") or ())) or "-",) * with_caps),
                cell(c.get("source")),
                cell(c.get("factory")),
                _marks(c),
            )
            for c in candidates
        ]
        head, body = split_table(table(headers, rows), len(rows))
        lines.extend(head)
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
    last_error = result.get("last_error")
    if last_error and last_error not in str(mismatch or ""):
        lines.append(f"last error: {last_error}")
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
        if result.get("run_id"):
            verdict += f" (run {result['run_id']})"
        rows = [
            (
                str(node_id),
                # a node that ended ok before the run was resumed kept its result: not rerun
                cell(node.get("status")) + (" (kept)" if node.get("resumed") else ""),
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
    dead = list(result.get("dead") or ())
    if not delivered and not held and not dropped and not dead:
        return f"{topic}: no event key matched"
    lines = [f"{topic}: delivered to {names(delivered)}"] if delivered else [f"{topic}:"]
    if held:
        lines.append(f"held for {names(held)} (paused; delivered on resume)")
    if dropped:
        lines.append(f"DROPPED by {names(dropped)}: queue full (raise queue_size, or resume)")
    if dead:
        lines.append(f"DEAD at {names(dead)}: every try failed (oneiricctl events --dead)")
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
    lines.extend(f"warning: {w}" for w in result.get("warnings") or ())
    return "\n".join(lines)


def render_ping(result: Doc) -> str:
    uptime = result.get("uptime_s")
    up = duration(uptime) if isinstance(uptime, int | float) else "?"
    return (
        f"oneiricd {cell(result.get('version'))} {cell(result.get('state'))}, "
        f"pid {cell(result.get('pid'))}, up {up}"
    )


def render_sync(result: Doc, now: float | None = None) -> str:
    """``oneiricctl sync``: what the check did, what changed, and when the next one runs."""
    now = time.time() if now is None else now
    outcome = result.get("outcome")
    version = result.get("version")
    if outcome == "applied":
        changed = list(result.get("changed") or ())
        head = f"applied version {version}: {len(changed)} key(s) changed"
        head += f" ({names(changed)})" if changed else ""
    elif outcome == "unchanged":
        head = f"unchanged: version {version} is current"
    else:
        head = f"{str(outcome).upper()}: {result.get('error')}"
        if version is not None:
            head += f" (still running version {version})"
    lines = [f"remote sync: {head}"]
    outcomes: dict[str, str] = dict(result.get("outcomes") or {})
    parked = sorted(k for k, v in outcomes.items() if v == "parked")
    if parked:
        lines.append(f"parked until resumed: {names(parked)}")
    for key, why in sorted(dict(result.get("failed") or {}).items()):
        lines.append(f"FAILED {key}: {why} (the previous provider keeps serving)")
    for why in result.get("restart_reasons") or ():
        lines.append(f"restart needed: {why}")
    if result.get("next_check_at") is not None:
        lines.append(f"next check {ago(result['next_check_at'], now)}")
    return "\n".join(lines)
