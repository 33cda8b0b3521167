"""What the runtime reports: a key's :class:`ComponentHealth` and its ``explain``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oneiric.runtime.health import ComponentHealth
from oneiric.runtime.registry import Explanation

if TYPE_CHECKING:
    from oneiric.runtime.core import Runtime
    from oneiric.runtime.state import KeyState


def component_health(rt: Runtime, st: KeyState) -> ComponentHealth:
    """The status row of one key (SPEC §5 fields, plus the domain counters in ``extras``)."""
    slot = st.slot
    eff = rt.intent.effective(slot.domain, slot.key)
    cur = slot.current
    want = rt.desired(slot.domain, slot.key)
    parked: str | None = None
    if st.parked is not None:
        parked = st.parked.provider
    elif st.parked_removal:
        parked = "(removed)"
    return ComponentHealth(
        domain=slot.domain,
        key=slot.key,
        provider=cur.provider if cur is not None else None,
        admin=rt.admin_state(st),  # type: ignore[arg-type]
        lifecycle=st.lifecycle,
        in_flight=slot.in_flight,
        parked_provider=parked,
        note=(eff.intent.note or None) if eff.intent is not None else None,
        last_error=st.last_error,
        swaps=st.swaps,
        failed_swaps=st.failed_swaps,
        last_swap_ms=st.last_swap_ms,
        paused_by=eff.scope or None,
        intent_uid=eff.intent.uid if eff.intent is not None else None,
        intent_at=eff.intent.at if eff.intent is not None else None,
        winner=want.provider
        if want is not None and (cur is None or want != cur.candidate)
        else None,
        **st.extras,
    )


def visible(rt: Runtime, st: KeyState) -> bool:
    """False for a key removed from every source with nothing left serving or retiring."""
    slot = st.slot
    return bool(
        slot.current is not None
        or slot.retiring
        or slot.in_flight
        or rt.registry.ranked(slot.domain, slot.key)
    )


def explain(rt: Runtime, st: KeyState) -> Explanation:
    """The ranking of the key's candidates with reasons, and why the active one differs."""
    slot = st.slot
    cur = slot.current
    return rt.registry.explain(
        slot.domain,
        slot.key,
        override=rt.intent.override(slot.domain, slot.key),
        selection=rt.selections.get(slot.domain, {}).get(slot.key),
        active=cur.provider if cur is not None else None,
        parked=st.parked.provider if st.parked is not None else None,
        last_error=st.last_error,
        admin=rt.admin_state(st),
    )
