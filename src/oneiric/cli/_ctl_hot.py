"""The bodies of the hot commands (``status``, ``ping``, ``pause``, ``resume``, ``drain``),
click-free, so that both ways of running them share every line after the command line is
parsed: the click commands (:mod:`~oneiric.cli.ctl_read`, :mod:`~oneiric.cli.ctl_intent`) and
the fast path that parses their usual spellings itself (:mod:`oneiric.cli._ctl_fast`).

Each takes the parsed options and where to print (:class:`Out`: through ``click.echo`` under
click; the fast path's :class:`~oneiric.cli._ctl_fast.FastOut` writes to the plain UTF-8 streams
it accepts itself) and returns the exit status. Only the happy
path is click-free: a failed request is reported by :func:`oneiric.cli._ctl_errors.errors`,
imported then (it loads click), so every message, hint and status is the one all commands use.
"""

from __future__ import annotations

import os
import sys

from oneiric._const import EXIT_FAILED, EXIT_OK
from oneiric.cli import render
from oneiric.cli._ctl_base import (
    WAITING_TIMEOUT,
    Ctl,
    call_raw,
    default_health_file,
    stream_raw,
)
from oneiric.control.client import ControlError, DaemonNotRunning, RemoteError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn


class Out:
    """Where a command prints: ``click.echo`` (imported on first use)."""

    def echo(self, message: str = "", *, err: bool = False) -> None:
        import click

        click.echo(message, err=err)

    def echo_json(self, raw: bytes) -> None:
        """One JSON document on stdout, already encoded (UTF-8, no raw control character)."""
        self.echo(raw.decode())


#: How the click commands print.
CLICK = Out()


def _failed(
    ctl: Ctl,
    action: str,
    exc: ControlError,
    on_not_running: Callable[[DaemonNotRunning], NoReturn] | None = None,
    *,
    hint: str | None = None,
) -> NoReturn:
    """Report a failed request as every command does: through ``errors()``, which exits."""
    from oneiric.cli._ctl_errors import errors

    with errors(ctl, action, on_not_running, hint=hint):
        raise exc
    raise AssertionError("errors() exits on every client error")  # pragma: no cover


def _print(ctl: Ctl, out: Out, result: Any, raw: bytes | None, text: Callable[[], str]) -> None:
    """The reply as one JSON document under ``--json`` (the bytes it came in when they are
    exactly that document: no decoding and encoding again of a 5.8 MB status), else the
    rendered text, rendered only when it is printed."""
    if not ctl.json:
        out.echo(text())
    elif raw is not None:
        out.echo_json(raw)
    else:
        out.echo(render.to_json(result))


# --- status, ping ------------------------------------------------------------------------------


def no_health_file(path: str) -> bool:
    """True only when ``path`` certainly does not exist: then the health reader (and msgspec,
    ~10 ms) need not be imported to say so. Any other error is left for the reader to report."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return False


def stale_fallback(
    ctl: Ctl, exc: DaemonNotRunning, domain: str | None, key: str | None, out: Out
) -> NoReturn:
    """The daemon is down: show its last health snapshot, marked stale, then exit 3."""
    from oneiric.cli._ctl_errors import not_running

    path = default_health_file(ctl.socket, os.environ)
    missing = [f"no health snapshot at {path} either"]
    if no_health_file(path):
        not_running(ctl, exc, extra=missing, health_file=path)

    import msgspec  # lazily, like the reader: only the health-file paths need them

    from oneiric.runtime import health

    try:
        snapshot = health.read_health(path)
    except FileNotFoundError:
        not_running(ctl, exc, extra=missing, health_file=path)
    except (OSError, ValueError) as err:
        not_running(ctl, exc, extra=[f"cannot read {path}: {err}"], health_file=path)
    verdict = health.judge(snapshot)
    if snapshot.state == "stopped":
        reason = "oneiricd stopped cleanly; this is its final snapshot"
    else:
        reason = verdict.reason if verdict.stale and verdict.reason else "oneiricd does not answer"
    doc = render.filter_components(msgspec.to_builtins(snapshot), domain, key)
    if not ctl.json:
        now = ctl.clock()
        out.echo(render.stale_banner(path, reason, doc, now))
        out.echo(render.render_status(doc, now=now, live=False))
    not_running(ctl, exc, health_file=path, stale_reason=reason, snapshot=doc)


def status(ctl: Ctl, domain: str | None, key: str | None, out: Out = CLICK) -> int:
    """``oneiricctl status [DOMAIN [KEY]]`` (not ``--watch``): 1 when something is failing."""
    try:
        doc, raw = call_raw(ctl, "status", domain=domain, key=key)
    except ControlError as exc:
        _failed(ctl, "status", exc, lambda down: stale_fallback(ctl, down, domain, key, out))
    _print(ctl, out, doc, raw, lambda: render.render_status(doc, now=ctl.clock()))
    return EXIT_FAILED if render.failing(doc) else EXIT_OK


def ping(ctl: Ctl, out: Out = CLICK) -> int:
    """``oneiricctl ping``."""
    try:
        result, raw = call_raw(ctl, "ping")
    except ControlError as exc:
        _failed(ctl, "ping", exc)
    _print(ctl, out, result, raw, lambda: render.render_ping(result))
    return EXIT_OK


# --- pause, resume, drain --------------------------------------------------------------------


def pause(
    ctl: Ctl,
    domain: str | None,
    key: str | None,
    note: str | None,
    target: str,
    out: Out = CLICK,
) -> int:
    """``oneiricctl pause``, its target already checked (DOMAIN [KEY], or None for --all)."""
    try:
        result, raw = call_raw(ctl, "pause", domain=domain, key=key, note=note)
    except ControlError as exc:
        _failed(ctl, "pause", exc)
    _print(ctl, out, result, raw, lambda: render.render_intent(result, "paused", target))
    return EXIT_OK


def resume(ctl: Ctl, domain: str | None, key: str | None, target: str, out: Out = CLICK) -> int:
    """``oneiricctl resume``, its target already checked."""
    try:
        result, raw = call_raw(
            ctl, "resume", read_timeout=ctl.read_timeout(WAITING_TIMEOUT), domain=domain, key=key
        )
    except ControlError as exc:
        _failed(ctl, "resume", exc)
    _print(ctl, out, result, raw, lambda: render.render_intent(result, "resumed", target))
    return EXIT_OK


class Progress:
    """Drain progress on stderr: one line rewritten in place on a terminal; otherwise one line
    per change, so logs stay short."""

    def __init__(self, enabled: bool, out: Out = CLICK) -> None:
        self.enabled = enabled
        self.out = out
        self.tty = sys.stderr.isatty()
        self.last: Any = object()
        self.open_line = False

    def __call__(self, event: Any) -> None:
        if not self.enabled or not isinstance(event, dict):
            return
        if event.get("type", "progress") != "progress":
            return
        line = render.drain_progress(event)
        if self.tty:  # written raw: click.echo would strip the escape off a non-tty
            sys.stderr.write("\r\x1b[K" + line)
            sys.stderr.flush()
            self.open_line = True
        elif event.get("in_flight") != self.last:
            self.last = event.get("in_flight")
            self.out.echo(line, err=True)

    def finish(self) -> None:
        if self.open_line:
            self.out.echo("", err=True)
            self.open_line = False


def drain(
    ctl: Ctl,
    domain: str | None,
    key: str | None,
    note: str | None,
    drain_timeout: float | None,
    no_wait: bool,
    out: Out = CLICK,
) -> int:
    """``oneiricctl drain``: pause, then wait (progress on stderr) for in-flight work to end.
    Ctrl-C stops this client waiting, never the drain itself."""
    target = render.target_name(domain, key)
    progress = Progress(enabled=not ctl.json, out=out)
    try:
        result, raw = stream_raw(
            ctl,
            "drain",
            progress,
            domain=domain,
            key=key,
            note=note,
            timeout=drain_timeout,
            wait=not no_wait,
        )
    except KeyboardInterrupt:
        from oneiric.cli._ctl_errors import fail

        progress.finish()
        fail(ctl, "interrupted", f"stopped waiting; {target} stays draining (resume to reopen)")
    except RemoteError as exc:
        progress.finish()
        if exc.code != "timeout" or not isinstance(exc.detail, dict):
            _failed(ctl, "drain", exc)
        from oneiric.cli._ctl_errors import fail

        fail(
            ctl,
            "timeout",
            render.drain_timeout_message(exc.detail, drain_timeout),
            detail=exc.detail,
            hints=[
                f"{target} stays draining; run drain again to keep waiting, or resume to reopen it"
            ],
        )
    except ControlError as exc:
        _failed(ctl, "drain", exc)
    progress.finish()
    _print(ctl, out, result, raw, lambda: render.render_drain(result, target))
    return EXIT_OK
