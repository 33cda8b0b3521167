"""Records the daemon keeps about events and runs: the dead-letter list, replay outcomes and
workflow runs (``oneiricctl events --dead``, ``replay``, ``runs``)."""

from __future__ import annotations

from oneiric.cli.render.text import ago, cell, table

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from oneiric.cli.render.text import Doc


def render_dead_letters(result: Doc, now: float) -> str:
    dead = list(result.get("dead") or ())
    head = f"dead letters: {len(dead)} (kept at most {cell(result.get('limit'))}"
    overflow = result.get("overflow") or 0
    head += f"; {overflow} older ones dropped)" if overflow else ")"
    if not dead:
        return head
    rows = [
        (
            f"#{d.get('id')}",
            cell(f"event/{d.get('key')}"),
            cell(d.get("topic")),
            f"#{d.get('event_id')}",
            cell(d.get("attempts")),
            ago(d.get("dead_at"), now),
            cell(d.get("error")),
        )
        for d in dead
    ]
    body = table(("ID", "KEY", "TOPIC", "EVENT", "TRIES", "DIED", "ERROR"), rows)
    return "\n".join([head, *body, "replay with: oneiricctl replay ID (or --all)"])


def render_replay(result: Doc) -> str:
    lines = []
    for dead_id, outcome in dict(result.get("replayed") or {}).items():
        lines.append(f"#{dead_id}: {outcome}")
    for dead_id, why in dict(result.get("failed") or {}).items():
        lines.append(f"#{dead_id}: NOT replayed: {why}")
    return "\n".join(lines) or "nothing to replay"


def render_runs(result: Doc, now: float) -> str:
    found = list(result.get("runs") or ())
    if not found:
        return "(no workflow runs)"
    lines: list[str] = []
    for run in found:
        nodes = dict(run.get("nodes") or {})
        states = ", ".join(
            f"{n} {cell(s.get('status'))}"
            + (f" ({s.get('attempts')} tries)" if (s.get("attempts") or 0) > 1 else "")
            for n, s in nodes.items()
        )
        line = (
            f"{cell(run.get('run_id'))}  workflow/{cell(run.get('key'))}  "
            f"{cell(run.get('status'))}  started {ago(run.get('started_at'), now)}"
        )
        if run.get("resumes"):
            line += f"  resumed {run['resumes']}x"
        lines.append(line)
        if states:
            lines.append(f"    nodes: {states}")
        if run.get("status") in ("interrupted", "failed"):
            lines.append(
                f"    resume: oneiricctl run workflow {run.get('key')} --resume {run.get('run_id')}"
            )
    return "\n".join(lines)
