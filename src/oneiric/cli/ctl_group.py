"""oneiricctl's full command line, under click: the command group with its global options, and
each command's module loaded when that command runs (see :data:`COMMANDS`).

:func:`oneiric.cli.oneiricctl.main` runs the hot commands' usual spellings without click
(:mod:`oneiric.cli._ctl_fast`) and everything else here: ``--help``, ``--version``, usage
errors, the other commands, shell completion.
"""

from __future__ import annotations

import os

import click

from oneiric._const import VERSION
from oneiric.cli import _ctl_base
from oneiric.cli._ctl import reply_timeout_arg
from oneiric.cli._ctl_base import Ctl, configure_look, default_socket

#: Each command and where it lives: the module is imported only when the command runs (or
#: help lists them all), so ``oneiricctl status`` never loads the code of ``drain`` or
#: ``manifest`` (ctl_manifest alone is ~7 ms). The entry point names its commands here rather
#: than the modules registering themselves.
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
    ctx.obj = Ctl(socket=socket, json=as_json, timeout=timeout, clock=_ctl_base.now)
