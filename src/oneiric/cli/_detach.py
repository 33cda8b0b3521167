"""``oneiricd --daemonize``: a pidfile that a crash cannot leave locked, and a caller that
learns how start-up ended.

The pidfile is held with ``flock``: the kernel drops the lock when the process dies, however it
dies, so a stale file left by a SIGKILL is simply taken over (python-daemon's lockfile-style
pidfile stayed "already locked" forever). The lock is taken *before* detaching, so a live
daemon holding it reaches the caller as exit 75.

Detaching forks: the caller's process stays behind only to read one line from a pipe — ``ok``
once the detached daemon is READY, or ``exit N`` when start-up failed (78 for a broken intent
file, 75 when the socket is taken, …) — and exits with that status, as docs/operations.md
promises. A daemon that dies before saying anything is exit 1.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from typing import IO, Final

import click

from oneiric._const import EXIT_ALREADY_RUNNING, EXIT_FAILED

__all__ = ["Detached", "detach", "lock_pidfile"]

_OK: Final = b"ok\n"


def lock_pidfile(path: str) -> int:
    """Open and ``flock`` the pidfile (blocking, before detaching); exit 75 when another live
    process holds it. Returns the locked descriptor (kept open for the daemon's lifetime)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        click.echo(f"oneiricd: cannot open the pidfile {path}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_ALREADY_RUNNING)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        click.echo(
            f"oneiricd: another oneiricd (pid {holder}) holds the pidfile {path}; stop it first",
            err=True,
        )
        sys.exit(EXIT_ALREADY_RUNNING)
    stale = os.pread(fd, 32, 0).decode(errors="replace").strip()
    if stale:
        click.echo(
            f"oneiricd: taking over the stale pidfile {path} (pid {stale} is gone)", err=True
        )
    return fd


class Detached:
    """What the detached daemon keeps: the locked pidfile and the pipe to the caller."""

    def __init__(self, pidfile: str, lock_fd: int, report_fd: int) -> None:
        self.pidfile = os.path.abspath(pidfile)
        self.lock_fd = lock_fd
        self.report_fd = report_fd

    def write_pid(self) -> None:
        os.ftruncate(self.lock_fd, 0)
        os.pwrite(self.lock_fd, f"{os.getpid()}\n".encode(), 0)

    def ready(self) -> None:
        """READY: the caller may exit 0."""
        self._report(_OK)

    def failed(self, status: int) -> None:
        self._report(f"exit {status}\n".encode())

    def _report(self, line: bytes) -> None:
        if self.report_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self.report_fd, line)
                os.close(self.report_fd)
            self.report_fd = -1

    def remove_pidfile(self) -> None:
        """At exit, while still holding the lock: the file goes with the process."""
        with contextlib.suppress(OSError):
            os.unlink(self.pidfile)


def _wait_for_child(report_fd: int) -> None:
    """In the caller's process: exit with what the detached daemon reports."""
    data = b""
    with os.fdopen(report_fd, "rb") as report:
        data = report.readline()
    if data == _OK:
        os._exit(0)
    if data.startswith(b"exit "):
        with contextlib.suppress(ValueError):
            os._exit(int(data[5:]))
    sys.stderr.write("oneiricd: the daemon exited during start-up (see its log)\n")
    sys.stderr.flush()
    os._exit(EXIT_FAILED)


def detach(pidfile: str, lock_fd: int, out: IO[str]) -> Detached:
    """Fork; the caller's process waits for the daemon's report and exits with it (never
    returns). The child detaches with python-daemon (new session, cwd /, umask 022) and
    returns what it needs to report and to keep the pidfile."""
    import daemon as pydaemon  # python-daemon

    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        os.close(lock_fd)  # the daemon's copy keeps the lock
        _wait_for_child(read_fd)
    os.close(read_fd)
    ctx = pydaemon.DaemonContext(
        umask=0o022,
        working_directory="/",
        stdout=out,
        stderr=out,
        files_preserve=[out, lock_fd, write_fd],
        signal_map={},  # keep Python's/anyio's handlers: SIGTERM means drain, not exit
        detach_process=True,
    )
    try:
        ctx.open()
    except Exception as exc:
        os.write(write_fd, f"exit {EXIT_FAILED}\n".encode())
        click.echo(f"oneiricd: cannot daemonize: {exc}", err=True)
        os._exit(EXIT_FAILED)
    detached = Detached(pidfile, lock_fd, write_fd)
    detached.write_pid()
    return detached
