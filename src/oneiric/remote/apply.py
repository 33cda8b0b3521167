"""From a verified manifest to the runtime: candidates, artifacts, and the one-step apply.

``plan`` turns a validated :class:`Manifest` into the exact candidate set of the remote sources
(one source per target, ``remote:<target>``), each artifact component pointing at its unpacked
wheel. An artifact that changed under a module Python already imported cannot take effect
safely: that component keeps its previous candidate (the key keeps serving the code it runs)
and the plan says a restart is needed. ``apply_to_runtime`` replaces the remote candidate set
and the remote selections in one registry step and reconciles only the keys that changed;
parking, rollback and failure bookkeeping are the runtime's, exactly as for a config reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from oneiric.errors import RemoteRejected
from oneiric.remote.artifacts import imported_elsewhere
from oneiric.remote.manifest import Manifest, source_of
from oneiric.runtime.candidates import (
    Candidate,
    Ident,
    candidate_of,
    identity,
    lacking,
    requirement,
)
from oneiric.runtime.registry import requires_errors

if TYPE_CHECKING:
    from oneiric.runtime.core import Runtime


class ApplyReport(msgspec.Struct, kw_only=True):
    """What one apply did to the runtime."""

    changed: list[str] = []  # domain/key whose candidates or remote selection changed
    outcomes: dict[str, str] = {}  # domain/key -> swapped|activated|parked|unchanged|failed|...
    failed: dict[str, str] = {}  # domain/key -> why its swap failed (the previous one serves)


@dataclass
class Plan:
    sources: set[str]
    candidates: list[Candidate]
    selections: dict[str, dict[str, str]]
    restart_reasons: list[str] = field(default_factory=list)


def plan(
    manifest: Manifest,
    artifacts: Mapping[str, str],
    artifacts_dir: Path,
    *,
    targets: list[str],
    previous: Mapping[Ident, Candidate],
) -> Plan:
    """The candidate set to register for ``manifest`` (see the module docstring)."""
    out: list[Candidate] = []
    restart: list[str] = []
    for comp in manifest.components:
        where = None
        if comp.artifact is not None:
            where = str(artifacts_dir / artifacts[comp.artifact])
        cand = candidate_of(comp, where)
        old = previous.get(identity(cand))
        if where is not None and (old is None or old.artifact != where):
            module = imported_elsewhere(comp.factory, where)
            if module is not None:
                restart.append(
                    f"{comp.domain}/{comp.key} provider {comp.provider}: artifact "
                    f"{comp.artifact} changed but module {module!r} is already imported; "
                    "restart oneiricd to load it"
                )
                if old is not None:
                    cand = old  # keep serving what runs; never import stale code
        out.append(cand)
    sources = {source_of(t) for t in targets}
    return Plan(sources, out, manifest.selections, restart)


def capability_refusal(
    rt: Runtime, candidates: list[Candidate], selections: dict[str, dict[str, str]]
) -> str | None:
    """Why a remote selection may not stand under ``[requires]``, or None."""
    for domain, table in sorted(selections.items()):
        for key, provider in sorted(table.items()):
            required = rt.required(domain, key)
            if not required:
                continue
            named = [
                c for c in candidates if (c.domain, c.key, c.provider) == (domain, key, provider)
            ]
            local = rt.registry.get(domain, key, provider)
            if local is not None and not local.candidate.source.startswith("remote:"):
                named.append(local.candidate)
            if named and all(lacking(c, required) for c in named):
                missing = ", ".join(map(repr, lacking(named[0], required)))
                return (
                    f"selections.{domain}.{key}: provider {provider!r} lacks {missing} "
                    f"required by {requirement(domain, key, required)}"
                )
    return None


def unservable(rt: Runtime, sources: set[str], candidates: list[Candidate]) -> str | None:
    """A key the host requires capabilities of, whose candidates after the apply would all
    lack one (nothing could serve it), or None."""
    after = [
        r.candidate
        for ck in rt.registry.keys(None)
        for r in rt.registry.ranked(ck.domain, ck.key)
        if r.candidate.source not in sources
    ]
    errors = requires_errors([*after, *candidates], {}, rt.requires_table())
    return "; ".join(errors) or None


async def apply_to_runtime(
    rt: Runtime,
    sources: set[str],
    candidates: list[Candidate],
    selections: dict[str, dict[str, str]],
) -> ApplyReport:
    """Replace the remote candidates and selections in one step; swap only what changed.
    A selection naming a provider that lacks a capability the key's ``[requires]`` demands
    rejects the whole manifest first (SPEC §10): RemoteRejected, nothing applied."""
    refusal = capability_refusal(rt, candidates, selections) or unservable(rt, sources, candidates)
    if refusal is not None:
        raise RemoteRejected("capability", refusal)
    keys = rt.apply_candidates(sources, candidates, remote_selections=selections)
    outcomes = await rt.reconcile_many(keys)
    return ApplyReport(
        changed=sorted(str(ck) for ck in keys),
        outcomes={str(ck): v for ck, v in outcomes.items()},
        failed={
            str(ck): rt.states[ck].last_error or "activation failed"
            for ck, v in outcomes.items()
            if v == "failed"
        },
    )
