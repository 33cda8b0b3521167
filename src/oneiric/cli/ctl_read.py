"""The reader's commands: ``status`` (and ``--watch``), ``health``, ``ping``, ``explain`` and
``list``. They change nothing, so any peer that can connect may run them (SPEC §8).

``status`` falls back to the daemon's last health snapshot when the socket does not answer, and
``health`` reads that file directly. The health reader needs msgspec (~10 ms), so it is imported
only on the paths that read an existing health file. The bodies of ``status`` and ``ping`` are
:mod:`oneiric.cli._ctl_hot`'s, shared with the click-free fast path.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from oneiric._const import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK, EXIT_PERMISSION
from oneiric.cli import _ctl_hot, render
from oneiric.cli._ctl import DOMAIN, json_option, output, pass_ctl
from oneiric.cli._ctl_base import Ctl, call, default_health_file, stream
from oneiric.cli._ctl_errors import errors, fail, not_running_hint


class _Screen:
    """Where ``--watch`` draws: redraw in place on a terminal, append otherwise."""

    def __init__(self, ctl: Ctl, domain: str | None, key: str | None) -> None:
        self.ctl, self.domain, self.key = ctl, domain, key
        self.tty = sys.stdout.isatty()

    def __call__(self, event: Any) -> None:
        if not isinstance(event, dict) or event.get("type") != "snapshot":
            return
        doc = render.filter_components(event.get("snapshot") or {}, self.domain, self.key)
        if self.ctl.json:
            click.echo(render.to_json(doc))
            return
        text = render.render_status(doc, now=self.ctl.clock())
        if self.tty:
            click.clear()
            click.echo(text)
        else:
            click.echo(text + "\n")


@click.command(
    epilog="""\b
Examples:
  oneiricctl status
  oneiricctl status adapter          only the adapter domain
  oneiricctl status adapter cache --json
  oneiricctl status --watch          follow changes live (Ctrl-C to stop)

\b
Exits 1 when a component is failed or degraded, a service crash-loops, or the config
files on disk are broken (paused/drained are not failures). When oneiricd is down,
prints its last health snapshot marked STALE and exits 3; the snapshot is read from
$ONEIRIC_HEALTH_FILE, else health.json beside the socket."""
)
@click.argument("domain", required=False, type=DOMAIN)
@click.argument("key", required=False)
@click.option("--watch", is_flag=True, help="Follow changes live; --json prints one per line.")
@json_option
@pass_ctl
def status(ctl: Ctl, domain: str | None, key: str | None, watch: bool) -> None:
    """Show the daemon and its components (all, one DOMAIN, or one KEY)."""
    if watch:
        screen = _Screen(ctl, domain, key)
        try:
            with errors(ctl, "watch"):
                result = stream(ctl, "watch", screen)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(EXIT_OK) from None
        ended = result.get("ended") if isinstance(result, dict) else None
        click.echo(f"oneiricctl: watch ended: {ended or 'the daemon closed it'}", err=True)
        return
    code = _ctl_hot.status(ctl, domain, key)
    if code:
        raise click.exceptions.Exit(code)


@click.command(
    epilog="""\b
Examples:
  oneiricctl health
  oneiricctl health --file /run/oneiric/health.json --json

\b
Exits 1 when the snapshot is stale (no heartbeat), a component is failed/degraded or
the config on disk is broken; 3 when there is no health file, its daemon died, or it
says oneiricd stopped. Default file: $ONEIRIC_HEALTH_FILE, else health.json beside
the socket."""
)
@click.option(
    "--file",
    "file_path",
    metavar="PATH",
    help="Health file to read [default: $ONEIRIC_HEALTH_FILE, else health.json beside the socket].",
)
@json_option
@pass_ctl
def health(ctl: Ctl, file_path: str | None) -> None:
    """Read the health file directly; works without the socket."""
    path = file_path or default_health_file(ctl.socket, os.environ)

    def missing() -> NoReturn:
        fail(
            ctl,
            "not_running",
            f"no health file at {path}",
            exit_code=EXIT_NOT_RUNNING,
            detail={"health_file": path},
            hints=[not_running_hint(ctl.socket)],
        )

    if _ctl_hot.no_health_file(path):
        missing()

    import msgspec  # lazily, like the reader: only the health-file paths need them

    from oneiric.runtime import health as reader

    try:
        snapshot = reader.read_health(path)
    except FileNotFoundError:
        missing()
    except PermissionError as err:
        fail(ctl, "permission_denied", f"cannot read {path}: {err}", exit_code=EXIT_PERMISSION)
    except (OSError, ValueError) as err:
        fail(ctl, "bad_health_file", f"cannot read {path}: {err}")
    doc = msgspec.to_builtins(snapshot)
    verdict = reader.judge(snapshot)
    now = ctl.clock()
    text = render.render_status(doc, now=now, live=not verdict.dead)
    if verdict.stale:
        text = render.stale_banner(path, verdict.reason or "stale", doc, now) + "\n" + text
    output(ctl, doc, text)
    if verdict.stale:
        click.echo(f"oneiricctl: the health snapshot is stale: {verdict.reason}", err=True)
        # a dead daemon is "not running" (3), as for status; a live one not updating is 1
        raise click.exceptions.Exit(EXIT_NOT_RUNNING if verdict.dead else EXIT_FAILED)
    if snapshot.state == "stopped":
        click.echo("oneiricctl: oneiricd stopped cleanly (final snapshot)", err=True)
        raise click.exceptions.Exit(EXIT_NOT_RUNNING)
    if render.failing(doc):
        raise click.exceptions.Exit(EXIT_FAILED)


@click.command(epilog="Example:\n\n  oneiricctl ping --json")
@json_option
@pass_ctl
def ping(ctl: Ctl) -> None:
    """Daemon version, pid, state and uptime."""
    _ctl_hot.ping(ctl)


@click.command(
    epilog="""\b
Examples:
  oneiricctl explain adapter cache
  oneiricctl explain adapter cache --capability persist

\b
Order: operator override (swap), then the config's [selections], then the highest
stack_level, priority, and latest registration. Candidates lacking a capability
the key requires ([requires.DOMAIN] KEY = [...]) are not eligible."""
)
@click.argument("domain", type=DOMAIN)
@click.argument("key")
@click.option(
    "--capability",
    "capabilities",
    multiple=True,
    metavar="C",
    help="Mark the candidates that declare capability C (repeat for several).",
)
@json_option
@pass_ctl
def explain(ctl: Ctl, domain: str, key: str, capabilities: tuple[str, ...]) -> None:
    """Rank every candidate of DOMAIN KEY and say why the winner wins."""
    with errors(ctl, "explain"):
        result = call(ctl, "explain", domain=domain, key=key, capability=list(capabilities) or None)
    output(ctl, result, render.render_explain(result))


@click.command(
    "list",
    epilog="""\b
Examples:
  oneiricctl list
  oneiricctl list adapter --shadowed   include the candidates that lost""",
)
@click.argument("domain", required=False, type=DOMAIN)
@click.option("--shadowed", is_flag=True, help="Include candidates that are not the winner.")
@json_option
@pass_ctl
def list_cmd(ctl: Ctl, domain: str | None, shadowed: bool) -> None:
    """List the registered candidates (all, or one DOMAIN)."""
    with errors(ctl, "list"):
        result = call(ctl, "list", domain=domain, shadowed=shadowed)
    output(ctl, result, render.render_list(result))
