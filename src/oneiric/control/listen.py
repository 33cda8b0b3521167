"""Where the control socket comes from: bound here, or handed over by systemd.

Binding is careful because it runs as root on production hosts: a live daemon already
answering on the path is detected (and never disturbed), a stale socket file is removed but
nothing else ever is, and the socket is bound under a umask that yields exactly the configured
mode, so it is never briefly more open than configured. All of it is blocking and runs before
serving starts.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import socket
import stat
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Final

from oneiric._files import check_private_dir, make_private_dirs
from oneiric.errors import AlreadyRunning, OneiricError
from oneiric.systemd import listen_fds

__all__ = [
    "MAX_SOCKET_PATH",
    "ControlSocket",
    "bind_control_socket",
    "open_control_socket",
    "probe_live",
]

log = logging.getLogger(__name__)

MAX_SOCKET_PATH: Final = 107  # sizeof(sun_path) - 1 on Linux
PROBE_TIMEOUT: Final = 2.0
#: Deep enough that a burst of connects (or a connect/close loop) does not turn an operator's
#: connect into EAGAIN before the accept loop's next turn (the kernel caps it at somaxconn).
LISTEN_BACKLOG: Final = 1024


@dataclass(frozen=True, slots=True)
class ControlSocket:
    """A listening control socket, and whether its file is ours to remove at exit (not when
    systemd created it)."""

    sock: socket.socket
    owns_file: bool


def open_control_socket(
    path: str, *, mode: int, group: str | None, environ: MutableMapping[str, str]
) -> ControlSocket:
    """The socket systemd passed (``LISTEN_FDS``: the first Unix stream socket), else one
    bound at ``path`` by :func:`bind_control_socket` (which raises :class:`AlreadyRunning`)."""
    inherited = [
        s
        for s in listen_fds(environ)
        if s.family == socket.AF_UNIX and s.type == socket.SOCK_STREAM
    ]
    if inherited:
        log.info("using the control socket passed by the service manager (LISTEN_FDS)")
        return ControlSocket(inherited[0], owns_file=False)
    return ControlSocket(bind_control_socket(path, mode=mode, group=group), owns_file=True)


def bind_control_socket(path: str, *, mode: int, group: str | None) -> socket.socket:
    """Create the listening control socket at ``path`` (blocking; call before serving).

    Refuses with :class:`AlreadyRunning` when a live daemon answers there; removes a stale
    file. The socket is bound under a umask that yields exactly ``mode``, so it is never
    briefly more open than configured.
    """
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise OneiricError(
            f"control socket path {path} is {size} bytes; Unix socket paths may be at most "
            f"{MAX_SOCKET_PATH} bytes, choose a shorter one"
        )
    parent = os.path.dirname(path) or "."
    # never a directory others may write (whatever the umask): they could swap the socket
    make_private_dirs(parent, 0o755, respect_umask=False)
    check_private_dir(parent)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        old_umask = os.umask(0o777 & ~mode)
        try:
            sock.bind(path)
            bound = True
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        _apply_group(path, group)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        if bound:
            _unlink_quietly(path)
        raise
    log.debug("control socket bound at %s (mode %o)", path, mode)
    return sock


def probe_live(path: str) -> None:
    """Raise :class:`AlreadyRunning` when a live daemon answers at ``path`` (a missing or
    dead socket file passes)."""
    if os.path.exists(path):
        _probe(path)


def _clear_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise OneiricError(f"control socket path {path} is a directory; remove it or pick another")
    if not stat.S_ISSOCK(st.st_mode):
        raise OneiricError(
            f"control socket path {path} exists and is not a socket; refusing to remove it "
            "(check --socket / [daemon] socket)"
        )
    _probe(path)
    log.info("removing stale control socket %s (nothing answers on it)", path)
    _unlink_quietly(path)


def _probe(path: str) -> None:
    """Raise :class:`AlreadyRunning` unless the socket at ``path`` is provably dead."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return
    except (BlockingIOError, TimeoutError) as exc:  # listening, but its backlog is full: alive
        raise AlreadyRunning(path) from exc
    except OSError as exc:
        raise OneiricError(f"cannot tell whether a daemon answers on {path}: {exc}") from exc
    finally:
        probe.close()
    raise AlreadyRunning(path)


def _apply_group(path: str, group: str | None) -> None:
    if group is None:
        return
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        log.debug("group %r does not exist; control socket %s keeps its default group", group, path)
        return
    try:
        os.chown(path, -1, gid)
    except PermissionError as exc:
        log.warning("cannot give control socket %s to group %r: %s", path, group, exc)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
