"""Big config files, loaded in O(what changed): each file is cut at its ``[[component]]`` lines
into chunks, and each chunk is parsed and validated once and remembered by its bytes, so an
edit of one entry among 20,000 re-parses and re-validates that entry alone.

A file ``P [[component]] C1 [[component]] C2 …`` (the header alone on its line, as written by
people and generators alike) is the preamble ``P`` and the chunks ``[[component]] Ci``. Each is
a TOML document of its own, and the whole file means exactly what its parts mean, merged:

- a cut line inside a multi-line string or array leaves the part before it unterminated, so
  that part fails to parse;
- a chunk starts with its own ``[[component]]`` header, so the tables that follow in it
  (``[component.settings]``) belong to the entry it opened, as in the whole file, and appending
  the chunks' entries in order is TOML's own array-of-tables rule;
- the other top-level tables (``[daemon]``, ``[selections.*]`` …) must each come from one part
  alone and the preamble must not mention ``component``: only then is no definition across
  parts possible to conflict.

Anything else (a part that does not parse or validate, a table in two parts, a duplicate, a
file with CRLF line ends, which has no cut) is not decided here: :func:`file_chunks` returns
None and the loader reads the whole file the reference way, whose result or error is the one
reported. The incremental path only ever produces what the reference path would have.

The chunks of a file are held from one load of that path to the next (the last
:data:`MAX_FILES` paths): a chunk's validated ``ComponentConfig`` is the very object the last
load produced, which lets the layers above tell "unchanged" by identity in O(1). A load
compares its parts with the last load's from both ends (C speed) and looks only at the window
between: when that window holds plain entries, the last load's merged lists are patched
(copies at C speed) instead of being rebuilt from every chunk. At 10,000 keys (20,000
entries, 2 MB) a one-entry edit costs ~10 ms, mostly the split and the copies.
"""

from __future__ import annotations

import threading
from itertools import chain, takewhile
from operator import attrgetter, eq, truth
from typing import Any, cast

import msgspec
import tomli as tomllib

from oneiric.config.schema import ComponentConfig
from oneiric.config.sections import _component
from oneiric.errors import ConfigError

__all__ = ["MAX_FILES", "Chunk", "FileRead", "file_chunks", "forget"]

_HEADER = b"[[component]]\n"
_CUT = b"\n" + _HEADER
#: the files whose chunks are kept (a daemon has a main file and its drop-ins; tests and
#: ``--check`` load many others, once)
MAX_FILES = 64

_EMPTY: tuple[Any, ...] = ()


class Chunk(msgspec.Struct, frozen=True, gc=False):
    """One part of a file, parsed and validated: its ``[[component]]`` entries and the other
    top-level tables it defines, with what the merge needs precomputed (so merging a file of
    20,000 chunks touches no entry). Not tracked by the cyclic GC: pure data, one per entry."""

    comps: tuple[ComponentConfig, ...]
    #: the raw tables other than ``component`` (never mutated: they are shared by loads)
    other: dict[str, Any] | None
    idents: tuple[tuple[str, str, str], ...]
    tasks: tuple[str, ...]
    #: positions of workflow entries with ``nodes`` (checked against every file's tasks)
    flows: tuple[int, ...]
    has_artifact: bool


def _chunk_of(comps: tuple[ComponentConfig, ...], other: dict[str, Any] | None) -> Chunk:
    return Chunk(
        comps=comps,
        other=other,
        idents=tuple((c.domain, c.key, c.provider) for c in comps),
        tasks=tuple(c.key for c in comps if c.domain == "task") or _EMPTY,
        flows=tuple(
            i for i, c in enumerate(comps) if c.domain == "workflow" and "nodes" in c.settings
        )
        or _EMPTY,
        has_artifact=any(c.artifact is not None for c in comps),
    )


class FileRead(msgspec.Struct, frozen=True, gc=False):
    """What the merge takes from one file read in chunks (nothing per entry left to do)."""

    #: the top-level tables other than ``component``, merged in file order
    other: dict[str, Any]
    #: the file's ``[[component]]`` entries, in order
    entries: list[ComponentConfig]
    #: their (domain, key, provider), all distinct (never mutated: shared with the cache)
    idents: frozenset[tuple[str, str, str]]
    tasks: tuple[str, ...]
    #: indices in ``entries`` of the workflow entries with ``nodes``
    flows: tuple[int, ...]
    has_artifact: bool


#: path -> (preamble bytes, its Chunk, the parts, their Chunks, the FileRead) of its last
#: load; replaced whole per load (a reader sees the old entry or the new one, never half)
_Entry = tuple[bytes, Chunk, list[bytes], list[Chunk], FileRead]
_cache: dict[str, _Entry] = {}
_lock = threading.Lock()  # only for the bound on the number of files
#: past this many parts in the changed window, look every part up instead
WINDOW = 2048


def forget() -> None:
    """Drop every remembered chunk (tests; nothing else needs to)."""
    with _lock:
        _cache.clear()


def _remember(file: str, entry: _Entry) -> None:
    with _lock:
        _cache.pop(file, None)
        _cache[file] = entry  # the most recent last
        while len(_cache) > MAX_FILES:
            del _cache[next(iter(_cache))]


def _parse(text: str) -> dict[str, Any] | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None


def _chunk(part: bytes, *, file: str) -> Chunk | None:
    """Parse and validate one ``[[component]]`` part (the bytes after its header line)."""
    doc = _parse((_HEADER + part).decode("utf-8"))
    if doc is None:
        return None
    raw = doc.pop("component", None)
    if not isinstance(raw, list):
        return None
    try:
        comps = tuple(_component(entry, file=file, where="component") for entry in raw)
    except ConfigError:
        return None  # the reference path reports it, with the entry's index in the file
    return _chunk_of(comps, doc or None)


def _preamble(part: bytes) -> Chunk | None:
    doc = _parse(part.decode("utf-8"))
    if doc is None or "component" in doc:
        return None
    return _chunk_of((), doc)


def _span(old: list[bytes], new: list[bytes]) -> tuple[int, int]:
    """How many leading and trailing parts two loads share byte for byte (C speed)."""
    n = min(len(old), len(new))
    head = len(list(takewhile(truth, map(eq, old, new))))
    tail = len(list(takewhile(truth, map(eq, reversed(old), reversed(new)))))
    return head, min(tail, n - head)


def _plain(ch: Chunk) -> bool:
    """One entry, no task, workflow or artifact: patching around it is exact (tables after
    the entry are merged again from every part that has some)."""
    return len(ch.comps) == 1 and not (ch.tasks or ch.flows or ch.has_artifact)


def _other(first: Chunk, chunks: list[Chunk]) -> dict[str, Any] | None:
    """The tables other than ``component``, merged in file order; None when two parts define
    the same table (the whole file decides)."""
    other = dict(first.other or {})
    for ch in filter(attrgetter("other"), chunks):  # C speed: most parts have none
        for name, value in (ch.other or {}).items():
            if name in other:
                return None
            other[name] = value
    return other


def _assemble(first: Chunk, chunks: list[Chunk]) -> FileRead | None:
    """The merge's view of a file from all its chunks (C-speed passes); None when two parts
    define the same table or an entry twice (the whole file decides)."""
    other = _other(first, chunks)
    if other is None:
        return None
    entries = list(chain.from_iterable(map(attrgetter("comps"), chunks)))
    idents = frozenset(chain.from_iterable(map(attrgetter("idents"), chunks)))
    if len(idents) != len(entries):
        return None  # a duplicate: the reference path says which
    flows: list[int] = []
    if any(map(attrgetter("flows"), chunks)):
        n = 0
        for ch in chunks:
            flows += [n + i for i in ch.flows]
            n += len(ch.comps)
    return FileRead(
        other=other,
        entries=entries,
        idents=idents,
        tasks=tuple(chain.from_iterable(map(attrgetter("tasks"), chunks))),
        flows=tuple(flows),
        has_artifact=any(map(attrgetter("has_artifact"), chunks)),
    )


def _patch(
    read: FileRead, start: int, gone: list[Chunk], came: list[Chunk], other: dict[str, Any]
) -> FileRead | None:
    """``read`` with the plain chunks ``gone`` (from entry ``start`` on) replaced by the plain
    chunks ``came``, and the merged tables ``other``: O(window) but copies of the lists (C
    speed)."""
    was = {ch.idents[0] for ch in gone}
    new = [ch.idents[0] for ch in came]
    if len(set(new)) != len(new):
        return None  # a duplicate: the reference path says which
    if was == set(new):
        # the entries were edited in place (the same domain, key and provider each): the set
        # is the last load's (O(changed), not two copies of 20,000 idents)
        merged = read.idents
    else:
        idents = set(read.idents)
        idents.difference_update(was)
        if not idents.isdisjoint(new):
            return None  # a duplicate: the reference path says which
        idents.update(new)
        merged = frozenset(idents)
    entries = read.entries[:start] + [ch.comps[0] for ch in came]
    entries += read.entries[start + len(gone) :]
    return msgspec.structs.replace(read, other=other, entries=entries, idents=merged)


def file_chunks(file: str, data: bytes) -> FileRead | None:
    """One file whose bytes are ``data`` (already known to be valid UTF-8), as the merge
    takes it; None when the file must be read the reference way (see the module docstring).

    Against the last load of the same path, only the window between the parts both share at
    the start and at the end is looked at: an edit of one entry among 20,000 costs that entry
    plus C-speed comparisons and copies."""
    parts = (b"\n" + data).split(_CUT)
    head, rest = parts[0][1:], parts[1:]
    prev = _cache.get(file)
    first = prev[1] if prev is not None and prev[0] == head else _preamble(head)
    if first is None:
        return None
    read: FileRead | None = None
    if prev is None:
        chunks = _chunks(rest, {}, file=file)
    else:
        _, old_first, old_parts, old_chunks, old_read = prev
        a, b = _span(old_parts, rest)
        end_old, end_new = len(old_parts) - b, len(rest) - b
        if end_old - a + end_new - a > WINDOW:
            chunks = _chunks(rest, dict(zip(old_parts, old_chunks, strict=True)), file=file)
        else:
            known = dict(zip(old_parts[a:end_old], old_chunks[a:end_old], strict=True))
            mid = _chunks(rest[a:end_new], known, file=file)
            if mid is None:
                return None
            chunks = old_chunks[:a] + mid + old_chunks[end_old:]
            gone = old_chunks[a:end_old]
            if (
                first is old_first
                and len(old_read.entries) == len(old_chunks)  # one entry per chunk
                and all(map(_plain, gone))
                and all(map(_plain, mid))
                and (not old_read.flows or len(gone) == len(mid))
            ):
                other = (
                    _other(first, chunks)
                    if any(map(attrgetter("other"), chain(gone, mid)))
                    else old_read.other
                )
                if other is None:
                    return None
                read = _patch(old_read, a, gone, mid, other)
                if read is None:
                    return None
    if chunks is None:
        return None
    if read is None:
        read = _assemble(first, chunks)
        if read is None:
            return None
    _remember(file, (head, first, rest, chunks, read))
    return read


def _chunks(parts: list[bytes], known: dict[bytes, Chunk], *, file: str) -> list[Chunk] | None:
    """The Chunk of each part: the one known for its bytes, else parsed now."""
    found: list[Chunk | None] = list(map(known.get, parts))  # C speed: no Python per part
    if None in found:
        for i in [i for i, ch in enumerate(found) if ch is None]:
            found[i] = _chunk(parts[i], file=file)
            if found[i] is None:
                return None
    return cast("list[Chunk]", found)
