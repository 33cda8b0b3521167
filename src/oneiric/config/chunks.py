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
load produced, which lets the layers above tell "unchanged" by identity in O(1).
"""

from __future__ import annotations

import threading
from typing import Any, cast

import msgspec
import tomli as tomllib

from oneiric.config.schema import ComponentConfig
from oneiric.config.sections import _component
from oneiric.errors import ConfigError

__all__ = ["MAX_FILES", "Chunk", "file_chunks", "forget"]

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


#: path -> (preamble bytes, its Chunk, {part bytes -> Chunk}) of its last load; replaced whole
#: per load (a reader sees the old entry or the new one, never a half-built one)
_Entry = tuple[bytes, Chunk, dict[bytes, Chunk]]
_cache: dict[str, _Entry] = {}
_lock = threading.Lock()  # only for the bound on the number of files


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


def file_chunks(file: str, data: bytes) -> tuple[dict[str, Any], list[Chunk]] | None:
    """``(other tables, chunks)`` of one file whose bytes are ``data`` (already known to be
    valid UTF-8): the top-level tables other than ``component``, merged in file order, and the
    chunks, whose entries in order are the file's ``[[component]]`` entries. None when the file
    must be read the reference way (see the module docstring)."""
    parts = (b"\n" + data).split(_CUT)
    head = parts[0][1:]
    old_head, first, old = _cache.get(file) or (None, None, {})
    if first is None or old_head != head:
        first = _preamble(head)
        if first is None:
            return None
    rest = parts[1:]
    found: list[Chunk | None] = list(map(old.get, rest))  # C speed: no Python per chunk
    if None in found:
        for i in [i for i, ch in enumerate(found) if ch is None]:
            found[i] = _chunk(rest[i], file=file)
            if found[i] is None:
                return None
    chunks = cast("list[Chunk]", found)
    new = dict(zip(rest, chunks, strict=True))
    _remember(file, (head, first, new))
    other = dict(first.other or {})
    for ch in chunks:
        if ch.other is not None:
            for name, value in ch.other.items():
                if name in other:
                    return None  # one table from two parts: the whole file decides
                other[name] = value
    return other, chunks
