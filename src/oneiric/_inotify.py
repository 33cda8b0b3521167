"""Linux inotify on the event loop: directory watches with zero wake-ups while nothing happens.

Why not only watchfiles: its Rust loop sleeps ``step`` ms and takes the GIL on every wake-up
to check its stop event, whether or not anything changed, so idle cost and save → reload latency
pull against each other (step 5 ms: ~10 ms to notice a save, ~0.5 % of a core idle; step 200
ms: 0.05 %, but 200–400 ms). An inotify descriptor instead becomes readable when the kernel has
an event, and the event loop waits on it like on a socket: no thread, no timer, nothing runs
until a file changes (docs/performance.md has the measured curve). watchfiles stays the
watcher wherever this is unavailable (not Linux, no inotify in the C library).

Events are those that mean "a finished change": a file closed after writing, created, deleted,
renamed in or out, its metadata changed, or the watched directory itself deleted or moved. A
plain ``IN_MODIFY`` is not watched: a write in place is reported once, when the writer closes
the file, not halfway through it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Iterable
from types import TracebackType

import anyio

__all__ = ["DirWatch", "available"]

IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

MASK = (
    IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
_READ_SIZE = 64 * 1024

_libc: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL | None:
    global _libc  # noqa: PLW0603 - one lazily loaded handle per process
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        except (OSError, AttributeError):
            return None
        _libc = libc
    return _libc


def available() -> bool:
    """Whether inotify can be used here (Linux with a C library that has it)."""
    return _load() is not None


def _oserror(what: str, path: str | None = None) -> OSError:
    code = ctypes.get_errno()
    exc_type = FileNotFoundError if code == errno.ENOENT else OSError
    if path is None:
        return exc_type(code, f"{what}: {os.strerror(code)}")
    return exc_type(code, f"{what}: {os.strerror(code)}", path)


class DirWatch:
    """Watch directories (non-recursively). ``with DirWatch(dirs) as w: await w.changes()``.

    :meth:`changes` returns the paths that changed since the last call (a watched directory's
    own path when it was deleted or moved, ``""`` when the kernel queue overflowed and events
    were lost). Raises ``FileNotFoundError`` when a directory does not exist (arming races a
    deletion) and ``OSError`` for anything else (``ENOSPC``: out of inotify watches).
    """

    def __init__(self, dirs: Iterable[str]) -> None:
        libc = _load()
        if libc is None:
            raise OSError(errno.ENOSYS, "inotify is not available on this system")
        fd: int = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise _oserror("inotify_init1")
        self._fd = fd
        self._dirs: dict[int, str] = {}
        try:
            for d in dirs:
                wd: int = libc.inotify_add_watch(fd, os.fsencode(d), MASK | IN_ONLYDIR)
                if wd < 0:
                    raise _oserror("cannot watch directory", d)
                self._dirs[wd] = d
        except BaseException:
            os.close(fd)
            raise

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> DirWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def changes(self) -> set[str]:
        """Wait until something changed; return every path reported so far (never empty)."""
        while True:
            out = self.read()
            if out:
                return out
            await anyio.wait_readable(self._fd)

    def read(self) -> set[str]:
        """The paths of the events queued now, without waiting (maybe none)."""
        out: set[str] = set()
        while True:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return out
            self._parse(data, out)

    def _parse(self, data: bytes, out: set[str]) -> None:
        pos, end = 0, len(data)
        while pos + _HEADER.size <= end:
            wd, mask, _cookie, length = _HEADER.unpack_from(data, pos)
            pos += _HEADER.size
            raw = data[pos : pos + length].split(b"\0", 1)[0]
            pos += length
            if mask & IN_Q_OVERFLOW:
                out.add("")
                continue
            directory = self._dirs.get(wd)
            if directory is None:
                continue
            if mask & IN_IGNORED:  # the watch is gone (directory deleted, or unmounted)
                self._dirs.pop(wd, None)
                out.add(directory)
            elif mask & (IN_DELETE_SELF | IN_MOVE_SELF) or not raw:
                out.add(directory)
            else:
                out.add(os.path.join(directory, os.fsdecode(raw)))
