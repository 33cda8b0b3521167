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
- :mod:`oneiric.cli.ctl_observe`: ``metrics``.

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
from oneiric._durations import parse_duration
from oneiric.cli._ctl import (
    Ctl,
    configure_look,
    default_health_file,
    default_socket,
    reply_timeout_arg,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
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


def __getattr__(name: str) -> object:
    # re-exported for tests without importing their modules on every invocation
    if name == "_Progress":
        from oneiric.cli.ctl_intent import _Progress

        return _Progress
    if name == "_Screen":
        from oneiric.cli.ctl_read import _Screen

        return _Screen
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Each command and where it lives: the module is imported only when the command runs (or
#: help lists them all), so ``oneiricctl status`` never loads the code of ``drain`` or
#: ``manifest`` (ctl_manifest alone is ~7 ms). The entry point names its commands here rather
#: than the modules registering themselves, so ``python -m oneiric.cli.oneiricctl`` (where
#: this module is ``__main__``) needs no second import of itself.
COMMANDS: dict[str, tuple[str, str]] = {
    "status": ("ctl_read", "status"),
    "health": ("ctl_read", "health"),
    "ping": ("ctl_read", "ping"),
    "explain": ("ctl_read", "explain"),
    "list": ("ctl_read", "list_cmd"),
    "pause": ("ctl_intent", "pause"),
    "resume": ("ctl_intent", "resume"),
    "drain": ("ctl_intent", "drain"),
    "swap": ("ctl_intent", "swap"),
    "run": ("ctl_actions", "run"),
    "emit": ("ctl_actions", "emit"),
    "reload": ("ctl_actions", "reload"),
    "sync": ("ctl_actions", "sync"),
    "events": ("ctl_events", "events"),
    "replay": ("ctl_events", "replay"),
    "runs": ("ctl_events", "runs"),
    "manifest": ("ctl_manifest", "manifest"),
    "metrics": ("ctl_observe", "metrics"),
}


class _LazyGroup(click.Group):
    """A group whose commands are imported on first use (see :data:`COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in COMMANDS:
            module, attr = COMMANDS[cmd_name]
            command = getattr(__import__(f"oneiric.cli.{module}", fromlist=[attr]), attr)
            assert isinstance(command, click.Command) and command.name == cmd_name
            self.commands[cmd_name] = command
        return command


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


@click.group(
    cls=_LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option("--socket", "socket_path", metavar="PATH", help="Control socket of oneiricd.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.option(
    "--no-headers",
    is_flag=True,
    help="Print tables (status, list, explain, events, events --dead, runs, run workflow) "
    "without their header line, for scripts that read columns.",
)
@click.option(
    "--timeout",
    "--reply-timeout",
    "timeout",
    callback=reply_timeout_arg,
    metavar="SECONDS",
    help="How long to wait for the daemon's reply to a request (default 10s; 300s for "
    "run, swap, reload and others that wait for work). It never cuts a drain short "
    "(that is 'drain --timeout') nor a --watch/--follow stream.",
)
@click.version_option(VERSION, prog_name="oneiricctl")
@click.pass_context
def cli(
    ctx: click.Context,
    socket_path: str | None,
    as_json: bool,
    no_headers: bool,
    timeout: float | None,
) -> None:
    """Control oneiricd: inspect, pause, drain, swap and run its components."""
    configure_look(no_headers=no_headers, as_json=as_json, environ=os.environ)
    socket = socket_path or default_socket(os.environ)
    ctx.obj = Ctl(socket=socket, json=as_json, timeout=timeout, clock=_now)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``oneiricctl``)."""
    cli.main(args=argv, prog_name="oneiricctl", terminal_width=help_width(os.environ))


if __name__ == "__main__":
    main()
