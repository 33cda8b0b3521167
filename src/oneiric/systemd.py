"""The systemd service protocol, written directly: sd_notify, the watchdog and LISTEN_FDS.

Why not python-systemd: it is a C extension that is often missing from venvs, and the protocol
is a handful of ``KEY=value`` lines in a datagram. Everything here is a no-op when the daemon is
not started by systemd, so callers never need to ask "am I under systemd?" before calling.

Reference: sd_notify(3), sd_watchdog_enabled(3), sd_listen_fds(3), systemd.exec(5)
(``JOURNAL_STREAM``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from typing import IO, Final

import anyio
from anyio.abc import TaskStatus

__all__ = ["Notifier", "listen_fds", "under_journal", "watchdog_loop"]

logger = logging.getLogger(__name__)

#: First file descriptor systemd passes (sd_listen_fds(3)). Module-level so the unit tests can
#: point it at free high-numbered fds in-process; subprocess tests prove the real fd 3.
SD_LISTEN_FDS_START: Final = 3

_LISTEN_VARS: Final = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def _socket_address(value: str) -> str | None:
    """Translate ``$NOTIFY_SOCKET`` into an AF_UNIX address, or None when unusable.

    ``@name`` is the abstract namespace (leading NUL). Other schemes systemd may grow (for
    example ``vsock:``) are not supported and leave the notifier disabled.
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def _one_line(text: str) -> str:
    """STATUS= is a single line: a newline would start a new (bogus) assignment."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


class Notifier:
    """Sends state changes to the service manager over ``$NOTIFY_SOCKET``.

    One datagram socket is opened lazily and kept for the process's life, so a notification
    costs one ``sendto``. Methods never raise: losing a status update must not crash the daemon
    (systemd's own timeouts handle a daemon that really cannot talk to it).
    """

    def __init__(self, address: str | None = None, *, watchdog_usec: int | None = None) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec if address is not None else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """Build from the environment systemd sets; disabled when ``NOTIFY_SOCKET`` is unset."""
        raw = environ.get("NOTIFY_SOCKET", "")
        if not raw:
            return cls(None)
        address = _socket_address(raw)
        if address is None:
            logger.warning("NOTIFY_SOCKET=%r is not a supported address; not notifying", raw)
            return cls(None)
        return cls(address, watchdog_usec=_watchdog_usec(environ))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram (``A=1\\nB=2``); True when it was sent."""
        if self._address is None or not lines:
            return False
        payload = "\n".join(lines).encode("utf-8", "replace")
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(payload, self._address)
        except OSError as exc:
            logger.debug("sd_notify %r failed: %s", lines, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        self._send_with_status("READY=1", status)

    def status(self, text: str) -> None:
        self.notify(f"STATUS={_one_line(text)}")

    def reloading(self) -> None:
        """RELOADING=1 must carry the monotonic time (Type=notify-reload, systemd >= 253)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> None:
        self._send_with_status("STOPPING=1", status)

    def extend_timeout(self, seconds: float) -> None:
        """Ask for ``seconds`` more before systemd's start/stop timeout fires (while draining)."""
        self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def mainpid(self, pid: int) -> None:
        self.notify(f"MAINPID={pid}")

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        shown = self._address
        if shown is not None and shown.startswith("\0"):
            shown = "@" + shown[1:]  # as NOTIFY_SOCKET spells it
        return f"Notifier(address={shown!r}, watchdog_usec={self._watchdog_usec!r})"

    def _send_with_status(self, line: str, status: str | None) -> None:
        if status is None:
            self.notify(line)
        else:
            self.notify(line, f"STATUS={_one_line(status)}")


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    """``WATCHDOG_USEC`` when it is meant for this process (``WATCHDOG_PID`` unset or ours)."""
    raw = environ.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        logger.warning("ignoring malformed WATCHDOG_USEC=%r", raw)
        return None
    return usec if usec > 0 else None


async def watchdog_loop(
    notifier: Notifier, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Ping the watchdog forever, from the event loop itself.

    Running on the loop (not a thread) is the point: if the loop wedges, the pings stop and
    systemd restarts the service. Returns at once when no watchdog is configured.
    """
    interval = notifier.watchdog_interval()
    task_status.started()
    if interval is None:
        return
    logger.debug("watchdog enabled: pinging every %.3fs", interval)
    while True:
        notifier.watchdog()
        await anyio.sleep(interval)


def listen_fds(
    environ: MutableMapping[str, str] = os.environ, *, unset: bool = True
) -> list[socket.socket]:
    """Sockets passed by socket activation (sd_listen_fds(3)), or [] when there are none.

    The fds are marked close-on-exec so component subprocesses do not inherit the listener.
    With ``unset`` the ``LISTEN_*`` variables are removed whatever the outcome, as
    sd_listen_fds does, so children never mistake them for their own. Descriptors that are not
    sockets (``ListenFIFO=`` and the like) are skipped with a warning.
    """
    try:
        return _collect_fds(environ)
    finally:
        if unset:
            for name in _LISTEN_VARS:
                environ.pop(name, None)


def _collect_fds(environ: Mapping[str, str]) -> list[socket.socket]:
    pid, count = environ.get("LISTEN_PID"), environ.get("LISTEN_FDS")
    if not pid or not count:
        return []
    try:
        pid_n, count_n = int(pid), int(count)
    except ValueError:
        logger.warning("ignoring malformed LISTEN_PID=%r LISTEN_FDS=%r", pid, count)
        return []
    if pid_n != os.getpid():
        logger.debug("LISTEN_FDS are for pid %d, not us", pid_n)
        return []
    if count_n <= 0:
        return []
    fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count_n)
    try:
        for fd in fds:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
    except OSError as exc:
        logger.warning("LISTEN_FDS=%d but fd %d is unusable: %s", count_n, fd, exc)
        return []
    sockets: list[socket.socket] = []
    for fd in fds:
        try:
            sockets.append(socket.socket(fileno=fd))
        except OSError as exc:
            logger.warning("passed fd %d is not a socket (%s); skipping it", fd, exc)
    return sockets


def under_journal(
    environ: Mapping[str, str] = os.environ, *, stream: IO[str] | IO[bytes] | int | None = None
) -> bool:
    """True when ``stream`` (default: stderr) is the journal stream systemd connected.

    ``JOURNAL_STREAM`` is ``<st_dev>:<st_ino>`` of that stream; checking the inode (rather than
    only the variable's presence) avoids journal formatting when stderr was redirected, or when
    the variable was merely inherited from a parent service.
    """
    raw = environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = raw.partition(":")
    if not sep:
        return False
    target = sys.stderr if stream is None else stream
    try:
        fd = target if isinstance(target, int) else target.fileno()
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        # No fileno (StringIO raises io.UnsupportedOperation, an OSError), closed, or garbage.
        return False
