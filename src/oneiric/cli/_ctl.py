"""What every oneiricctl command shares: the global options (:class:`Ctl`), where the socket and
health file are by default, option parsing (durations, JSON, ``--json`` after the command) and
the request/reply helpers.

Kept as light as :mod:`oneiric.cli.oneiricctl` itself (whose docstring says why): click, json,
the blocking control client and stdlib modules click loads anyway. No dataclasses, no pathlib.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from oneiric._const import DOMAINS
from oneiric._durations import parse_duration
from oneiric.cli import render
from oneiric.control.client import ControlClient

DEFAULT_SOCKET = "/run/oneiric/oneiricd.sock"
#: Reply timeout for quick requests, and for those that wait for components to do work.
#: Streaming requests (watch, drain) wait without a reply timeout: the daemon bounds a drain
#: with its own timeout and a watch lasts until Ctrl-C.
QUICK_TIMEOUT = 10.0
WAITING_TIMEOUT = 300.0


def default_socket(environ: Mapping[str, str]) -> str:
    """``$ONEIRIC_SOCKET``, else the first ``$RUNTIME_DIRECTORY`` entry (systemd may list
    several, ':'-separated) + ``oneiricd.sock``, else ``/run/oneiric/oneiricd.sock``."""
    if environ.get("ONEIRIC_SOCKET"):
        return environ["ONEIRIC_SOCKET"]
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return os.path.join(runtime, "oneiricd.sock")
    return DEFAULT_SOCKET


def default_health_file(socket_path: str, environ: Mapping[str, str]) -> str:
    """``$ONEIRIC_HEALTH_FILE``, else ``health.json`` beside the socket (the daemon puts both in
    its runtime directory)."""
    if environ.get("ONEIRIC_HEALTH_FILE"):
        return environ["ONEIRIC_HEALTH_FILE"]
    return os.path.join(os.path.dirname(socket_path) or ".", "health.json")


class Ctl:
    """Global options, shared by every command through ``ctx.obj``, plus the clock that "3s ago"
    renderings read (the group passes :func:`oneiric.cli.oneiricctl._now`, the seam tests pin).
    A plain class rather than a dataclass: importing :mod:`dataclasses` costs a few
    milliseconds of start-up."""

    __slots__ = ("clock", "json", "socket", "timeout")

    def __init__(
        self,
        socket: str,
        json: bool = False,
        timeout: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.socket = socket
        self.json = json
        self.timeout = timeout
        self.clock = clock

    def __repr__(self) -> str:
        return f"Ctl(socket={self.socket!r}, json={self.json!r}, timeout={self.timeout!r})"

    def read_timeout(self, default: float = QUICK_TIMEOUT) -> float:
        return self.timeout if self.timeout is not None else default


pass_ctl = click.make_pass_decorator(Ctl)


# --- option parsing ----------------------------------------------------------------------------


def duration_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Click callback (rather than a ParamType, which is generic only in newer click): the
    config's duration grammar (:mod:`oneiric._durations`: ``30``, ``500ms``, ``1h30m``, ``7d``)."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def reply_timeout_arg(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> float | None:
    """A duration that must be more than 0: a reply timeout of 0 could never be met."""
    seconds = duration_arg(ctx, param, value)
    if seconds == 0:
        raise click.BadParameter("must be more than 0", ctx=ctx, param=param)
    return seconds


DOMAIN = click.Choice(DOMAINS)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Decode a ``--payload``/``--data`` JSON option, or fail as a usage error naming where.
    ``NaN``/``Infinity`` are refused: they are not JSON and the request could not carry them."""
    if value is None:
        return None
    try:
        return json.loads(value, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError, or a NaN/Infinity constant
        raise click.BadParameter(f"not valid JSON: {exc}", ctx=ctx, param=param) from None


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    ctl = ctx.find_object(Ctl)
    if value and ctl is not None:
        ctl.json = True
        render.LOOK.colour = False


F = TypeVar("F", bound=Callable[..., Any])


def _no_headers(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        render.LOOK.headers = False


def json_option(f: F) -> F:
    """``--json`` and ``--no-headers`` accepted after the command too (``oneiricctl status
    --json``, ``oneiricctl status --no-headers``)."""
    f = click.option(
        "--no-headers",
        is_flag=True,
        expose_value=False,
        callback=_no_headers,
        help="Print tables without their header line.",
    )(f)
    return click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print one JSON document instead of text.",
    )(f)


def wants_colour(environ: Mapping[str, str], stream: Any, as_json: bool) -> bool:
    """Colour only for a person: on a terminal, not ``--json``, not ``NO_COLOR`` (set and not
    empty: https://no-color.org), not ``TERM=dumb``."""
    if as_json or environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # a closed or fake stream
        return False


def configure_look(*, no_headers: bool, as_json: bool, environ: Mapping[str, str]) -> None:
    """Set how this invocation prints tables (see :class:`oneiric.cli.render.text.Look`)."""
    render.LOOK.headers = not no_headers
    render.LOOK.colour = wants_colour(environ, sys.stdout, as_json)


# --- talking to the daemon ---------------------------------------------------------------------


def call(ctl: Ctl, op: str, *, read_timeout: float | None = None, **args: Any) -> Any:
    """One request, one reply. ``args`` that are None are left off the wire by the client."""
    with ControlClient(ctl.socket, timeout=read_timeout or ctl.read_timeout()) as client:
        return client.call(op, **args)


def stream(ctl: Ctl, op: str, on_event: Callable[[Any], None], **args: Any) -> Any:
    """A request whose events (watch snapshots, drain progress) precede the final reply. The
    client bounds only the connect; the wait for events is unbounded."""
    with ControlClient(ctl.socket, timeout=ctl.read_timeout()) as client:
        return client.stream(op, on_event, **args)


def output(ctl: Ctl, result: Any, text: str) -> None:
    """The reply as one JSON document under ``--json``, else the rendered ``text``."""
    click.echo(render.to_json(result) if ctl.json else text)
