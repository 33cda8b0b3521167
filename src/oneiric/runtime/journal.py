"""The intent store's durable log: a checkpoint file plus an append-only journal.

A commit appends one record (the whole document, with its serial and a CRC) to
``<name>.journal`` and ``fdatasync``s it: one device flush. The previous scheme, an atomic
replace of the checkpoint (temp file, fsync, rename, fsync of the directory), cost two flushes
plus a new inode and a directory update per commit; measured on the same disk in one run:
p50 0.68 ms / p99 4.9 ms per commit against 0.18 / 0.31 ms for append + fdatasync. Under 64
concurrent writers that difference is the durable p99 (docs/performance.md).

Recovery reads the checkpoint and every intact journal record and keeps the document with the
highest serial, so the order of operations never matters: a torn tail (a crash mid-append) fails
its CRC and is ignored — it was never acknowledged — and a journal left behind after a
compaction holds only serials the checkpoint already covers. When the journal grows past
:data:`COMPACT_BYTES` the current document is written as the new checkpoint (atomic replace,
durable) and the journal is truncated.

Blocking throughout: the store calls it from a worker thread.
"""

from __future__ import annotations

import logging
import os
import weakref
import zlib
from pathlib import Path
from typing import Final

import msgspec

from oneiric._files import atomic_write
from oneiric.errors import WrittenUnconfirmed

__all__ = ["COMPACT_BYTES", "Journal"]

log = logging.getLogger(__name__)

#: Compact (new checkpoint, empty journal) once the journal is larger than this and than
#: eight records: commits stay appends, recovery reads a bounded file.
COMPACT_BYTES: Final = 256 * 1024


class _Serial(msgspec.Struct):
    serial: int = 0


_PEEK: Final = msgspec.json.Decoder(_Serial)


def _serial(doc: bytes) -> int:
    return _PEEK.decode(doc).serial


def _record(doc: bytes) -> bytes:
    return b"%08x %s\n" % (zlib.crc32(doc), doc)


def _intact(line: bytes) -> bytes | None:
    """The document of one journal line, or None when the line is torn or damaged."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    doc = line[9:]
    try:
        crc = int(line[:8], 16)
    except ValueError:
        return None
    return doc if zlib.crc32(doc) == crc else None


class Journal:
    """Checkpoint ``path`` plus ``path.with_suffix('.journal')``; documents are JSON objects
    carrying an integer ``serial`` that grows with every commit."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.path = checkpoint.with_suffix(".journal")
        self._fd = -1
        self._size = 0
        self._last_record = 0  # bytes of the last record appended
        self._finalizer: weakref.finalize[[int], Journal] | None = None

    # -- recovery --------------------------------------------------------------------------------
    def load(self) -> bytes | None:
        """The newest committed document (checkpoint or journal record), or None when there is
        neither. ``OSError`` when a file cannot be read; a damaged checkpoint is returned as it
        is, for the caller to reject (it is written atomically: damage means disk trouble)."""
        try:
            best: bytes | None = self.checkpoint.read_bytes()
        except FileNotFoundError:
            best = None
        best_serial = -1
        if best is not None:
            try:
                best_serial = _serial(best)
            except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deeply
                return best  # let the caller say it is corrupt
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return best
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        damaged = 0
        for line in complete:
            if not line:  # the end of a torn tail, closed before the next record
                continue
            doc = _intact(line)
            if doc is None:
                damaged += 1
                continue
            try:
                serial = _serial(doc)
            except (msgspec.DecodeError, RecursionError):
                damaged += 1
                continue
            if serial >= best_serial:
                best, best_serial = doc, serial
        if damaged or tail:
            log.warning(
                "%s: ignored %d damaged record(s)%s (a crash mid-write leaves an "
                "unacknowledged tail; anything else points at disk trouble)",
                self.path,
                damaged,
                " and a torn tail" if tail else "",
            )
        return best

    def compact(self, doc: bytes) -> None:
        """Make ``doc`` (the newest document) the checkpoint and empty the journal."""
        atomic_write(self.checkpoint, doc)
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self._size = 0
        elif self.path.exists():
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, 0)
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- commits ---------------------------------------------------------------------------------
    def _open(self) -> int:
        if self._fd < 0:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                self._size = os.fstat(fd).st_size
                os.fchmod(fd, 0o644)  # as the checkpoint: readable, whatever the umask
                if self._size and os.pread(fd, 1, self._size - 1) != b"\n":
                    # a torn tail (crash mid-append): end it, so the next record stays whole
                    os.write(fd, b"\n")
                    self._size += 1
                # the journal's own name must survive a crash before its first record counts
                dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            self._finalizer = weakref.finalize(self, os.close, fd)
        return self._fd

    def append(self, doc: bytes, *, compact: bool = True) -> None:
        """Append ``doc`` and flush it to the device; return once it is durable. On a failed
        write the journal is cut back to where it was (the commit did not happen);
        :class:`WrittenUnconfirmed` when only the flush failed. With ``compact=False`` a
        compaction that is due is left to :meth:`compact_if_due` (the store runs it after
        the commit's replies are out)."""
        fd = self._open()
        rec = _record(doc)
        start = self._size
        try:
            view = memoryview(rec)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            try:
                os.ftruncate(fd, start)  # no torn record in the middle of the journal
            except OSError:
                self.close()  # reopened (and re-measured) by the next commit
            raise
        self._size = start + len(rec)
        self._last_record = len(rec)
        try:
            os.fdatasync(fd)
        except OSError as exc:
            raise WrittenUnconfirmed(exc) from exc
        if compact:
            self.compact_if_due(doc)

    def compaction_due(self) -> bool:
        return self._size > COMPACT_BYTES and self._size > 8 * self._last_record

    def compact_if_due(self, doc: bytes) -> None:
        """Compact with ``doc``, the newest document appended, if the journal has grown past
        :data:`COMPACT_BYTES`; a failure is logged (the commits are durable; it is retried
        after a later one)."""
        if not self.compaction_due():
            return
        try:
            self.compact(doc)
        except OSError as exc:
            log.warning("could not compact %s: %s; will retry", self.path, exc)

    def close(self) -> None:
        if self._fd >= 0:
            self._fd = -1
            if self._finalizer is not None:
                self._finalizer()
