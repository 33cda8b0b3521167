"""oneiricctl: the operator's client for oneiricd (SPEC §7).

A thin shell: parse the command line, send one request over the control socket, hand the
result to :mod:`oneiric.cli.render`, map the outcome to an exit status. It must start fast and
work when the daemon is broken, so at import it loads only click, the blocking control client
and stdlib modules that click loads anyway (plus json and the C ``_socket``). No msgspec,
dataclasses, pathlib or shutil: each costs milliseconds on every invocation. The health reader
(which needs msgspec) is imported only on the paths that read an existing health file. Never
import anyio or watchfiles here, directly or transitively (tests enforce all of this).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click

from oneiric._const import (
    DOMAINS,
    EXIT_FAILED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_PERMISSION,
    VERSION,
)
from oneiric.cli import render
from oneiric.control.client import AccessDenied, ControlClient, DaemonNotRunning, RemoteError

DEFAULT_SOCKET = "/run/oneiric/oneiricd.sock"
#: Reply timeout for quick requests, and for those that wait for components to do work.
#: Streaming requests (watch, drain) wait without a reply timeout: the daemon bounds a drain
#: with its own timeout and a watch lasts until Ctrl-C.
QUICK_TIMEOUT = 10.0
WAITING_TIMEOUT = 300.0

ADMIN_HINT = (
    "mutating commands need an admin: root, the daemon's user, or a member of its admin "
    "group (named above); ask for membership or use sudo"
)
NOT_RUNNING_HINT = (
    "is oneiricd running? try: systemctl status oneiricd "
    "(or point --socket / $ONEIRIC_SOCKET at its socket)"
)


def _now() -> float:
    """Wall-clock now for "3s ago" renderings (one seam, so tests can pin it)."""
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


def _no_health_file(path: str) -> bool:
    """True only when ``path`` certainly does not exist: then the health reader (and msgspec,
    ~10 ms) need not be imported to say so. Any other error is left for the reader to report."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return False


class Ctl:
    """Global options, shared by every command through ``ctx.obj``. A plain class rather than
    a dataclass: importing :mod:`dataclasses` costs a few milliseconds of start-up."""

    __slots__ = ("json", "socket", "timeout")

    def __init__(self, socket: str, json: bool = False, timeout: float | None = None) -> None:
        self.socket = socket
        self.json = json
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Ctl(socket={self.socket!r}, json={self.json!r}, timeout={self.timeout!r})"

    def read_timeout(self, default: float = QUICK_TIMEOUT) -> float:
        return self.timeout if self.timeout is not None else default


_UNITS = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))


def parse_duration(value: str) -> float:
    """Seconds from ``30``, ``2.5``, ``500ms``, ``30s``, ``5m`` or ``1h`` (the config's style);
    ``ValueError`` otherwise."""
    text = value.strip().lower()
    factor = 1.0
    for suffix, unit in _UNITS:
        if text.endswith(suffix):
            text, factor = text[: -len(suffix)], unit
            break
    try:
        number = float(text) * factor
    except ValueError:
        raise ValueError(f"{value!r} is not a duration (e.g. 30, 30s, 500ms, 5m)") from None
    if number < 0 or math.isnan(number) or math.isinf(number):
        raise ValueError(f"{value!r} must be a finite, non-negative duration")
    return number


def _duration_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Click callback (rather than a ParamType, which is generic only in newer click)."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _reply_timeout_arg(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> float | None:
    seconds = _duration_arg(ctx, param, value)
    if seconds == 0:
        raise click.BadParameter("must be more than 0", ctx=ctx, param=param)
    return seconds


DOMAIN = click.Choice(DOMAINS)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
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


F = TypeVar("F", bound=Callable[..., Any])


def json_option(f: F) -> F:
    """``--json`` accepted after the command too (``oneiricctl status --json``)."""
    return click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print one JSON document instead of text.",
    )(f)


# --- failure reporting -----------------------------------------------------------------------


def fail(
    ctl: Ctl,
    code: str,
    message: str,
    *,
    exit_code: int = EXIT_FAILED,
    detail: Any = None,
    hints: Sequence[str] = (),
) -> NoReturn:
    """Report an error on stderr (and as ``{"ok": false, "error": ...}`` on stdout under
    ``--json``) and exit with the SPEC §7 status."""
    if ctl.json:
        error = {"code": code, "message": message, "detail": detail}
        click.echo(render.to_json({"ok": False, "error": error}))
    click.echo(f"oneiricctl: {message}", err=True)
    for hint in hints:
        click.echo(f"oneiricctl: {hint}", err=True)
    raise click.exceptions.Exit(exit_code)


def not_running(
    ctl: Ctl, exc: DaemonNotRunning, *, extra: Sequence[str] = (), **detail: Any
) -> NoReturn:
    """Exit 3 naming the socket tried, whether its file exists, and what to do next."""
    path = exc.path
    exists = os.path.exists(path)
    message = f"cannot reach oneiricd at {path}: {exc.reason}"
    if "socket file" not in exc.reason:
        message += "; the socket file exists" if exists else "; there is no socket file"
    fail(
        ctl,
        "not_running",
        message,
        exit_code=EXIT_NOT_RUNNING,
        detail={"socket": path, "socket_exists": exists, **detail},
        hints=[*extra, NOT_RUNNING_HINT],
    )


_CODE_HINTS = {
    "not_found": "see `oneiricctl list` for the known domains, keys and providers",
    "unknown_op": "oneiricctl and oneiricd may be different versions; check `oneiricctl ping`",
    "timeout": "oneiricd may be busy or hung: raise --timeout, or check `oneiricctl ping`",
}


@contextmanager
def errors(
    ctl: Ctl,
    action: str,
    on_not_running: Callable[[DaemonNotRunning], NoReturn] | None = None,
    *,
    hint: str | None = None,
) -> Iterator[None]:
    """Translate the client's exceptions into messages and exit statuses at one place."""
    try:
        yield
    except RemoteError as exc:
        if exc.code == "permission_denied":
            fail(
                ctl,
                exc.code,
                f"{action}: permission denied: {exc.message}",
                exit_code=EXIT_PERMISSION,
                detail=exc.detail,
                hints=[ADMIN_HINT],
            )
        code_hint = _CODE_HINTS.get(exc.code)
        if code_hint is not None and "oneiricctl list" in exc.message:
            code_hint = None  # the daemon's message already points there
        hints = [h for h in (hint, code_hint) if h]
        # "task/x failed: ValueError: …" already says it failed: don't say it twice
        what = f"{action}: " if " failed" in exc.message else f"{action} failed: "
        fail(ctl, exc.code, what + exc.message, detail=exc.detail, hints=hints)
    except DaemonNotRunning as exc:
        if on_not_running is not None:
            on_not_running(exc)
        not_running(ctl, exc)
    except AccessDenied as exc:  # its message names the group that grants access
        fail(
            ctl,
            "permission_denied",
            str(exc),
            exit_code=EXIT_PERMISSION,
            detail={"socket": exc.path},
        )


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
    click.echo(render.to_json(result) if ctl.json else text)


# --- the command group -------------------------------------------------------------------------

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
else /run/oneiric/oneiricd.sock."""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", "socket_path", metavar="PATH", help="Control socket of oneiricd.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.option(
    "--timeout",
    callback=_reply_timeout_arg,
    metavar="SECONDS",
    help="How long to wait for a reply (default 10s; 300s for commands that wait for work).",
)
@click.version_option(VERSION, prog_name="oneiricctl")
@click.pass_context
def cli(ctx: click.Context, socket_path: str | None, as_json: bool, timeout: float | None) -> None:
    """Control oneiricd: inspect, pause, drain, swap and run its components."""
    ctx.obj = Ctl(socket=socket_path or default_socket(os.environ), json=as_json, timeout=timeout)


pass_ctl = click.make_pass_decorator(Ctl)


# --- status ----------------------------------------------------------------------------------


def _stale_fallback(
    ctl: Ctl, exc: DaemonNotRunning, domain: str | None, key: str | None
) -> NoReturn:
    """The daemon is down: show its last health snapshot, marked stale, then exit 3."""
    path = default_health_file(ctl.socket, os.environ)
    missing = [f"no health snapshot at {path} either"]
    if _no_health_file(path):
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
        now = _now()
        click.echo(render.stale_banner(path, reason, doc, now))
        click.echo(render.render_status(doc, now=now))
    not_running(ctl, exc, health_file=path, stale_reason=reason, snapshot=doc)


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
        text = render.render_status(doc, now=_now())
        if self.tty:
            click.clear()
            click.echo(text)
        else:
            click.echo(text + "\n")


@cli.command(
    epilog="""\b
Examples:
  oneiricctl status
  oneiricctl status adapter          only the adapter domain
  oneiricctl status adapter cache --json
  oneiricctl status --watch          follow changes live (Ctrl-C to stop)

\b
Exits 1 when a component is failed or degraded (paused/drained are not failures).
When oneiricd is down, prints its last health snapshot marked STALE and exits 3."""
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
    with errors(ctl, "status", lambda exc: _stale_fallback(ctl, exc, domain, key)):
        doc = call(ctl, "status", domain=domain, key=key)
    output(ctl, doc, render.render_status(doc, now=_now()))
    if render.failing(doc):
        raise click.exceptions.Exit(EXIT_FAILED)


@cli.command(
    epilog="""\b
Examples:
  oneiricctl health
  oneiricctl health --file /run/oneiric/health.json --json

\b
Exits 1 when the snapshot is stale (dead pid, no heartbeat) or a component is
failed/degraded; 3 when there is no health file or it says oneiricd stopped."""
)
@click.option("--file", "file_path", metavar="PATH", help="Health file to read.")
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
            hints=[NOT_RUNNING_HINT],
        )

    if _no_health_file(path):
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
    now = _now()
    text = render.render_status(doc, now=now)
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


@cli.command(epilog="Example:\n\n  oneiricctl ping --json")
@json_option
@pass_ctl
def ping(ctl: Ctl) -> None:
    """Daemon version, pid, state and uptime."""
    with errors(ctl, "ping"):
        result = call(ctl, "ping")
    output(ctl, result, render.render_ping(result))


# --- intent: pause / resume / drain ----------------------------------------------------------


def _intent_target(verb: str, domain: str | None, key: str | None, everything: bool) -> str:
    """Check that exactly one of DOMAIN or --all was given; name the target."""
    if everything and domain is not None:
        raise click.UsageError(f"{verb} takes DOMAIN [KEY] or --all, not both")
    if not everything and domain is None:
        raise click.UsageError(
            f"{verb} needs a DOMAIN (and optionally a KEY); to {verb} everything use --all"
        )
    return render.target_name(domain, key)


@cli.command(
    epilog="""\b
Examples:
  oneiricctl pause adapter cache --note "db migration"
  oneiricctl pause service           every service, including ones added later
  oneiricctl pause --all

\b
In-flight work continues; new leases wait, service loops stop, scheduled runs are
skipped, events are held and config changes are parked until `oneiricctl resume`."""
)
@click.argument("domain", required=False, type=DOMAIN)
@click.argument("key", required=False)
@click.option("--all", "everything", is_flag=True, help="Pause every domain.")
@click.option("--note", metavar="TEXT", help="Why; recorded with your uid, shown in status.")
@json_option
@pass_ctl
def pause(
    ctl: Ctl, domain: str | None, key: str | None, everything: bool, note: str | None
) -> None:
    """Close admission for a KEY, a whole DOMAIN, or everything."""
    target = _intent_target("pause", domain, key, everything)
    with errors(ctl, "pause"):
        result = call(ctl, "pause", domain=domain, key=key, note=note)
    output(ctl, result, render.render_intent(result, "paused", target))


@cli.command(
    epilog="""\b
Examples:
  oneiricctl resume adapter cache
  oneiricctl resume --all            lift every pause and drain

\b
Reopens admission, restarts service loops, delivers held events and applies
parked swaps."""
)
@click.argument("domain", required=False, type=DOMAIN)
@click.argument("key", required=False)
@click.option("--all", "everything", is_flag=True, help="Resume everything.")
@json_option
@pass_ctl
def resume(ctl: Ctl, domain: str | None, key: str | None, everything: bool) -> None:
    """Lift a pause or drain from a KEY, a DOMAIN, or (with --all) everything."""
    target = _intent_target("resume", domain, key, everything)
    with errors(ctl, "resume"):
        result = call(
            ctl, "resume", read_timeout=ctl.read_timeout(WAITING_TIMEOUT), domain=domain, key=key
        )
    output(ctl, result, render.render_intent(result, "resumed", target))


@contextmanager
def _stop_waiting(ctl: Ctl, what: str, progress: _Progress) -> Iterator[None]:
    """Ctrl-C stops the client waiting, not the operation: say so, and exit 1."""
    try:
        yield
    except KeyboardInterrupt:
        progress.finish()
        fail(ctl, "interrupted", f"stopped waiting; {what} (resume to reopen)")


class _Progress:
    """Drain progress on stderr: one line rewritten in place on a terminal; otherwise one line
    per change, so logs stay short."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
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
            click.echo(line, err=True)

    def finish(self) -> None:
        if self.open_line:
            click.echo("", err=True)
            self.open_line = False


@cli.command(
    epilog="""\b
Examples:
  oneiricctl drain                   everything (what a shutdown does)
  oneiricctl drain service beat --timeout 2m --note "host maintenance"
  oneiricctl drain adapter --no-wait start draining, do not wait

\b
Pauses the target, then waits until no lease is in flight. Exits 1 naming what is
still in flight when --timeout passes; the target stays draining either way."""
)
@click.argument("domain", required=False, type=DOMAIN)
@click.argument("key", required=False)
@click.option("--note", metavar="TEXT", help="Why; recorded with your uid, shown in status.")
@click.option(
    "--timeout",
    "drain_timeout",
    callback=_duration_arg,
    metavar="SECONDS",
    help="Stop waiting after this long and exit 1 (default: wait until drained).",
)
@click.option("--no-wait", is_flag=True, help="Start draining and return at once.")
@json_option
@pass_ctl
def drain(
    ctl: Ctl,
    domain: str | None,
    key: str | None,
    note: str | None,
    drain_timeout: float | None,
    no_wait: bool,
) -> None:
    """Pause, then wait for in-flight work to finish (no argument: everything)."""
    target = render.target_name(domain, key)
    progress = _Progress(enabled=not ctl.json)
    with errors(ctl, "drain"), _stop_waiting(ctl, f"{target} stays draining", progress):
        try:
            result = stream(
                ctl,
                "drain",
                progress,
                domain=domain,
                key=key,
                note=note,
                timeout=drain_timeout,
                wait=not no_wait,
            )
        except RemoteError as exc:
            progress.finish()
            if exc.code != "timeout" or not isinstance(exc.detail, dict):
                raise
            fail(
                ctl,
                "timeout",
                render.drain_timeout_message(exc.detail, drain_timeout),
                detail=exc.detail,
                hints=[
                    f"{target} stays draining; run drain again to keep waiting, "
                    "or resume to reopen it"
                ],
            )
    progress.finish()
    output(ctl, result, render.render_drain(result, target))


# --- selection: swap / explain / list --------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  oneiricctl swap adapter cache sqlite
  oneiricctl swap adapter cache --clear   back to the config's choice

\b
The override is durable until cleared. The swap is make-before-break: the new
provider starts and passes its health check before it takes new leases; on
failure the old one keeps serving. On a paused key the swap is parked."""
)
@click.argument("domain", type=DOMAIN)
@click.argument("key")
@click.argument("provider", required=False)
@click.option("--clear", is_flag=True, help="Drop the operator override.")
@json_option
@pass_ctl
def swap(ctl: Ctl, domain: str, key: str, provider: str | None, clear: bool) -> None:
    """Override the active PROVIDER of DOMAIN KEY (or --clear the override)."""
    if provider is not None and clear:
        raise click.UsageError("give a PROVIDER or --clear, not both")
    if provider is None and not clear:
        raise click.UsageError("give the PROVIDER to swap to, or --clear to drop the override")
    with errors(ctl, "swap"):
        result = call(
            ctl,
            "swap",
            read_timeout=ctl.read_timeout(WAITING_TIMEOUT),
            domain=domain,
            key=key,
            provider=provider,
            clear=clear,
        )
    output(ctl, result, render.render_swap(result, domain, key, cleared=clear))


@cli.command(
    epilog="""\b
Example:
  oneiricctl explain adapter cache

\b
Order: operator override (swap), then the config's [selections], then the highest
stack_level, priority, and latest registration."""
)
@click.argument("domain", type=DOMAIN)
@click.argument("key")
@json_option
@pass_ctl
def explain(ctl: Ctl, domain: str, key: str) -> None:
    """Rank every candidate of DOMAIN KEY and say why the winner wins."""
    with errors(ctl, "explain"):
        result = call(ctl, "explain", domain=domain, key=key)
    output(ctl, result, render.render_explain(result))


@cli.command(
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


# --- work: run / emit ------------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  oneiricctl run task cleanup --payload '{"older_than": "7d"}'
  oneiricctl run workflow nightly
  oneiricctl run task reindex --no-wait

\b
Exits 1 when the task raises or any workflow node fails."""
)
@click.argument("kind", type=click.Choice(["task", "workflow"]), metavar="task|workflow")
@click.argument("key")
@click.option("--payload", metavar="JSON", callback=_json_arg, help="Argument for the run.")
@click.option("--no-wait", is_flag=True, help="Return once started; do not wait for the result.")
@json_option
@pass_ctl
def run(ctl: Ctl, kind: str, key: str, payload: Any, no_wait: bool) -> None:
    """Run a task or workflow KEY now."""
    with errors(ctl, f"run {kind} {key}"):
        result = call(
            ctl,
            "run",
            read_timeout=ctl.read_timeout(WAITING_TIMEOUT),
            domain=kind,
            key=key,
            payload=payload,
            wait=not no_wait,
        )
    output(ctl, result, render.render_run(result, kind, key))
    if render.workflow_failed(result):
        click.echo(f"oneiricctl: {kind} {key} failed", err=True)
        raise click.exceptions.Exit(EXIT_FAILED)


@cli.command(
    epilog="""\b
Example:
  oneiricctl emit user.created --data '{"id": 42}'

\b
Every active event key whose topics match receives it; paused keys hold it until
they are resumed."""
)
@click.argument("topic")
@click.option("--data", metavar="JSON", callback=_json_arg, help="The event's payload.")
@json_option
@pass_ctl
def emit(ctl: Ctl, topic: str, data: Any) -> None:
    """Publish an event on TOPIC."""
    with errors(ctl, "emit"):
        result = call(ctl, "emit", topic=topic, data=data)
    output(ctl, result, render.render_emit(result, topic))
    if result.get("dropped"):  # overflow is never silent: a script must see it too
        sys.exit(EXIT_FAILED)


# --- daemon: reload / sync -------------------------------------------------------------------


@cli.command(
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


@cli.command(epilog="Example:\n\n  oneiricctl sync --json")
@json_option
@pass_ctl
def sync(ctl: Ctl) -> None:
    """Fetch and apply the remote manifest now."""
    with errors(ctl, "sync"):
        result = call(ctl, "sync", read_timeout=ctl.read_timeout(WAITING_TIMEOUT))
    output(ctl, result, render.render_sync(result))


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``oneiricctl``)."""
    cli.main(args=argv, prog_name="oneiricctl", terminal_width=help_width(os.environ))


if __name__ == "__main__":
    main()
