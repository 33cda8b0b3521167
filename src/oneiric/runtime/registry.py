"""Candidate registry: who may serve each (domain, key), and who wins (SPEC §3).

Pure and synchronous on purpose: the daemon owns the single instance and calls it from the
event loop, so there is nothing to lock and nothing to await. Config reloads and remote
manifests feed it whole source sets at once (`replace_sources`), which makes a reload one
atomic step and tells the caller exactly which keys need re-resolving. Nothing here touches
instances, files or clocks; `explain` is handed the runtime facts (active provider, parked
swap, last error, admin state) instead of looking them up.

The candidate structs and rule 3 live in :mod:`oneiric.runtime.candidates`, the wording of
``explain`` in :mod:`oneiric.runtime.explain`; both are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from oneiric.runtime.candidates import (
    RULES,
    Candidate,
    ExplainEntry,
    Explanation,
    Ident,
    Ranked,
    Resolution,
    Via,
    best_named,
    identity,
    lacking,
    outranks,
    rank_key,
    requirement,
)
from oneiric.runtime.explain import explanation
from oneiric.runtime.keys import ComponentKey

__all__ = [
    "Candidate",
    "ExplainEntry",
    "Explanation",
    "Ranked",
    "Registry",
    "Resolution",
    "identity",
    "outranks",
    "rank_key",
    "requires_errors",
]

log = logging.getLogger(__name__)


def _ck(ident: Ident) -> ComponentKey:
    return ComponentKey(ident[0], ident[1])


class Registry:
    """All candidates, indexed by (domain, key) for resolution and by source for reloads."""

    def __init__(self) -> None:
        self._seq = 0
        self._by_key: dict[ComponentKey, dict[Ident, Ranked]] = {}
        self._by_source: dict[str, set[Ident]] = {}
        self._count = 0
        #: per source, how many times its candidates changed (a delta is checked against it)
        self._gens: dict[str, int] = {}

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

    def replace_source(self, source: str, candidates: Iterable[Candidate]) -> set[ComponentKey]:
        """`replace_sources({source}, candidates)`: `source` is an exact name, not a prefix."""
        return self.replace_sources({source}, candidates)

    def replace_sources(
        self, sources: Iterable[str], candidates: Iterable[Candidate]
    ) -> set[ComponentKey]:
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
                    f"candidate {ComponentKey(c.domain, c.key)} provider {c.provider!r} has source "
                    f"{c.source!r}, which is not among the sources being replaced"
                )
            ident = identity(c)
            wanted.pop(ident, None)  # a repeat moves to its last position, like a re-register
            wanted[ident] = c
        changed: set[ComponentKey] = set()
        for name in names:
            for ident in sorted(self._by_source.get(name, ())):
                if ident not in wanted:
                    self._drop(ident)
                    changed.add(_ck(ident))
        for ident, c in wanted.items():
            old = self._lookup(ident)
            if old is None or old.candidate != c:
                self._store(ident, c)
                changed.add(_ck(ident))
        log.debug(
            "replaced sources %s: %d candidates, %d keys changed",
            sorted(names),
            len(wanted),
            len(changed),
        )
        return changed

    def generation(self, source: str) -> int:
        """How many times ``source``'s candidates changed (0: never written)."""
        return self._gens.get(source, 0)

    def apply_delta(self, drops: Iterable[Ident], stores: Iterable[Candidate]) -> set[ComponentKey]:
        """Drop ``drops``, then add or replace ``stores`` in order (an identical one is left
        as it is): O(len(drops) + len(stores)). With a delta computed against this registry's
        current content (``oneiric.runtime.delta``), the result and the returned keys are
        :meth:`replace_sources`'s."""
        changed: set[ComponentKey] = set()
        for ident in drops:
            if self._drop(ident):
                changed.add(_ck(ident))
        for c in stores:
            ident = identity(c)
            old = self._lookup(ident)
            if old is None or old.candidate != c:
                self._store(ident, c)
                changed.add(_ck(ident))
        return changed

    def _lookup(self, ident: Ident) -> Ranked | None:
        entries = self._by_key.get(_ck(ident))
        return None if entries is None else entries.get(ident)

    def _store(self, ident: Ident, candidate: Candidate) -> None:
        self._gens[ident[3]] = self._gens.get(ident[3], 0) + 1
        self._seq += 1
        entries = self._by_key.setdefault(_ck(ident), {})
        if ident not in entries:
            self._count += 1
            self._by_source.setdefault(ident[3], set()).add(ident)
        entries[ident] = Ranked(candidate, self._seq)

    def _drop(self, ident: Ident) -> bool:
        entries = self._by_key.get(_ck(ident))
        if entries is None or entries.pop(ident, None) is None:
            return False
        self._gens[ident[3]] = self._gens.get(ident[3], 0) + 1
        if not entries:
            del self._by_key[_ck(ident)]
        idents = self._by_source[ident[3]]
        idents.discard(ident)
        if not idents:
            del self._by_source[ident[3]]
        self._count -= 1
        return True

    # -- queries ----------------------------------------------------------------------------

    def ranked(self, domain: str, key: str) -> list[Ranked]:
        """The key's candidates by rule 3, best first (override/selection are not applied)."""
        entries = self._by_key.get(ComponentKey(domain, key))
        return [] if entries is None else sorted(entries.values(), key=rank_key, reverse=True)

    def keys(self, domain: str | None = None) -> list[ComponentKey]:
        return sorted(ck for ck in self._by_key if domain is None or ck.domain == domain)

    def sources(self) -> set[str]:
        """Every source that currently contributes at least one candidate."""
        return set(self._by_source)

    def from_source(self, source: str) -> list[Ranked]:
        """The candidates registered by one source, by (domain, key, provider)."""
        found = (self._lookup(i) for i in sorted(self._by_source.get(source, ())))
        return [r for r in found if r is not None]

    def get(self, domain: str, key: str, provider: str) -> Ranked | None:
        """The best-ranked candidate named `provider` (it may come from several sources)."""
        entries = self._by_key.get(ComponentKey(domain, key), {})
        named = [r for r in entries.values() if r.candidate.provider == provider]
        return max(named, key=rank_key, default=None)

    def resolve(
        self,
        domain: str,
        key: str,
        *,
        override: str | None = None,
        selection: str | None = None,
        required: tuple[str, ...] = (),
        remote: str | None = None,
    ) -> Resolution:
        """Rules 1-4 of SPEC §3: override, config selection, remote selection, ranking."""
        ck = ComponentKey(domain, key)
        return _resolve(ck, self.ranked(domain, key), override, selection, required, remote)

    def refusal(
        self, domain: str, key: str, provider: str, required: tuple[str, ...]
    ) -> str | None:
        """Why ``provider`` may not serve ``domain``/``key`` under ``required`` (naming the
        missing capabilities), or None when it may. Used to reject an override, a selection
        or a remote manifest up front instead of ignoring it later."""
        best = self.get(domain, key, provider)
        if best is None or not required:
            return None
        missing = lacking(best.candidate, required)
        if not missing:
            return None
        return (
            f"provider {provider!r} of {ComponentKey(domain, key)} lacks capabilit"
            f"{'y' if len(missing) == 1 else 'ies'} {', '.join(map(repr, missing))} required "
            f"by {requirement(domain, key, required)} (it declares "
            f"{list(best.candidate.capabilities)})"
        )

    def explain(
        self,
        domain: str,
        key: str,
        *,
        override: str | None = None,
        selection: str | None = None,
        remote: str | None = None,
        active: str | None = None,
        parked: str | None = None,
        last_error: str | None = None,
        admin: str | None = None,
        required: tuple[str, ...] = (),
        capability: tuple[str, ...] | None = None,
    ) -> Explanation:
        """Every candidate in effective order (the winner first) with why it ranks there."""
        ck = ComponentKey(domain, key)
        ranked = self.ranked(domain, key)
        return explanation(
            ck,
            ranked,
            _resolve(ck, ranked, override, selection, required, remote),
            override=override,
            selection=selection,
            active=active,
            parked=parked,
            last_error=last_error,
            admin=admin,
            required=required,
            capability=capability,
        )


# -- resolution (a pure function over a ranked list) ------------------------------------------


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
    ck: ComponentKey,
    ranked: list[Ranked],
    override: str | None,
    selection: str | None,
    required: tuple[str, ...] = (),
    remote: str | None = None,
) -> Resolution:
    """Rules 1-4 of SPEC §3 over the candidates that declare every ``required`` capability
    (§10): an override or a selection naming an incapable provider falls back, with a
    warning saying which capability it lacks."""
    eligible = [r for r in ranked if not lacking(r.candidate, required)] if required else ranked
    missing: list[tuple[str, str, str]] = []  # (rule, provider, why)
    winner: Ranked | None = None
    via: Via = "none"
    reason = "no candidates"
    for how, wanted, why in (
        ("override", override, "operator override"),
        ("selection", selection, "selected in config"),
        ("remote", remote, "selected by the remote manifest"),
    ):
        if wanted is None:
            continue
        winner = best_named(eligible, wanted)
        if winner is not None:
            via, reason = how, why  # type: ignore[assignment]
            break
        named = best_named(ranked, wanted)
        if named is None:
            missing.append((how, wanted, f"which has no candidate for {ck}"))
        else:
            caps = ", ".join(map(repr, lacking(named.candidate, required)))
            rule = requirement(ck.domain, ck.key, required)
            missing.append((how, wanted, f"which lacks {caps} required by {rule}"))
    if winner is None and eligible:
        winner, via, reason = eligible[0], "ranking", _ranking_reason(eligible)
    if winner is None and ranked:
        rule = requirement(ck.domain, ck.key, required)
        reason = f"no candidate has every capability of {rule}"
    if via == "selection":
        fallback = f"the config selection {selection!r}"
    elif via == "remote":
        fallback = f"the remote manifest selection {remote!r}"
    elif winner is not None:
        fallback = f"the ranking ({winner.candidate.provider!r})"
    elif ranked:
        fallback = "nothing: no candidate has the required capabilities"
    else:
        fallback = "nothing: the key has no candidates"
    warnings = tuple(
        f"{RULES[how]} names provider {wanted!r} {why}; falling back to {fallback}"
        for how, wanted, why in missing
    )
    if winner is None and ranked and not missing:
        warnings = (f"{reason}; nothing serves {ck}",)
    return Resolution(winner=winner, reason=reason, via=via, warnings=warnings)


def requires_errors(
    candidates: Iterable[Candidate],
    selections: Mapping[str, Mapping[str, str]],
    requires: Mapping[str, Mapping[str, tuple[str, ...]]],
) -> list[str]:
    """Why a candidate set may not be applied under ``requires`` (SPEC §10), one line per
    problem: a selection naming a provider that lacks a required capability, or a key whose
    candidates all lack one (nothing could serve it). Checked before a config, plugin scan or
    remote manifest is applied, so it is rejected up front instead of ignored later."""
    by_key: dict[ComponentKey, list[Candidate]] = {}
    for c in candidates:
        by_key.setdefault(ComponentKey(c.domain, c.key), []).append(c)
    errors: list[str] = []
    for domain, keys in sorted(requires.items()):
        for key, required in sorted(keys.items()):
            cands = by_key.get(ComponentKey(domain, key), [])
            if not cands or not required:
                continue
            rule = requirement(domain, key, required)
            provider = selections.get(domain, {}).get(key)
            named = [c for c in cands if c.provider == provider]
            if named and all(lacking(c, required) for c in named):
                missing = ", ".join(map(repr, lacking(named[-1], required)))
                errors.append(
                    f"[selections.{domain}] {key} = {provider!r}: that provider lacks "
                    f"{missing} required by {rule} (source {named[-1].source})"
                )
            if all(lacking(c, required) for c in cands):
                have = ", ".join(
                    f"{c.provider!r} {list(c.capabilities)}"
                    for c in sorted(cands, key=lambda c: c.provider)
                )
                errors.append(f"{domain}/{key}: no candidate satisfies {rule} (candidates: {have})")
    return errors
