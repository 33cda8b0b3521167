"""Event and workflow records: ``events`` (``--dead``: the dead-letter list), ``replay`` and
``runs``. Readers may list; replaying is an admin's action.

``events`` is one command for the daemon's records: by default the history of SPEC §11
(swaps, rollbacks, intent changes, reloads, restarts; ``--follow``, ``--since``, one domain or
key), and with ``--dead`` the events whose handler failed every try.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from oneiric._const import EXIT_FAILED
from oneiric.cli import render
from oneiric.cli._ctl import DOMAIN, duration_arg, json_option, output, pass_ctl
from oneiric.cli._ctl_base import WAITING_TIMEOUT, Ctl, call, stream
from oneiric.cli._ctl_errors import errors
from oneiric.cli.render.text import to_json


@click.command(
    epilog="""\b
Examples:
  oneiricctl events                      everything the daemon still remembers
  oneiricctl events --since 1h           the last hour
  oneiricctl events adapter cache        one key's swaps, rollbacks, pauses
  oneiricctl events --follow             new entries as they happen (Ctrl-C to stop)
  oneiricctl events --dead               events whose handler failed every try

\b
History kinds: activate, swap (with its duration), rollback (a failed swap and
why), remove, intent (pause/resume/drain/swap by whom, with the note), reload,
remote_sync, restart (a crashed service). The daemon keeps the last 1,000.
Hand a dead letter back to its handler with `oneiricctl replay ID`."""
)
@click.argument("domain", required=False, type=DOMAIN)
@click.argument("key", required=False)
@click.option("--since", metavar="DURATION", callback=duration_arg, help="Only the last 30s/5m/1h.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new entries as they happen.")
@click.option("--dead", is_flag=True, help="Show the dead-letter list instead of the history.")
@json_option
@pass_ctl
def events(
    ctl: Ctl, domain: str | None, key: str | None, since: float | None, follow: bool, dead: bool
) -> None:
    """The daemon's recent history (swaps, rollbacks, intent changes, reloads, restarts), or
    with --dead the events whose handler failed every try."""
    if dead:
        if follow or since is not None or domain is not None:
            raise click.UsageError("--dead lists every dead letter; it takes no filter")
        with errors(ctl, "events --dead"):
            result = call(ctl, "dead_letters")
        output(ctl, result, render.render_dead_letters(result, ctl.clock()))
        return
    args: dict[str, Any] = {"domain": domain, "key": key, "since_s": since}
    if follow:

        def show(event: Any) -> None:
            if not isinstance(event, dict) or event.get("type") != "entry":
                return
            entry = event.get("entry") or {}
            click.echo(to_json(entry) if ctl.json else render.render_event_line(entry))

        try:
            with errors(ctl, "events"):
                result = stream(ctl, "events", show, follow=True, **args)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(0) from None
        ended = result.get("ended") if isinstance(result, dict) else None
        click.echo(f"oneiricctl: events ended: {ended or 'the daemon closed the stream'}", err=True)
        return
    with errors(ctl, "events"):
        result = call(ctl, "events", **args)
    output(ctl, result, render.render_events(result.get("events") or ()))


@click.command(
    epilog="""\b
Examples:
  oneiricctl replay 7            hand dead letter #7 back to its handler
  oneiricctl replay 7 8 --wait   and wait until each is delivered or dead again
  oneiricctl replay --all

\b
Each event goes back to the key it died on, with a fresh set of tries. Exits 1 when
one could not be replayed (its key has no active instance) or, with --wait, died again."""
)
@click.argument("ids", nargs=-1, type=click.IntRange(min=1), metavar="[ID]...")
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
@click.option("--wait", is_flag=True, help="Wait until each replayed event is delivered or dead.")
@json_option
@pass_ctl
def replay(ctl: Ctl, ids: tuple[int, ...], all_: bool, wait: bool) -> None:
    """Replay dead-lettered events (see `oneiricctl events --dead`)."""
    if bool(ids) == all_:
        raise click.UsageError("give dead-letter IDs or --all (not both)")
    args: dict[str, Any] = {"all": True} if all_ else {"ids": list(ids)}
    with errors(ctl, "replay"):
        result = call(
            ctl,
            "replay",
            read_timeout=ctl.read_timeout(WAITING_TIMEOUT) if wait else None,
            wait=wait,
            **args,
        )
    output(ctl, result, render.render_replay(result))
    outcomes = dict(result.get("replayed") or {})
    if result.get("failed") or "dead" in outcomes.values():
        sys.exit(EXIT_FAILED)


@click.command(
    epilog="""\b
Examples:
  oneiricctl runs                    recent workflow runs, newest first
  oneiricctl runs nightly --limit 5
  oneiricctl --json runs

\b
An interrupted (or failed) run continues with
  oneiricctl run workflow KEY --resume RUN_ID"""
)
@click.argument("key", required=False)
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many runs."
)
@json_option
@pass_ctl
def runs(ctl: Ctl, key: str | None, limit: int) -> None:
    """List recent workflow runs and the state of their nodes."""
    with errors(ctl, "runs"):
        result = call(ctl, "runs", key=key, limit=limit)
    output(ctl, result, render.render_runs(result, ctl.clock()))
