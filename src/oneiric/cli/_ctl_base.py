"""What every oneiricctl command shares and click has no part in: where the socket and health
file are by default, the global options (:class:`Ctl`), how this invocation looks (headers,
colour) and the request helpers; durations are :mod:`oneiric._durations`' (re-exported).

The click-free path for the hot commands (:mod:`oneiric.cli._ctl_fast`) runs on this module
alone, so it imports nothing beyond what the interpreter has loaded at start-up, the blocking
control client and the pure renderers: no click, no :mod:`typing`, no :mod:`json` (each costs
a large share of the 2.5×-the-bare-interpreter budget; docs/performance.md).
"""

from __future__ import annotations

import os
import sys
import time

from oneiric._durations import parse_duration
from oneiric.cli import render
from oneiric.control.client import ControlClient

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

__all__ = [
    "DEFAULT_SOCKET",
    "QUICK_TIMEOUT",
    "WAITING_TIMEOUT",
    "Ctl",
    "call",
    "call_raw",
    "configure_look",
    "default_health_file",
    "default_socket",
    "now",
    "parse_duration",
    "stream",
    "stream_raw",
    "wants_colour",
]

DEFAULT_SOCKET = "/run/oneiric/oneiricd.sock"
#: Reply timeout for quick requests, and for those that wait for components to do work.
#: Streaming requests (watch, drain) wait without a reply timeout: the daemon bounds a drain
#: with its own timeout and a watch lasts until Ctrl-C.
QUICK_TIMEOUT = 10.0
WAITING_TIMEOUT = 300.0


def now() -> float:
    """Wall-clock now for "3s ago" renderings: the one seam tests pin (every invocation looks
    it up here and hands it to the commands as ``Ctl.clock``)."""
    return time.time()


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
    """Global options, shared by every command (through ``ctx.obj`` under click), plus the
    clock that "3s ago" renderings read (:func:`now`, the seam tests pin). A plain class rather
    than a dataclass: importing :mod:`dataclasses` costs a few milliseconds of start-up."""

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


# --- how this invocation looks -------------------------------------------------------------------


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


def call_raw(
    ctl: Ctl, op: str, *, read_timeout: float | None = None, **args: Any
) -> tuple[Any, bytes | None]:
    """:func:`call`, and the result's bytes when they can be printed as they came
    (:meth:`oneiric.control.client.ControlClient.call_raw`)."""
    with ControlClient(ctl.socket, timeout=read_timeout or ctl.read_timeout()) as client:
        return client.call_raw(op, **args)


def stream(ctl: Ctl, op: str, on_event: Callable[[Any], None], **args: Any) -> Any:
    """A request whose events (watch snapshots, drain progress) precede the final reply. The
    client bounds only the connect; the wait for events is unbounded."""
    with ControlClient(ctl.socket, timeout=ctl.read_timeout()) as client:
        return client.stream(op, on_event, **args)


def stream_raw(
    ctl: Ctl, op: str, on_event: Callable[[Any], None], **args: Any
) -> tuple[Any, bytes | None]:
    """:func:`stream`, and the result's bytes when they can be printed as they came."""
    with ControlClient(ctl.socket, timeout=ctl.read_timeout()) as client:
        return client.stream_raw(op, on_event, **args)
