"""Event and workflow records: ``events`` (``--dead``: the dead-letter list), ``replay`` and
``runs``. Readers may list; replaying is an admin's action.

``events`` is one command for the daemon's records of events: ``--dead`` shows the events
whose handler failed every try. The event history of SPEC §11 (``--follow``, ``--since``)
belongs to the same command; until the daemon offers it, ``events`` without ``--dead`` says
so and exits 2.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from oneiric._const import EXIT_FAILED, EXIT_USAGE
from oneiric.cli import render
from oneiric.cli._ctl import WAITING_TIMEOUT, Ctl, call, json_option, output, pass_ctl
from oneiric.cli._ctl_errors import errors


@click.command(
    epilog="""\b
Examples:
  oneiricctl events --dead            events whose handler failed every try
  oneiricctl --json events --dead     the same, for scripts

\b
Hand a dead letter back to its handler with `oneiricctl replay ID`."""
)
@click.option("--dead", is_flag=True, help="Show the dead-letter list.")
@json_option
@pass_ctl
def events(ctl: Ctl, dead: bool) -> None:
    """Show the daemon's event records (--dead: the dead-letter list)."""
    if not dead:
        click.echo(
            "oneiricctl: the event history is not available in this version; "
            "use 'oneiricctl events --dead' for the dead-letter list",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    with errors(ctl, "events --dead"):
        result = call(ctl, "dead_letters")
    output(ctl, result, render.render_dead_letters(result, ctl.clock()))


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
