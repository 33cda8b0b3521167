"""Newline-delimited framing of the control protocol (SPEC §8), sans-IO and bounded.

A peer's bytes become lines here, before anything is decoded: at most :data:`MAX_LINE` bytes
of one line are ever buffered, whatever the peer sends.
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = ["MAX_LINE", "Frame", "LineFramer", "TooLong"]

MAX_LINE: Final = 64 * 1024


class TooLong(msgspec.Struct, frozen=True):
    """Marks a line longer than ``limit`` bytes; its content was discarded."""

    limit: int


Frame = bytes | TooLong


class LineFramer:
    """Split a byte stream into newline-terminated lines with bounded memory.

    A line longer than ``max_line`` (not counting ``\\r\\n``) yields one :class:`TooLong` and
    the rest of it is dropped up to its newline, so a hostile or broken peer cannot make the
    daemon buffer without limit; framing resumes cleanly on the next line. Blank lines are
    skipped so ``socat`` users may press Enter freely.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self._max = max_line
        self._buf = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete line held so far."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        start, end = 0, len(data)
        while start < end:
            nl = data.find(b"\n", start)
            if self._discarding:
                if nl < 0:
                    break
                self._discarding = False
                start = nl + 1
                continue
            if nl < 0:
                self._buf += data[start:]
                # +1 leaves room for a "\r" whose "\n" has not arrived yet.
                if len(self._buf) > self._max + 1:
                    self._buf.clear()
                    self._discarding = True
                    frames.append(TooLong(self._max))
                break
            if self._buf:
                self._buf += data[start:nl]
                line = bytes(self._buf)
                self._buf.clear()
            else:
                line = data[start:nl]
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self._max:
                frames.append(TooLong(self._max))
            elif line.strip():
                frames.append(line)
        return frames
