"""How oneiricctl fails: one message on stderr (plus ``{"ok": false, ...}`` on stdout under
``--json``), a hint at what to do next, and the SPEC §7 exit status. Every command goes through
:func:`errors`, so the client's exceptions are translated in one place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from oneiric._const import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_PERMISSION
from oneiric.cli import render
from oneiric.cli._ctl_base import Ctl
from oneiric.control.client import AccessDenied, DaemonNotRunning, RemoteError

ADMIN_HINT = (
    "mutating commands need an admin: root, the daemon's user, or a member of its admin "
    "group (named above); ask for membership or use sudo"
)
#: Where the packaged daemon (systemd, RuntimeDirectory=oneiric) puts its socket.
SYSTEM_SOCKET = "/run/oneiric/oneiricd.sock"


def not_running_hint(socket: str, *, systemd: bool | None = None) -> str:
    """What to try when no daemon answers at ``socket``. ``systemctl`` only helps for the
    packaged daemon on a host run by systemd; a daemon started by hand (``make run``, a test,
    ``oneiricd --socket``) is started again the same way."""
    if systemd is None:
        systemd = os.path.isdir("/run/systemd/system")  # sd_booted()'s test
    if systemd and socket == SYSTEM_SOCKET:
        return (
            "is oneiricd running? try: systemctl status oneiricd "
            "(or point --socket / $ONEIRIC_SOCKET at another daemon's socket)"
        )
    return (
        f"is oneiricd running? start it with: oneiricd --socket {socket} (make run in a "
        "checkout), or point --socket / $ONEIRIC_SOCKET at its socket"
    )


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
        hints=[*extra, not_running_hint(path)],
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
