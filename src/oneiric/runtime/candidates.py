"""Candidates and how they rank (SPEC §3): the structs the registry stores and reports.

Pure data and pure functions: what one registered way to serve a key is (:class:`Candidate`),
its place in the registration order (:class:`Ranked`), rule 3 as a sort key, and the report
structs :mod:`oneiric.runtime.explain` fills. The stateful index is
:class:`oneiric.runtime.registry.Registry`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal

import msgspec

from oneiric.config.schema import ComponentConfig, Retry

Via = Literal["override", "selection", "remote", "ranking", "none"]
Ident = tuple[str, str, str, str]  # (domain, key, provider, source): the replacement identity

#: The rules that pick a candidate by name, as messages call them.
RULES: Final = {
    "override": "operator override",
    "selection": "config selection",
    "remote": "remote manifest selection",
}


class Candidate(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One registered way to serve (domain, key); `source` says where it came from.

    Pure data, never part of a cycle: not tracked by the cyclic GC (``gc=False``), so tens of
    thousands of them do not lengthen its full collections."""

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
    capabilities: tuple[str, ...] = ()  # SPEC §10: what it can do; [requires] checks these
    filters: dict[str, Any] = {}  # event: field equality on the event data
    fanout: str = "broadcast"  # event: "broadcast" | "exclusive"
    retry: Retry | None = None  # event: tries and backoff of a delivery
    # remote manifests: the unpacked wheel directory the factory is imported from (SPEC §9)
    artifact: str | None = None


class Ranked(msgspec.Struct, frozen=True, gc=False):
    """A candidate plus its registration sequence number (unique and monotonic per registry);
    like :class:`Candidate`, not tracked by the cyclic GC."""

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
    capabilities: tuple[str, ...] = ()
    eligible: bool = True  # declares every capability the key requires
    matches: bool | None = None  # has every capability asked for by explain --capability


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
    requires: tuple[str, ...] = ()
    capability: tuple[str, ...] | None = None  # explain --capability: what was asked
    matching: tuple[str, ...] | None = None  # providers with every capability asked for
    last_error: str | None = None  # the key's last failure (a failed or vetoed swap, ...)


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


def best_named(ranked: list[Ranked], provider: str) -> Ranked | None:
    """The best-ranked entry of ``ranked`` (best first) named ``provider``."""
    return next((r for r in ranked if r.candidate.provider == provider), None)


def lacking(candidate: Candidate, required: Iterable[str]) -> list[str]:
    """The required capabilities ``candidate`` does not declare, in the order required."""
    have = candidate.capabilities
    return [cap for cap in required if cap not in have]


def requirement(domain: str, key: str, required: Iterable[str]) -> str:
    """How messages name a key's requirement: ``[requires.adapter] cache = ['persist']``."""
    caps = ", ".join(map(repr, required))
    return f"[requires.{domain}] {key} = [{caps}]"


def candidate_of(c: ComponentConfig, artifact: str | None = None) -> Candidate:
    """The candidate a validated ``[[component]]`` entry (config or remote manifest) registers;
    ``artifact`` is the unpacked wheel directory of a remote component that names one."""
    return Candidate(
        domain=c.domain,
        key=c.key,
        provider=c.provider,
        factory=c.factory,
        priority=c.priority,
        stack_level=c.stack_level,
        settings=dict(c.settings),
        source=c.source,
        every=c.every,
        topics=tuple(c.topics),
        concurrency=c.concurrency,
        queue_size=c.queue_size,
        capabilities=c.capabilities,
        filters=dict(c.filters),
        fanout=c.fanout,
        retry=c.retry,
        artifact=artifact,
    )
