"""oneiricctl: the operator's client for oneiricd (SPEC §7).

A thin shell: parse the command line, send one request over the control socket, hand the
result to :mod:`oneiric.cli.render`, map the outcome to an exit status. This module is the
entry point: the command group with its global options, and :func:`main`. The pieces:

- :mod:`oneiric.cli._ctl`: global options (:class:`Ctl`), defaults, option parsing, requests;
- :mod:`oneiric.cli._ctl_errors`: error messages, hints and exit statuses;
- :mod:`oneiric.cli.ctl_read`: what a reader may run: ``status``, ``health``, ``ping``,
  ``explain``, ``list``;
- :mod:`oneiric.cli.ctl_intent`: operator intent: ``pause``, ``resume``, ``drain``, ``swap``;
- :mod:`oneiric.cli.ctl_actions`: one-shot actions: ``run``, ``emit``, ``reload``, ``sync``;
- :mod:`oneiric.cli.ctl_events`: event and run records: ``events``, ``replay``, ``runs``;
- :mod:`oneiric.cli.ctl_manifest`: the publisher side of remote manifests, ``manifest ...``
  (the only commands that load python-tuf, inside the command).

It must start fast and work when the daemon is broken, so at import all of them load only
click, the blocking control client and stdlib modules that click loads anyway (plus json and
the C ``_socket``). No msgspec, dataclasses, pathlib or shutil: each costs milliseconds on every
invocation. The health reader (which needs msgspec) is imported only on the paths that read an
existing health file. Never import anyio or watchfiles here, directly or transitively (tests
enforce all of this).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence

import click

from oneiric._const import VERSION
from oneiric.cli import ctl_actions, ctl_events, ctl_intent, ctl_manifest, ctl_read
from oneiric.cli._ctl import (
    Ctl,
    default_health_file,
    default_socket,
    parse_duration,
    reply_timeout_arg,
)
from oneiric.cli.ctl_intent import _Progress
from oneiric.cli.ctl_read import _Screen

__all__ = [
    "Ctl",
    "_Progress",
    "_Screen",
    "_now",
    "cli",
    "default_health_file",
    "default_socket",
    "help_width",
    "main",
    "parse_duration",
]


def _now() -> float:
    """Wall-clock now for "3s ago" renderings (one seam, so tests can pin it). :func:`cli`
    looks it up on every invocation and hands it to the commands as ``Ctl.clock``."""
    return time.time()


def help_width(environ: Mapping[str, str]) -> int:
    """The help text width click would choose (``shutil.get_terminal_size``'s rule: $COLUMNS,
    else the terminal on stdout, else 80; at most 80, minus 2, at least 50), worked out here
    because importing :mod:`shutil` (with bz2, lzma and fnmatch) costs ~3 ms of every
    ``--help`` and usage error. :func:`main` hands it to click as ``terminal_width``."""
    try:
        columns = int(environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    stdout = sys.__stdout__
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (AttributeError, ValueError, OSError):  # not a terminal, or a closed/fake stream
            columns = 0
    return max(min(columns or 80, 80) - 2, 50)


EPILOG = """\b
Examples:
  oneiricctl status                      every component, with its state
  oneiricctl status adapter cache --json the live document, for scripts
  oneiricctl pause adapter cache --note "db migration"
  oneiricctl drain --timeout 60s         drain everything, wait up to a minute
  oneiricctl explain adapter cache       why this provider?

\b
Exit status: 0 ok; 1 the operation failed or a component is failed/degraded;
2 usage; 3 oneiricd is not running; 4 permission denied.
The socket is --socket, else $ONEIRIC_SOCKET, else $RUNTIME_DIRECTORY/oneiricd.sock,
else /run/oneiric/oneiricd.sock. When oneiricd is down, status and health read its
health file: $ONEIRIC_HEALTH_FILE, else health.json beside the socket (the daemon
links it there when its health_file is elsewhere)."""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", "socket_path", metavar="PATH", help="Control socket of oneiricd.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.option(
    "--timeout",
    callback=reply_timeout_arg,
    metavar="SECONDS",
    help="How long to wait for a reply (default 10s; 300s for commands that wait for work).",
)
@click.version_option(VERSION, prog_name="oneiricctl")
@click.pass_context
def cli(ctx: click.Context, socket_path: str | None, as_json: bool, timeout: float | None) -> None:
    """Control oneiricd: inspect, pause, drain, swap and run its components."""
    socket = socket_path or default_socket(os.environ)
    ctx.obj = Ctl(socket=socket, json=as_json, timeout=timeout, clock=_now)


# Added here rather than registered by the modules on import: the entry point names its
# commands, and ``python -m oneiric.cli.oneiricctl`` (where this module is ``__main__``) needs
# no second import of itself. click lists them sorted by name whatever the order.
for _command in (
    ctl_read.status,
    ctl_read.health,
    ctl_read.ping,
    ctl_read.explain,
    ctl_read.list_cmd,
    ctl_intent.pause,
    ctl_intent.resume,
    ctl_intent.drain,
    ctl_intent.swap,
    ctl_actions.run,
    ctl_actions.emit,
    ctl_actions.reload,
    ctl_actions.sync,
    ctl_events.events,
    ctl_events.replay,
    ctl_events.runs,
    ctl_manifest.manifest,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``oneiricctl``)."""
    cli.main(args=argv, prog_name="oneiricctl", terminal_width=help_width(os.environ))


if __name__ == "__main__":
    main()
