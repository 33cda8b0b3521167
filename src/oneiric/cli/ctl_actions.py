"""One-shot actions: ``run`` a task or workflow, ``emit`` an event, ``reload`` the config and
``sync`` the remote manifest. Each waits for its result and exits 1 when it did not happen."""

from __future__ import annotations

import sys
from typing import Any

import click

from oneiric._const import EXIT_FAILED, topic_problem
from oneiric.cli import render
from oneiric.cli._ctl import json_arg, json_option, output, pass_ctl
from oneiric.cli._ctl_base import WAITING_TIMEOUT, Ctl, call
from oneiric.cli._ctl_errors import errors


def _topic_arg(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The daemon's own rule (SPEC §8 topics), checked before any request: a bad topic is a
    usage error (exit 2), not a failed operation."""
    problem = topic_problem(value)
    if problem is not None:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


@click.command(
    epilog="""\b
Examples:
  oneiricctl run task cleanup --payload '{"older_than": "7d"}'
  oneiricctl run workflow nightly
  oneiricctl run task reindex --no-wait
  oneiricctl run workflow nightly --resume nightly-20261208T010203Z-1a2b3c

\b
Workflow runs are checkpointed node by node; --resume continues an interrupted or
failed run (see `oneiricctl runs`) without rerunning the nodes that succeeded.
Exits 1 when the task raises or any workflow node fails."""
)
@click.argument("kind", type=click.Choice(["task", "workflow"]), metavar="task|workflow")
@click.argument("key")
@click.option("--payload", metavar="JSON", callback=json_arg, help="Argument for the run.")
@click.option("--no-wait", is_flag=True, help="Return once started; do not wait for the result.")
@click.option("--resume", metavar="RUN_ID", help="Workflow: continue this interrupted run.")
@json_option
@pass_ctl
def run(ctl: Ctl, kind: str, key: str, payload: Any, no_wait: bool, resume: str | None) -> None:
    """Run a task or workflow KEY now."""
    if resume is not None and kind != "workflow":
        raise click.UsageError("--resume is for workflow runs")
    if resume is not None and payload is not None:
        raise click.UsageError("a resumed run keeps its payload; drop --payload")
    with errors(ctl, f"run {kind} {key}"):
        result = call(
            ctl,
            "run",
            read_timeout=ctl.read_timeout(WAITING_TIMEOUT),
            domain=kind,
            key=key,
            payload=payload,
            wait=not no_wait,
            resume=resume,
        )
    output(ctl, result, render.render_run(result, kind, key))
    if render.workflow_failed(result):
        click.echo(f"oneiricctl: {kind} {key} failed", err=True)
        raise click.exceptions.Exit(EXIT_FAILED)


@click.command(
    epilog="""\b
Example:
  oneiricctl emit user.created --data '{"id": 42}'

\b
Every active event key whose topics match receives it; paused keys hold it until
they are resumed."""
)
@click.argument("topic", callback=_topic_arg)
@click.option("--data", metavar="JSON", callback=json_arg, help="The event's payload.")
@click.option(
    "--wait",
    is_flag=True,
    help="Wait until each handler delivered it or dead-lettered it (held ones are not waited for).",
)
@json_option
@pass_ctl
def emit(ctl: Ctl, topic: str, data: Any, wait: bool) -> None:
    """Publish an event on TOPIC."""
    with errors(ctl, "emit"):
        result = call(
            ctl,
            "emit",
            read_timeout=ctl.read_timeout(WAITING_TIMEOUT) if wait else None,
            topic=topic,
            data=data,
            wait=wait or None,
        )
    output(ctl, result, render.render_emit(result, topic))
    if result.get("dropped") or result.get("dead"):  # never silent: a script must see it too
        sys.exit(EXIT_FAILED)


@click.command(
    epilog="""\b
Example:
  oneiricctl reload        (what `systemctl reload oneiricd` runs)

\b
Waits for the result. On a config error the running config is kept and this
exits 1 with the error."""
)
@json_option
@pass_ctl
def reload(ctl: Ctl) -> None:
    """Re-read the configuration and apply what changed."""
    with errors(ctl, "reload", hint="the running configuration is kept; fix it and reload again"):
        result = call(ctl, "reload", read_timeout=ctl.read_timeout(WAITING_TIMEOUT))
    output(ctl, result, render.render_reload(result))
    if result.get("failed"):  # a swap the new config asked for did not happen
        sys.exit(EXIT_FAILED)


@click.command(
    epilog="""\b
Examples:
  oneiricctl sync
  oneiricctl --json sync | jq .reason

\b
Checks the [remote] TUF repository now and waits for the result: the version
applied and what changed, "unchanged", or why the update was rejected
(unsigned, rollback, expired, tampered, oversized, malformed,
disallowed_factory, ...) or the source unreachable -- then nothing changed.
Exits 1 when the check failed or a swap it asked for failed."""
)
@json_option
@pass_ctl
def sync(ctl: Ctl) -> None:
    """Check the remote manifest now and print the result."""
    with errors(ctl, "sync"):
        result = call(ctl, "sync", read_timeout=ctl.read_timeout(WAITING_TIMEOUT))
    output(ctl, result, render.render_sync(result))
    if not result.get("ok") or result.get("failed"):
        sys.exit(EXIT_FAILED)
