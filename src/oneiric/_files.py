"""Durable file replacement: unique temp file in the same directory, fsync, rename, fsync dir."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from oneiric.errors import ReplacedUnconfirmed


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
