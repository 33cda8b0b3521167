"""The operator intent document (SPEC §4): its schema, the pure edits and the queries on it.

Everything here is a pure function of an :class:`IntentState`; durability (group commit,
rollback, the file) is :class:`oneiric.runtime.intent.IntentStore`'s. Keys are named
``domain/key`` in the document, which is what ``str(ComponentKey)`` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, Literal

import msgspec

from oneiric._const import DOMAINS
from oneiric.errors import BadRequest
from oneiric.runtime.keys import ComponentKey

__all__ = [
    "SCHEMA",
    "Effective",
    "Intent",
    "IntentState",
    "Op",
    "OverrideMeta",
    "check_scope",
    "clear_intent",
    "effective",
    "keys_in_scope",
    "override_meta_of",
    "override_of",
    "scope_label",
    "set_intent",
    "set_override",
]

SCHEMA: Final = 1

IntentKind = Literal["paused", "draining"]
EffectiveKind = Literal["active", "paused", "draining"]
ScopeName = Literal["key", "domain", "global", ""]

# How restrictive each state is; the effective state is the maximum over the three scopes.
_RANK: Final[dict[str, int]] = {"active": 0, "paused": 1, "draining": 2}


class Intent(msgspec.Struct, frozen=True, kw_only=True):
    """One operator intent: what, who (peer uid/pid) and when (epoch seconds)."""

    state: IntentKind
    uid: int | None
    pid: int | None
    at: float
    note: str = ""


class OverrideMeta(msgspec.Struct, frozen=True, kw_only=True):
    """Who set an operator provider override, and why."""

    uid: int | None
    pid: int | None
    at: float
    note: str = ""


class Effective(msgspec.Struct, frozen=True):
    """The admin state a key is actually in, and which scope's intent decided it."""

    state: EffectiveKind
    intent: Intent | None
    scope: ScopeName  # "key" | "domain" | "global" | "" (no intent applies)


class IntentState(msgspec.Struct, kw_only=True):
    """The persisted document. Treat instances as immutable: the store replaces, never edits."""

    schema: int = SCHEMA
    everything: Intent | None = None
    domains: dict[str, Intent] = {}
    keys: dict[str, Intent] = {}  # "domain/key" -> Intent
    overrides: dict[str, str] = {}  # "domain/key" -> provider
    override_meta: dict[str, OverrideMeta] = {}  # "domain/key" -> who/when/why


Op = Callable[[IntentState], IntentState]


def effective(s: IntentState, domain: str, key: str) -> Effective:
    """The most restrictive of the global, domain and key intents (draining > paused >
    active). On a tie the narrowest scope wins, so its note and author are shown."""
    best: tuple[ScopeName, Intent] | None = None
    candidates: tuple[tuple[ScopeName, Intent | None], ...] = (
        ("key", s.keys.get(_kk(domain, key))),
        ("domain", s.domains.get(domain)),
        ("global", s.everything),
    )
    for scope, intent in candidates:
        if intent is not None and (best is None or _RANK[intent.state] > _RANK[best[1].state]):
            best = (scope, intent)
    if best is None:
        return Effective("active", None, "")
    return Effective(best[1].state, best[1], best[0])


def override_of(s: IntentState, domain: str, key: str) -> str | None:
    """The operator's provider override for a key, if any."""
    return s.overrides.get(_kk(domain, key))


def override_meta_of(s: IntentState, domain: str, key: str) -> OverrideMeta | None:
    return s.override_meta.get(_kk(domain, key))


def keys_in_scope(
    domain: str | None, key: str | None, known: Iterable[ComponentKey]
) -> list[ComponentKey]:
    """The ``known`` keys that fall inside the scope, in ``known`` order, without repeats.
    A key scope that names an unknown key yields nothing (the intent still applies if the
    key appears later)."""
    check_scope(domain, key)
    out: list[ComponentKey] = []
    seen: set[ComponentKey] = set()
    for ck in known:
        if ck in seen:
            continue
        d, k = ck
        if domain is not None and (d != domain or (key is not None and k != key)):
            continue
        seen.add(ck)
        out.append(ck)
    return out


def summary(s: IntentState) -> str:
    """One line for the log: how much intent the document holds."""
    return (
        f"global={s.everything.state if s.everything else 'active'}, "
        f"{len(s.domains)} domain intent(s), {len(s.keys)} key intent(s), "
        f"{len(s.overrides)} override(s)"
    )


def _kk(domain: str, key: str) -> str:
    """The document's name of a key (``domain/key``, as ``str(ComponentKey(domain, key))``
    without making one: this runs a few times per pause)."""
    return f"{domain}/{key}"


def scope_label(domain: str | None, key: str | None) -> str:
    """Human form of a scope for logs and messages: ``*``, ``adapter/*``, ``adapter/cache``."""
    if domain is None:
        return "*"
    return _kk(domain, "*" if key is None else key)


def check_scope(domain: str | None, key: str | None) -> None:
    if domain is None:
        if key is not None:
            raise BadRequest(f"key {key!r} given without a domain; name the domain too")
        return
    if domain not in DOMAINS:
        raise BadRequest(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    if key is not None and not key:
        raise BadRequest("empty key; name a key or leave it out to address the whole domain")


def set_intent(domain: str | None, key: str | None, intent: Intent) -> Op:
    def op(s: IntentState) -> IntentState:
        if domain is None:
            return msgspec.structs.replace(s, everything=intent)
        if key is None:
            return msgspec.structs.replace(s, domains={**s.domains, domain: intent})
        return msgspec.structs.replace(s, keys={**s.keys, _kk(domain, key): intent})

    return op


def clear_intent(domain: str | None, key: str | None) -> Op:
    def op(s: IntentState) -> IntentState:
        if domain is None:
            return msgspec.structs.replace(s, everything=None, domains={}, keys={})
        if key is None:
            prefix = _kk(domain, "")  # every key of the domain
            return msgspec.structs.replace(
                s,
                domains={d: i for d, i in s.domains.items() if d != domain},
                keys={k: i for k, i in s.keys.items() if not k.startswith(prefix)},
            )
        kk = _kk(domain, key)
        return msgspec.structs.replace(s, keys={k: i for k, i in s.keys.items() if k != kk})

    return op


def set_override(domain: str, key: str, provider: str | None, meta: OverrideMeta) -> Op:
    kk = _kk(domain, key)

    def op(s: IntentState) -> IntentState:
        overrides = {k: p for k, p in s.overrides.items() if k != kk}
        metas = {k: m for k, m in s.override_meta.items() if k != kk}
        if provider is not None:
            overrides[kk] = provider
            metas[kk] = meta
        return msgspec.structs.replace(s, overrides=overrides, override_meta=metas)

    return op
