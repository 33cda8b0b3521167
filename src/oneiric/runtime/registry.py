"""Candidate registry: who may serve each (domain, key), and who wins (SPEC §3).

Pure and synchronous on purpose: the daemon owns the single instance and calls it from the
event loop, so there is nothing to lock and nothing to await. Config reloads and remote
manifests feed it whole source sets at once (`replace_sources`), which makes a reload one
atomic step and tells the caller exactly which keys need re-resolving. Nothing here touches
instances, files or clocks; `explain` is handed the runtime facts (active provider, parked
swap, last error, admin state) instead of looking them up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal

import msgspec

log = logging.getLogger(__name__)

Via = Literal["override", "selection", "ranking", "none"]
DomainKey = tuple[str, str]
Ident = tuple[str, str, str, str]  # (domain, key, provider, source): the replacement identity

# Admin states in which a swap cannot happen until the operator resumes (SPEC §4).
_HELD = frozenset({"paused", "draining", "drained"})
_RULE = {"override": "operator override", "selection": "config selection"}


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """One registered way to serve (domain, key); `source` says where it came from."""

    domain: str
    key: str
    provider: str
    factory: str  # "pkg.mod:attr"
    priority: int = 0
    stack_level: int = 0
    settings: dict[str, Any] = {}
    source: str = ""  # file path, "remote:<serial>", "test", ...
    # Per-domain fields carried verbatim; the registry never interprets them.
    every: float | None = None
    topics: tuple[str, ...] = ()
    concurrency: int | None = None
    queue_size: int = 1000


class Ranked(msgspec.Struct, frozen=True):
    """A candidate plus its registration sequence number (unique and monotonic per registry)."""

    candidate: Candidate
    seq: int


class Resolution(msgspec.Struct, frozen=True):
    winner: Ranked | None
    reason: str
    via: Via
    warnings: tuple[str, ...]


class ExplainEntry(msgspec.Struct, frozen=True):
    rank: int
    provider: str
    factory: str
    source: str
    priority: int
    stack_level: int
    seq: int
    reasons: tuple[str, ...]
    winner: bool
    active: bool


class Explanation(msgspec.Struct, frozen=True):
    domain: str
    key: str
    winner: str | None
    via: str
    reason: str
    active: str | None
    override: str | None
    selection: str | None
    mismatch: str | None
    warnings: tuple[str, ...]
    candidates: tuple[ExplainEntry, ...]


def identity(candidate: Candidate) -> Ident:
    """The tuple under which re-registration replaces instead of duplicating."""
    c = candidate
    return (c.domain, c.key, c.provider, c.source)


def rank_key(ranked: Ranked) -> tuple[int, int, int]:
    """Rule 3 as a sort key (bigger wins): stack_level, then priority, then the latest seq.

    Seqs are unique, so this is a strict total order over a registry's entries.
    """
    c = ranked.candidate
    return (c.stack_level, c.priority, ranked.seq)


def outranks(a: Ranked, b: Ranked) -> bool:
    """True when `a` ranks strictly above `b` by rule 3."""
    return rank_key(a) > rank_key(b)


class Registry:
    """All candidates, indexed by (domain, key) for resolution and by source for reloads."""

    def __init__(self) -> None:
        self._seq = 0
        self._by_key: dict[DomainKey, dict[Ident, Ranked]] = {}
        self._by_source: dict[str, set[Ident]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    # -- mutation ---------------------------------------------------------------------------

    def register(self, candidate: Candidate) -> bool:
        """Add or replace; False (and the old seq kept) when identical content is already in."""
        ident = identity(candidate)
        old = self._lookup(ident)
        if old is not None and old.candidate == candidate:
            return False
        self._store(ident, candidate)
        return True

    def unregister(self, domain: str, key: str, provider: str, source: str) -> bool:
        return self._drop((domain, key, provider, source))

    def replace_source(self, source: str, candidates: Iterable[Candidate]) -> set[DomainKey]:
        """`replace_sources({source}, candidates)`: `source` is an exact name, not a prefix."""
        return self.replace_sources({source}, candidates)

    def replace_sources(
        self, sources: Iterable[str], candidates: Iterable[Candidate]
    ) -> set[DomainKey]:
        """Make the candidates whose source is in `sources` exactly `candidates`, in one step.

        Every candidate must carry one of `sources` (ValueError otherwise, before anything is
        touched). Within the batch a repeated identity counts once, the last one winning, as
        if registered in order. Unchanged candidates keep their seq; new and changed ones get
        fresh seqs in batch order. Returns the (domain, key) pairs whose candidate set gained,
        lost or changed a member -- the keys the caller must re-resolve.
        """
        if isinstance(sources, str):
            raise TypeError("sources must be a collection of source names, not a str")
        names = frozenset(sources)
        wanted: dict[Ident, Candidate] = {}
        for c in candidates:
            if c.source not in names:
                raise ValueError(
                    f"candidate {c.domain}/{c.key} provider {c.provider!r} has source "
                    f"{c.source!r}, which is not among the sources being replaced"
                )
            ident = identity(c)
            wanted.pop(ident, None)  # a repeat moves to its last position, like a re-register
            wanted[ident] = c
        changed: set[DomainKey] = set()
        for name in names:
            for ident in sorted(self._by_source.get(name, ())):
                if ident not in wanted:
                    self._drop(ident)
                    changed.add(ident[:2])
        for ident, c in wanted.items():
            old = self._lookup(ident)
            if old is None or old.candidate != c:
                self._store(ident, c)
                changed.add(ident[:2])
        log.debug(
            "replaced sources %s: %d candidates, %d keys changed",
            sorted(names),
            len(wanted),
            len(changed),
        )
        return changed

    def _lookup(self, ident: Ident) -> Ranked | None:
        entries = self._by_key.get(ident[:2])
        return None if entries is None else entries.get(ident)

    def _store(self, ident: Ident, candidate: Candidate) -> None:
        self._seq += 1
        entries = self._by_key.setdefault(ident[:2], {})
        if ident not in entries:
            self._count += 1
            self._by_source.setdefault(ident[3], set()).add(ident)
        entries[ident] = Ranked(candidate, self._seq)

    def _drop(self, ident: Ident) -> bool:
        entries = self._by_key.get(ident[:2])
        if entries is None or entries.pop(ident, None) is None:
            return False
        if not entries:
            del self._by_key[ident[:2]]
        idents = self._by_source[ident[3]]
        idents.discard(ident)
        if not idents:
            del self._by_source[ident[3]]
        self._count -= 1
        return True

    # -- queries ----------------------------------------------------------------------------

    def ranked(self, domain: str, key: str) -> list[Ranked]:
        """The key's candidates by rule 3, best first (override/selection are not applied)."""
        entries = self._by_key.get((domain, key))
        return [] if entries is None else sorted(entries.values(), key=rank_key, reverse=True)

    def keys(self, domain: str | None = None) -> list[DomainKey]:
        return sorted(dk for dk in self._by_key if domain is None or dk[0] == domain)

    def sources(self) -> set[str]:
        """Every source that currently contributes at least one candidate."""
        return set(self._by_source)

    def from_source(self, source: str) -> list[Ranked]:
        """The candidates registered by one source, by (domain, key, provider)."""
        found = (self._lookup(i) for i in sorted(self._by_source.get(source, ())))
        return [r for r in found if r is not None]

    def get(self, domain: str, key: str, provider: str) -> Ranked | None:
        """The best-ranked candidate named `provider` (it may come from several sources)."""
        entries = self._by_key.get((domain, key), {})
        named = [r for r in entries.values() if r.candidate.provider == provider]
        return max(named, key=rank_key, default=None)

    def resolve(
        self, domain: str, key: str, *, override: str | None = None, selection: str | None = None
    ) -> Resolution:
        return _resolve(domain, key, self.ranked(domain, key), override, selection)

    def explain(
        self,
        domain: str,
        key: str,
        *,
        override: str | None = None,
        selection: str | None = None,
        active: str | None = None,
        parked: str | None = None,
        last_error: str | None = None,
        admin: str | None = None,
    ) -> Explanation:
        """Every candidate in effective order (the winner first) with why it ranks there."""
        ranked = self.ranked(domain, key)
        res = _resolve(domain, key, ranked, override, selection)
        w = res.winner
        order = ranked if w is None else [w, *(r for r in ranked if r.seq != w.seq)]
        name = _namer(ranked)
        pos = {r.seq: i for i, r in enumerate(ranked)}
        active_seq = next((r.seq for r in order if r.candidate.provider == active), None)
        entries = tuple(
            ExplainEntry(
                rank=i,
                provider=r.candidate.provider,
                factory=r.candidate.factory,
                source=r.candidate.source,
                priority=r.candidate.priority,
                stack_level=r.candidate.stack_level,
                seq=r.seq,
                reasons=_reasons(r, pos[r.seq], ranked, res, selection=selection, name=name),
                winner=w is not None and r.seq == w.seq,
                active=r.seq == active_seq,
            )
            for i, r in enumerate(order, 1)
        )
        winner = None if w is None else w.candidate.provider
        return Explanation(
            domain=domain,
            key=key,
            winner=winner,
            via=res.via,
            reason=res.reason,
            active=active,
            override=override,
            selection=selection,
            mismatch=_mismatch(
                f"{domain}/{key}",
                winner=winner,
                active=active,
                parked=parked,
                last_error=last_error,
                admin=admin,
            ),
            warnings=res.warnings,
            candidates=entries,
        )


# -- resolution and explanation helpers (pure functions over a ranked list) -----------------


def _best_named(ranked: list[Ranked], provider: str) -> Ranked | None:
    return next((r for r in ranked if r.candidate.provider == provider), None)


def _ranking_reason(ranked: list[Ranked]) -> str:
    if len(ranked) == 1:
        return "only candidate"
    a, b = ranked[0].candidate, ranked[1].candidate
    if a.stack_level != b.stack_level:
        return "highest stack_level"
    if a.priority != b.priority:
        return "highest priority"
    return "latest registration"


def _resolve(
    domain: str, key: str, ranked: list[Ranked], override: str | None, selection: str | None
) -> Resolution:
    missing: list[tuple[str, str]] = []
    winner: Ranked | None = None
    via: Via = "none"
    reason = "no candidates"
    for how, wanted, why in (
        ("override", override, "operator override"),
        ("selection", selection, "selected in config"),
    ):
        if wanted is None:
            continue
        winner = _best_named(ranked, wanted)
        if winner is not None:
            via, reason = ("override" if how == "override" else "selection"), why
            break
        missing.append((how, wanted))
    if winner is None and ranked:
        winner, via, reason = ranked[0], "ranking", _ranking_reason(ranked)
    if via == "selection":
        fallback = f"the config selection {selection!r}"
    elif winner is not None:
        fallback = f"the ranking ({winner.candidate.provider!r})"
    else:
        fallback = "nothing: the key has no candidates"
    warnings = tuple(
        f"{_RULE[how]} names provider {wanted!r} which has no candidate for {domain}/{key}; "
        f"falling back to {fallback}"
        for how, wanted in missing
    )
    return Resolution(winner=winner, reason=reason, via=via, warnings=warnings)


def _namer(ranked: list[Ranked]) -> Callable[[Ranked], str]:
    """Quote a provider, naming its source when the provider has several in this key."""
    seen: set[str] = set()
    dup: set[str] = set()
    for r in ranked:
        p = r.candidate.provider
        (dup if p in seen else seen).add(p)

    def name(r: Ranked) -> str:
        c = r.candidate
        if c.provider in dup:
            return f"{c.provider!r} from {c.source or '<no source>'}"
        return repr(c.provider)

    return name


def _compare(r: Ranked, other: Ranked, name: Callable[[Ranked], str]) -> str:
    """Why `r` sits above or below `other` by rule 3, naming the first field that differs."""
    a, b = r.candidate, other.candidate
    up = outranks(r, other)
    op = ">" if up else "<"
    if a.stack_level != b.stack_level:
        return f"stack_level {a.stack_level} {op} {b.stack_level} of {name(other)}"
    if a.priority != b.priority:
        return (
            f"priority {a.priority} {op} {b.priority} of {name(other)} "
            f"(tie on stack_level {a.stack_level})"
        )
    what = "latest registration" if up else "registered earlier"
    return (
        f"{what}: seq {r.seq} {op} {other.seq} of {name(other)} "
        f"(tie on stack_level {a.stack_level} and priority {a.priority})"
    )


def _reasons(
    r: Ranked,
    pos: int,
    ranked: list[Ranked],
    res: Resolution,
    *,
    selection: str | None,
    name: Callable[[Ranked], str],
) -> tuple[str, ...]:
    """Why `r` (at `pos` in rule-3 order) sits where it does in the effective order."""
    c = r.candidate
    w = res.winner
    assert w is not None  # r exists, so the key has candidates and a winner
    chosen = res.via in _RULE
    if r.seq == w.seq:
        if not chosen:
            return (_compare(r, ranked[1], name),) if len(ranked) > 1 else ("only candidate",)
        out = [res.reason]
        if pos > 0:
            out.append(f"takes precedence over the ranking, which puts {name(ranked[0])} first")
        return tuple(out)
    out = [
        _compare(r, ranked[pos - 1], name)
        if pos > 0
        else f"first by ranking (stack_level {c.stack_level}, priority {c.priority})"
    ]
    if chosen and c.provider == w.candidate.provider:
        out.append(
            f"shadowed by {name(w)}: the {_RULE[res.via]} names {c.provider!r} and picks its "
            f"best-ranked candidate"
        )
    else:
        out.append(f"shadowed by {name(w)} ({res.reason})")
    if res.via == "override" and selection == c.provider and _best_named(ranked, c.provider) is r:
        out.append("selected in config, but the operator override wins")
    return tuple(out)


def _mismatch(
    where: str,
    *,
    winner: str | None,
    active: str | None,
    parked: str | None,
    last_error: str | None,
    admin: str | None,
) -> str | None:
    """One sentence saying why the serving instance is not the winner, or None if it is."""
    if winner == active:
        return None
    if winner is None:
        head = f"{active!r} is still serving but {where} has no candidate any more"
        if last_error:
            return f"{head}; retiring it failed: {last_error}"
        if admin in _HELD:
            return f"{head}; retirement waits for resume: {where} is {admin}"
        return f"{head}: retirement pending"
    serving = "nothing is serving" if active is None else f"{active!r} is still serving"
    if parked is not None:
        text = f"swap to {parked!r} is parked: {where} is {admin or 'held'}"
        if parked != winner:
            text += f"; the winner is now {winner!r}"
        return text
    if last_error:
        return f"last swap to {winner!r} failed: {last_error}; {serving}"
    if admin in _HELD:
        return f"swap to {winner!r} waits for resume: {where} is {admin}; {serving}"
    return f"swap to {winner!r}: activation pending; {serving}"
