"""Files the daemon owns: durable replacement (unique temp file in the same directory, fsync,
rename, fsync dir) and directories other users cannot tamper with, whatever the umask."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from oneiric.errors import ReplacedUnconfirmed, UnsafePath


def atomic_write(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, durable: bool = True
) -> None:
    """Replace ``path`` with ``data`` so that a reader (or a crash) sees the old or the new
    content, never a torn or empty file. Blocking: call it off the event loop.

    ``durable=False`` skips the fsyncs: readers still never see a torn file (rename is atomic),
    but a power cut may lose the latest version — right for snapshots rewritten every few
    seconds anyway (the health file), wrong for operator intent."""
    target = Path(path)
    directory = target.parent
    # opened before the rename, so nothing that can fail stands between the rename and the
    # directory fsync but the fsync itself (which then means "replaced, not confirmed")
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY) if durable else -1
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fchmod(fh.fileno(), mode)
                if durable:
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if durable:
            try:
                os.fsync(dir_fd)
            except OSError as exc:
                raise ReplacedUnconfirmed(exc) from exc
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)


def _unsafe_reason(directory: str, st: os.stat_result) -> str | None:
    sticky = bool(st.st_mode & stat.S_ISVTX)  # /tmp: others cannot replace our entries
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (0, os.geteuid()):
        return f"it is owned by uid {st.st_uid}, not by root or this user (uid {os.geteuid()})"
    if mode & 0o002 and not sticky:
        return f"it is writable by every user (mode {mode:04o})"
    if mode & 0o020 and not sticky and st.st_gid not in (0, os.getegid()):
        return f"it is writable by group {st.st_gid} (mode {mode:04o})"
    return None


def check_private_dir(directory: str | os.PathLike[str]) -> None:
    """Raise :class:`UnsafePath` unless ``directory`` and every existing ancestor is safe from
    other users: owned by root or this user, and not group/world-writable unless sticky
    (like /tmp). What does not exist yet is skipped (see :func:`make_private_dirs`)."""
    path = os.path.realpath(directory)
    while True:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            why = _unsafe_reason(path, st)
            if why is not None:
                raise UnsafePath(
                    errno.EPERM,
                    f"{path} is not safe for oneiricd's files: {why}, so another user could "
                    "replace the control socket or the operator intent. Fix it (chmod go-w, "
                    "chown, or chmod +t) or choose another directory",
                )
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def make_private_dirs(
    directory: str | os.PathLike[str], mode: int = 0o755, *, respect_umask: bool = True
) -> None:
    """``os.makedirs`` that never creates a directory others may write, whatever the umask:
    every directory it creates gets ``mode`` (minus the umask unless ``respect_umask`` is
    false) minus group/other write. Existing directories are left alone."""
    path = os.path.abspath(directory)
    missing: list[str] = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    umask = os.umask(0o022)
    os.umask(umask)
    for p in reversed(missing):
        try:
            os.mkdir(p, mode)
        except FileExistsError:
            if not os.path.isdir(p):
                raise
            continue
        os.chmod(p, (mode & ~umask if respect_umask else mode) & ~0o022)
