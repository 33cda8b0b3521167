"""What each key should serve: candidates, config and remote selections and operator overrides
(SPEC §3).

:class:`DesiredState` answers "who wins this key now?" by rule order — the operator's override
(durable intent), then the config's selection, then the applied remote manifest's selection,
then the ranking — and applies a config reload
or a manifest as one step that names the keys whose answer may have changed. It never touches
instances: the reconciler asks it, then makes the key serve the answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from oneiric.runtime.candidates import Candidate, Resolution
from oneiric.runtime.delta import Delta, Snapshot, diff_tables
from oneiric.runtime.intent import IntentStore
from oneiric.runtime.keys import ComponentKey
from oneiric.runtime.registry import Registry

__all__ = ["DesiredState"]


class DesiredState:
    """The registry, the config's selections and the intent store's overrides, resolved."""

    def __init__(self, registry: Registry, intent: IntentStore) -> None:
        self.registry = registry
        self.intent = intent
        self.selections: dict[str, dict[str, str]] = {}  # domain -> key -> provider
        #: [requires.<domain>] key = [...] (SPEC §10): capabilities every provider must have
        self.requires: dict[str, dict[str, tuple[str, ...]]] = {}
        #: the applied remote manifest's selections: below the config's (SPEC §3 rule 3)
        self.remote_selections: dict[str, dict[str, str]] = {}
        #: An operator swap being tried (provider, or None to clear): it decides the key while
        #: its activation runs and becomes durable intent only once it serves, so a crash
        #: mid-swap restarts on the provider that was serving (Runtime.set_override).
        self.trial: dict[tuple[str, str], str | None] = {}

    def override(self, domain: str, key: str) -> str | None:
        """The operator override in force: a swap being tried, else the durable one."""
        if (domain, key) in self.trial:
            return self.trial[(domain, key)]
        return self.intent.override(domain, key)

    def selection(self, domain: str, key: str) -> str | None:
        """The provider the config selects for the key, if any."""
        return self.selections.get(domain, {}).get(key)

    def remote_selection(self, domain: str, key: str) -> str | None:
        """The provider the applied remote manifest selects for the key, if any."""
        return self.remote_selections.get(domain, {}).get(key)

    def required(self, domain: str, key: str) -> tuple[str, ...]:
        """The capabilities the key's ``[requires]`` asks of every provider (may be none)."""
        return self.requires.get(domain, {}).get(key, ())

    def resolve(self, domain: str, key: str) -> Resolution:
        """The winner and why (override, selection or ranking, among the candidates with the
        required capabilities), with warnings for a named provider that has no candidate or
        lacks a required capability."""
        return self.registry.resolve(
            domain,
            key,
            override=self.override(domain, key),
            selection=self.selection(domain, key),
            required=self.required(domain, key),
            remote=self.remote_selection(domain, key),
        )

    def desired(self, ck: ComponentKey) -> Candidate | None:
        """The candidate the key should serve, or None when it has none."""
        res = self.resolve(ck.domain, ck.key)
        return res.winner.candidate if res.winner is not None else None

    def apply(
        self,
        sources: set[str],
        candidates: Iterable[Candidate],
        selections: Mapping[str, Mapping[str, str]] | None = None,
        requires: Mapping[str, Mapping[str, tuple[str, ...]]] | None = None,
        *,
        remote_selections: Mapping[str, Mapping[str, str]] | None = None,
    ) -> set[ComponentKey]:
        """Replace every candidate from ``sources`` (and the config or remote selections and
        the requirements, when given) in one step; return the keys whose desired provider may
        have changed."""
        changed = self.registry.replace_sources(sources, candidates)
        if selections is not None:
            self.selections = _replace(self.selections, selections, changed)
        if remote_selections is not None:
            self.remote_selections = _replace(self.remote_selections, remote_selections, changed)
        if requires is not None:
            new_req = {d: dict(m) for d, m in requires.items()}
            diff_tables(self.requires, new_req, changed)
            self.requires = new_req
        return changed

    def snapshot(self, sources: Iterable[str]) -> Snapshot:
        """What a :class:`Delta` for ``sources`` and the config's tables is computed against."""
        reg = self.registry
        return Snapshot(
            gens={s: reg.generation(s) for s in sources},
            selections=self.selections,
            requires=self.requires,
        )

    def apply_delta(self, delta: Delta) -> set[ComponentKey] | None:
        """:meth:`apply` in O(changed), for a delta computed off the loop: the keys whose
        desired provider may have changed, or None (nothing touched) when the state moved
        since the delta's snapshot; then apply the whole set instead."""
        base = delta.base
        reg = self.registry
        if self.selections is not base.selections or self.requires is not base.requires:
            return None
        if any(reg.generation(s) != base.gens.get(s, 0) for s in delta.sources):
            return None
        changed = reg.apply_delta(delta.drops, delta.stores)
        self.selections = delta.selections
        self.requires = delta.requires
        return changed | delta.changed


def _replace(
    old: Mapping[str, Mapping[str, str]],
    new: Mapping[str, Mapping[str, str]],
    changed: set[ComponentKey],
) -> dict[str, dict[str, str]]:
    """The new selections; adds every key whose selection differs to ``changed``."""
    new_sel = {d: dict(m) for d, m in new.items()}
    diff_tables(old, new_sel, changed)
    return new_sel
