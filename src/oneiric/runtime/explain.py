"""``oneiric explain``: why each candidate of a key ranks where it does, in words.

Pure functions over a ranked list and its :class:`~oneiric.runtime.candidates.Resolution`;
the runtime hands in its facts (active provider, parked swap, last error, admin state) instead
of being looked up, so this module knows nothing of instances, leases or intent.
"""

from __future__ import annotations

from collections.abc import Callable

from oneiric.runtime.candidates import (
    RULES,
    ExplainEntry,
    Explanation,
    Ranked,
    Resolution,
    best_named,
    lacking,
    outranks,
    requirement,
)
from oneiric.runtime.keys import ComponentKey

__all__ = ["explanation"]

# Admin states in which a swap cannot happen until the operator resumes (SPEC §4).
_HELD = frozenset({"paused", "draining", "drained"})


def explanation(
    ck: ComponentKey,
    ranked: list[Ranked],
    res: Resolution,
    *,
    override: str | None,
    selection: str | None,
    active: str | None,
    parked: str | None,
    last_error: str | None,
    admin: str | None,
    required: tuple[str, ...] = (),
    capability: tuple[str, ...] | None = None,
) -> Explanation:
    """Every candidate of ``ck`` in effective order (the winner first) with why it ranks
    there; ``ranked`` is rule-3 order (best first) and ``res`` its resolution. Candidates
    lacking a ``required`` capability are marked not eligible; with ``capability``, those
    declaring all of it are marked ``matches`` and listed in ``matching``."""
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
            reasons=_reasons(
                r, pos[r.seq], ranked, res, selection=selection, name=name, required=required
            ),
            winner=w is not None and r.seq == w.seq,
            active=r.seq == active_seq,
            capabilities=r.candidate.capabilities,
            eligible=not lacking(r.candidate, required),
            matches=None if capability is None else not lacking(r.candidate, capability),
        )
        for i, r in enumerate(order, 1)
    )
    winner = None if w is None else w.candidate.provider
    return Explanation(
        domain=ck.domain,
        key=ck.key,
        winner=winner,
        via=res.via,
        reason=res.reason,
        active=active,
        override=override,
        selection=selection,
        mismatch=_mismatch(
            str(ck),
            winner=winner,
            active=active,
            parked=parked,
            last_error=last_error,
            admin=admin,
        ),
        warnings=res.warnings,
        candidates=entries,
        requires=required,
        capability=capability,
        matching=None if capability is None else tuple(e.provider for e in entries if e.matches),
        last_error=last_error,
    )


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
    required: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """Why `r` (at `pos` in rule-3 order) sits where it does in the effective order."""
    c = r.candidate
    w = res.winner
    missing = lacking(c, required)
    if missing:
        return (
            f"not eligible: lacks {', '.join(map(repr, missing))} required by "
            f"{requirement(c.domain, c.key, required)}",
        )
    assert w is not None  # r is eligible, so the key has an eligible winner
    chosen = res.via in RULES
    if r.seq == w.seq:
        if not chosen:
            rivals = [x for x in ranked if x.seq != r.seq and not lacking(x.candidate, required)]
            if not rivals:
                return ("only candidate",) if len(ranked) == 1 else ("only eligible candidate",)
            return (_compare(r, rivals[0], name),)
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
            f"shadowed by {name(w)}: the {RULES[res.via]} names {c.provider!r} and picks its "
            f"best-ranked candidate"
        )
    else:
        out.append(f"shadowed by {name(w)} ({res.reason})")
    if res.via == "override" and selection == c.provider and best_named(ranked, c.provider) is r:
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
