"""What the runtime reports about a key: its :class:`ComponentHealth` row and its ``explain``.

Pure functions of a key's state and the facts the facade hands in (its effective intent, its
desired candidate, the registry): nothing here reaches back into the runtime.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from oneiric.runtime.candidates import Candidate, Explanation
from oneiric.runtime.health import Admin, ComponentHealth
from oneiric.runtime.intent_doc import Effective
from oneiric.runtime.keys import KeyState
from oneiric.runtime.registry import Registry

__all__ = ["admin_state", "component_health", "explain", "visible"]


def admin_state(st: KeyState, eff: Effective) -> Admin:
    """The operator's word on the key as status shows it: a drain reads ``drained`` once no
    lease is left in flight."""
    if eff.state == "draining":
        return "drained" if st.slot.in_flight == 0 else "draining"
    return eff.state


def component_health(st: KeyState, *, eff: Effective, desired: Candidate | None) -> ComponentHealth:
    """The status row of one key (SPEC §5 fields, plus the domain counters in ``extras``)."""
    slot = st.slot
    cur = slot.current
    p50, p95, p99 = swap_percentiles(st.swap_ms or ())
    parked: str | None = None
    if st.parked is not None:
        parked = st.parked.provider
    elif st.parked_removal:
        parked = "(removed)"
    return ComponentHealth(
        domain=slot.domain,
        key=slot.key,
        provider=cur.provider if cur is not None else None,
        admin=admin_state(st, eff),
        lifecycle=st.lifecycle,
        in_flight=slot.in_flight,
        parked_provider=parked,
        note=(eff.intent.note or None) if eff.intent is not None else None,
        last_error=st.last_error,
        swaps=st.swaps,
        failed_swaps=st.failed_swaps,
        last_swap_ms=st.last_swap_ms,
        swap_ms_p50=p50,
        swap_ms_p95=p95,
        swap_ms_p99=p99,
        paused_by=eff.scope or None,
        intent_uid=eff.intent.uid if eff.intent is not None else None,
        intent_at=eff.intent.at if eff.intent is not None else None,
        winner=desired.provider
        if desired is not None and (cur is None or desired != cur.candidate)
        else None,
        **st.extras,
    )


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of a sorted list by the nearest-rank method (a value that
    really occurred, no interpolation)."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def swap_percentiles(samples: Iterable[float]) -> tuple[float | None, ...]:
    """p50, p95 and p99 of a key's recent swap durations (Nones before the first swap)."""
    ordered = sorted(samples)
    if not ordered:
        return (None, None, None)
    return tuple(percentile(ordered, q) for q in (0.50, 0.95, 0.99))


def visible(st: KeyState, registry: Registry) -> bool:
    """False for a key removed from every source with nothing left serving or retiring."""
    slot = st.slot
    return bool(
        slot.current is not None
        or slot.retiring
        or slot.in_flight
        or registry.ranked(slot.domain, slot.key)
    )


def explain(
    st: KeyState,
    registry: Registry,
    *,
    eff: Effective,
    override: str | None,
    selection: str | None,
    required: tuple[str, ...] = (),
    capability: tuple[str, ...] | None = None,
    remote: str | None = None,
) -> Explanation:
    """The ranking of the key's candidates with reasons, and why the active one differs."""
    slot = st.slot
    cur = slot.current
    return registry.explain(
        slot.domain,
        slot.key,
        override=override,
        selection=selection,
        remote=remote,
        active=cur.provider if cur is not None else None,
        parked=st.parked.provider if st.parked is not None else None,
        last_error=st.last_error,
        admin=admin_state(st, eff),
        required=required,
        capability=capability,
    )
