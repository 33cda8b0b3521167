"""Operator intent (pause / drain / swap overrides) and its durable store.

Intent is the operator's word and must survive restarts (SPEC §4): a mutating coroutine returns
only once the new document is on disk (atomic replace, fsync of file and directory). Writes are
*group-committed*: every mutation is applied in memory at once and queued; whichever caller gets
the write lock first persists everything queued so far, so a burst of N concurrent mutations
costs a couple of fsyncs instead of N.

A failed write is rolled back in memory: the callers whose mutations were in the failed batch
all get the error and their mutations stop having any effect, so the in-memory view never
claims something the disk does not hold once the dust settles. Mutations queued while the
failing write ran are kept and committed by their own callers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import anyio
import anyio.to_thread
import msgspec

from oneiric._const import DOMAINS
from oneiric._files import ReplacedUnconfirmed, atomic_write
from oneiric.errors import BadRequest, ConfigError, NotDurable

__all__ = [
    "SCHEMA",
    "Effective",
    "Intent",
    "IntentState",
    "IntentStore",
    "OverrideMeta",
    "scope_label",
]

log = logging.getLogger(__name__)

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


_Op = Callable[[IntentState], IntentState]


@dataclass(eq=False)
class _Pending:
    """A mutation applied in memory and waiting for its batch to reach the disk."""

    op: _Op
    done: bool = False
    error: BaseException | None = None


def _kk(domain: str, key: str) -> str:
    return f"{domain}/{key}"


def scope_label(domain: str | None, key: str | None) -> str:
    """Human form of a scope for logs and messages: ``*``, ``adapter/*``, ``adapter/cache``."""
    if domain is None:
        return "*"
    return _kk(domain, "*" if key is None else key)


def _check_scope(domain: str | None, key: str | None) -> None:
    if domain is None:
        if key is not None:
            raise BadRequest(f"key {key!r} given without a domain; name the domain too")
        return
    if domain not in DOMAINS:
        raise BadRequest(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    if key is not None and not key:
        raise BadRequest("empty key; name a key or leave it out to address the whole domain")


def _set_intent(domain: str | None, key: str | None, intent: Intent) -> _Op:
    def op(s: IntentState) -> IntentState:
        if domain is None:
            return msgspec.structs.replace(s, everything=intent)
        if key is None:
            return msgspec.structs.replace(s, domains={**s.domains, domain: intent})
        return msgspec.structs.replace(s, keys={**s.keys, _kk(domain, key): intent})

    return op


def _clear_intent(domain: str | None, key: str | None) -> _Op:
    def op(s: IntentState) -> IntentState:
        if domain is None:
            return msgspec.structs.replace(s, everything=None, domains={}, keys={})
        if key is None:
            prefix = _kk(domain, "")
            return msgspec.structs.replace(
                s,
                domains={d: i for d, i in s.domains.items() if d != domain},
                keys={k: i for k, i in s.keys.items() if not k.startswith(prefix)},
            )
        kk = _kk(domain, key)
        return msgspec.structs.replace(s, keys={k: i for k, i in s.keys.items() if k != kk})

    return op


def _set_override(kk: str, provider: str | None, meta: OverrideMeta) -> _Op:
    def op(s: IntentState) -> IntentState:
        overrides = {k: p for k, p in s.overrides.items() if k != kk}
        metas = {k: m for k, m in s.override_meta.items() if k != kk}
        if provider is not None:
            overrides[kk] = provider
            metas[kk] = meta
        return msgspec.structs.replace(s, overrides=overrides, override_meta=metas)

    return op


class IntentStore:
    """Operator intent for every scope, persisted at ``path`` (``<state_dir>/intent.json``).

    The containing directory must exist (the daemon creates the state dir). Single event loop
    only; the blocking ``load`` is meant for start-up, before anything else touches the store.
    ``clock`` stamps each intent and override with when it was given (wall-clock seconds, as
    operators read them; tests pass a fake one).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._path = Path(path)
        self._clock = clock
        self._durable = IntentState()  # what the disk holds (as far as we know)
        self._state = self._durable  # _durable with every pending mutation applied
        self._pending: list[_Pending] = []  # applied in memory, not yet on disk, in order
        self._version = 0
        self._lock = anyio.Lock()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def state(self) -> IntentState:
        """The current in-memory document (do not mutate it; the store never does)."""
        return self._state

    @property
    def version(self) -> int:
        """Bumps on every in-memory change (mutation, load, or rollback of a failed write)."""
        return self._version

    def load(self) -> None:
        """Read the persisted intent (blocking). A missing file means no intent at all; an
        unreadable one is a hard error, because silently dropping an operator's pause could
        bring a drained key back into service."""
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            state = IntentState()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the operator intent file: {exc.strerror or exc}; fix its "
                "permissions or the --state-dir setting and start again",
                file=str(self._path),
            ) from exc
        else:
            state = self._decode(data)
        self._durable = self._state = state
        self._pending.clear()
        self._version += 1
        log.info(
            "operator intent loaded from %s: %s",
            self._path,
            self._summary(state),
        )

    def _decode(self, data: bytes) -> IntentState:
        try:
            state = msgspec.json.decode(data, type=IntentState)
        except msgspec.DecodeError as exc:
            raise ConfigError(
                f"the operator intent file is corrupt ({exc}). It is written atomically, so "
                "this points at disk trouble or a manual edit: inspect it, then repair it or "
                "move it aside (every pause, drain and swap override will be forgotten) and "
                "start again",
                file=str(self._path),
            ) from exc
        if state.schema > SCHEMA:
            raise ConfigError(
                f"the operator intent file has schema {state.schema}, newer than this oneiric "
                f"understands ({SCHEMA}); run the newer oneiric or move the file aside",
                file=str(self._path),
            )
        return state

    @staticmethod
    def _summary(s: IntentState) -> str:
        return (
            f"global={s.everything.state if s.everything else 'active'}, "
            f"{len(s.domains)} domain intent(s), {len(s.keys)} key intent(s), "
            f"{len(s.overrides)} override(s)"
        )

    # --- queries -------------------------------------------------------------------------

    def effective(self, domain: str, key: str) -> Effective:
        """The most restrictive of the global, domain and key intents (draining > paused >
        active). On a tie the narrowest scope wins, so its note and author are shown."""
        s = self._state
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

    def override(self, domain: str, key: str) -> str | None:
        """The operator's provider override for a key, if any."""
        return self._state.overrides.get(_kk(domain, key))

    def override_meta(self, domain: str, key: str) -> OverrideMeta | None:
        return self._state.override_meta.get(_kk(domain, key))

    def keys_affected(
        self, domain: str | None, key: str | None, known: Iterable[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """The ``known`` keys that fall inside the scope, in ``known`` order, without repeats.
        A key scope that names an unknown key yields nothing (the intent still applies if the
        key appears later)."""
        _check_scope(domain, key)
        out: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for dk in known:
            if dk in seen:
                continue
            d, k = dk
            if domain is not None and (d != domain or (key is not None and k != key)):
                continue
            seen.add(dk)
            out.append(dk)
        return out

    # --- mutations (each returns once durable) -------------------------------------------

    async def pause(
        self,
        domain: str | None,
        key: str | None,
        *,
        uid: int | None,
        pid: int | None,
        note: str = "",
    ) -> None:
        await self._set("paused", domain, key, uid=uid, pid=pid, note=note)

    async def drain(
        self,
        domain: str | None,
        key: str | None,
        *,
        uid: int | None,
        pid: int | None,
        note: str = "",
    ) -> None:
        await self._set("draining", domain, key, uid=uid, pid=pid, note=note)

    async def _set(
        self,
        state: IntentKind,
        domain: str | None,
        key: str | None,
        *,
        uid: int | None,
        pid: int | None,
        note: str,
    ) -> None:
        _check_scope(domain, key)
        intent = Intent(state=state, uid=uid, pid=pid, at=self._clock(), note=note)
        log.info(
            "intent %s %s (uid=%s pid=%s note=%r)", state, scope_label(domain, key), uid, pid, note
        )
        await self._mutate(_set_intent(domain, key, intent))

    async def resume(
        self, domain: str | None, key: str | None, *, uid: int | None, pid: int | None
    ) -> None:
        """Clear intent: everything for ``(None, None)``; the domain and all its keys for
        ``(d, None)``; only that key's own intent for ``(d, k)`` (a domain or global intent
        still applies, and ``effective().scope`` says so)."""
        _check_scope(domain, key)
        log.info("intent resume %s (uid=%s pid=%s)", scope_label(domain, key), uid, pid)
        await self._mutate(_clear_intent(domain, key))

    async def set_override(
        self,
        domain: str,
        key: str,
        provider: str | None,
        *,
        uid: int | None,
        pid: int | None,
        note: str = "",
    ) -> None:
        """Set (or with ``provider=None`` clear) the operator's provider override of a key."""
        _check_scope(domain, key)
        if provider is not None and not provider:
            raise BadRequest("empty provider name; give a provider or clear the override")
        meta = OverrideMeta(uid=uid, pid=pid, at=self._clock(), note=note)
        log.info(
            "override %s -> %s (uid=%s pid=%s note=%r)",
            _kk(domain, key),
            provider if provider is not None else "(cleared)",
            uid,
            pid,
            note,
        )
        await self._mutate(_set_override(_kk(domain, key), provider, meta))

    # --- group commit ---------------------------------------------------------------------

    async def _mutate(self, op: _Op) -> None:
        # Apply in memory synchronously (no await before this), so the order of calls is the
        # order of effects.
        pending = _Pending(op)
        self._state = op(self._state)
        self._pending.append(pending)
        self._version += 1
        # Shielded: once applied, a mutation is always resolved (committed or rolled back);
        # a cancelled caller must not leave an undurable change behind in memory.
        with anyio.CancelScope(shield=True):
            await self._commit(pending)

    async def _commit(self, mine: _Pending) -> None:
        async with self._lock:
            if not mine.done:
                await self._write_batch()
        if mine.error is not None:
            # A fresh exception per caller (they share the cause) so tracebacks stay separate.
            raise NotDurable(
                f"could not persist operator intent to {self._path}: {mine.error}; the change "
                "was not applied. Check the state directory (space, permissions) and retry"
            ) from mine.error

    async def _write_batch(self) -> None:
        """Persist every pending mutation (the caller holds the lock)."""
        batch = list(self._pending)
        snapshot = self._state
        data = msgspec.json.encode(snapshot)
        try:
            await anyio.to_thread.run_sync(atomic_write, self._path, data)
        except ReplacedUnconfirmed as exc:
            # The file already holds the new state: rolling back in memory would make memory
            # and the next start disagree. Keep it, and say durability is unconfirmed.
            log.error(
                "operator intent written to %s, but its durability is unconfirmed: %s",
                self._path,
                exc,
            )
        except Exception as exc:
            log.error(
                "could not persist operator intent to %s (%d change(s) rolled back): %s",
                self._path,
                len(batch),
                exc,
            )
            for p in batch:
                p.done, p.error = True, exc
            # The batch is a prefix of the queue (only the lock holder removes entries); what
            # arrived during the write stays queued and is re-applied on the durable state.
            self._pending = self._pending[len(batch) :]
            state = self._durable
            for p in self._pending:
                state = p.op(state)
            self._state = state
            self._version += 1
            return
        for p in batch:
            p.done = True
        self._durable = snapshot
        self._pending = self._pending[len(batch) :]
