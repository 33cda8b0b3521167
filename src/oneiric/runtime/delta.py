"""A new candidate set as the change it makes, so a reload holds the event loop for what changed
only: the change is worked out in a worker thread and applied on the loop in O(changed).

:meth:`Registry.replace_sources` compares every candidate of the sources it is handed: 20,000
comparisons, tens of milliseconds on the loop, for a config edit that changed one entry.
:func:`plan` instead compares the previous config's entries with the new ones *by identity*
(the loader hands back the very ``ComponentConfig`` of an entry whose bytes did not change,
see ``config/chunks.py``), converts only what is new to candidates, and diffs the selections
and requirements, all off the loop. The result is a :class:`Delta`: the identities to drop,
the candidates to store, the new selection and requirement tables and the keys they change.

A delta is only valid against the state it was computed from. :class:`Snapshot` records that
state (each source's generation in the registry, and the desired state's own selection and
requirement tables) right after an apply; :meth:`DesiredState.apply_delta` refuses a delta
whose snapshot is no longer the truth (anything else touched those sources or tables since),
and the caller then replaces the sources whole, the reference way. Applied to the state it
was computed from, a delta leaves the registry exactly as ``replace_sources`` would have: the
same candidates, the same registration order (fresh seqs in batch order), the same changed
keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import compress, takewhile
from operator import is_, not_, truth

import msgspec

from oneiric.config.schema import ComponentConfig
from oneiric.runtime.candidates import Candidate, Ident, candidate_of, identity
from oneiric.runtime.keys import ComponentKey

__all__ = ["Delta", "Snapshot", "diff_tables", "plan"]

Tables = Mapping[str, Mapping[str, object]]


class Snapshot(msgspec.Struct, frozen=True):
    """What the runtime held for some sources at one moment (taken on the event loop)."""

    #: the registry's generation of each source (a source never written is 0)
    gens: dict[str, int]
    #: the desired state's selection and requirement tables, compared by identity: the
    #: runtime replaces them whole and never edits them in place
    selections: Mapping[str, Mapping[str, str]]
    requires: Mapping[str, Mapping[str, tuple[str, ...]]]


class Delta(msgspec.Struct, frozen=True):
    """A replacement of ``sources`` (and the config's tables) relative to ``base``."""

    base: Snapshot
    sources: frozenset[str]
    drops: list[Ident]
    stores: list[Candidate]
    selections: dict[str, dict[str, str]]
    requires: dict[str, dict[str, tuple[str, ...]]]
    #: the keys whose selection or requirement changed (the candidates' keys come on apply)
    changed: set[ComponentKey]


def _fresh(
    items: Sequence[ComponentConfig], other: Sequence[ComponentConfig]
) -> list[ComponentConfig]:
    """The entries of ``items`` that are not (the very same objects as) entries of ``other``,
    in order, at C speed: no Python code runs per entry."""
    known = set(map(id, other))
    return list(compress(items, map(not_, map(known.__contains__, map(id, items)))))


def _span(old: Sequence[object], new: Sequence[object]) -> tuple[int, int]:
    """How many leading and trailing entries ``old`` and ``new`` share (the very same objects
    at the same place), at C speed: an edit leaves everything but a window in between."""
    n = min(len(old), len(new))
    head = len(list(takewhile(truth, map(is_, old, new))))
    tail = len(list(takewhile(truth, map(is_, reversed(old), reversed(new)))))
    return head, min(tail, n - head)


#: past this many entries in the changed window, find the fresh entries by identity sets
#: (two C-speed passes over everything) rather than walking the window in Python
WINDOW = 2048


def _changes(
    old: Sequence[ComponentConfig], new: Sequence[ComponentConfig]
) -> tuple[list[ComponentConfig], list[ComponentConfig]]:
    """``(gone, fresh)``: entries of ``old`` no longer in ``new`` and entries of ``new`` not
    in ``old``, compared by identity; may include entries present in both (moved, or inside
    the changed window), which :func:`plan` then finds equal and leaves alone."""
    head, tail = _span(old, new)
    gone, fresh = old[head : len(old) - tail], new[head : len(new) - tail]
    if len(gone) + len(fresh) > WINDOW:
        return _fresh(old, new), _fresh(new, old)
    return list(gone), list(fresh)


def _ident(c: ComponentConfig) -> Ident:
    return (c.domain, c.key, c.provider, c.source)


def _wanted(candidates: Iterable[Candidate]) -> dict[Ident, Candidate]:
    """As ``replace_sources`` reads a batch: a repeated identity counts once, at its last place."""
    out: dict[Ident, Candidate] = {}
    for c in candidates:
        ident = identity(c)
        out.pop(ident, None)
        out[ident] = c
    return out


def diff_tables(
    old: Tables, new: Mapping[str, Mapping[str, object]], changed: set[ComponentKey]
) -> None:
    """Add to ``changed`` every (domain, key) whose value differs between two
    ``domain -> key -> value`` tables."""
    for d in set(new) | set(old):
        old_m, new_m = old.get(d, {}), new.get(d, {})
        for k in set(old_m) | set(new_m):
            if old_m.get(k) != new_m.get(k):
                changed.add(ComponentKey(d, k))


def plan(
    base: Snapshot,
    sources: Iterable[str],
    old: Sequence[ComponentConfig],
    new: Sequence[ComponentConfig],
    *,
    old_extra: Sequence[Candidate] = (),
    new_extra: Sequence[Candidate] = (),
    selections: Mapping[str, Mapping[str, str]],
    requires: Mapping[str, Mapping[str, tuple[str, ...]]],
) -> Delta:
    """The change from the candidates of the config entries ``old`` (as applied, with the
    candidates ``old_extra`` of other sources, such as entry-point plugins) to those of ``new``
    (with ``new_extra``), and from the snapshot's tables to ``selections``/``requires``.

    Blocking and pure: run it in a worker thread. Entries present in both as the same object
    cost nothing per entry beyond C-speed set operations."""
    went, came = _changes(old, new)
    gone = {_ident(c): c for c in went}
    drops: list[Ident] = []
    stores: list[Candidate] = []
    kept: set[Ident] = set()
    for c in came:
        ident = _ident(c)
        before = gone.get(ident)
        if before is not None:
            kept.add(ident)
            if before is c or before == c:  # the same, or re-read equal: keeps its seq
                continue
        stores.append(candidate_of(c))
    drops += [ident for ident in gone if ident not in kept]
    if list(old_extra) != list(new_extra):
        was, now = _wanted(old_extra), _wanted(new_extra)
        drops += [ident for ident in was if ident not in now]
        stores += [c for ident, c in now.items() if was.get(ident) != c]
    changed: set[ComponentKey] = set()
    new_sel = {d: dict(m) for d, m in selections.items()}
    diff_tables(base.selections, new_sel, changed)
    new_req = {d: dict(m) for d, m in requires.items()}
    diff_tables(base.requires, new_req, changed)
    return Delta(
        base=base,
        sources=frozenset(sources),
        drops=drops,
        stores=stores,
        selections=new_sel,
        requires=new_req,
        changed=changed,
    )
