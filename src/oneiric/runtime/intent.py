"""Operator intent (pause / drain / swap overrides) and its durable store.

Intent is the operator's word and must survive restarts (SPEC §4): a mutating coroutine returns
only once the new document is on disk (appended to the journal and flushed with fdatasync; see
:mod:`oneiric.runtime.journal` for the checkpoint and recovery). Writes are *group-committed*:
every mutation is applied in memory at once and queued; a caller that finds no write running
persists everything queued so far while the others wait, and when a write ends the caller of
the oldest mutation still queued writes the next batch. So a burst of N concurrent mutations
costs a couple of flushes instead of N (one ``fdatasync`` for all that arrived while the
previous one ran: no batching window, no added wait), and each caller is woken once.

A failed write is rolled back in memory: the callers whose mutations were in the failed batch
all get the error and their mutations stop having any effect, so the in-memory view never
claims something the disk does not hold once the dust settles. Mutations queued while the
failing write ran are kept and committed by their own callers.

The document itself (schema, pure edits, queries) is :mod:`oneiric.runtime.intent_doc`.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec

from oneiric.errors import BadRequest, ConfigError, NoSpace, NotDurable, WrittenUnconfirmed
from oneiric.logging_setup import fields
from oneiric.runtime import intent_doc as doc
from oneiric.runtime.intent_doc import (
    SCHEMA,
    Effective,
    Intent,
    IntentKind,
    IntentState,
    Op,
    OverrideMeta,
    check_scope,
    scope_label,
)
from oneiric.runtime.journal import Journal
from oneiric.runtime.keys import ComponentKey

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

#: errno values that mean "the file system has no room for the write" (quota included).
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def _fields(domain: str | None, key: str | None, op: str, uid: int | None) -> dict[str, object]:
    """Journal fields of an intent change: the key only when it names one component."""
    one = None if domain is None or key is None else ComponentKey(domain, key)
    return fields(key=one, op=op, uid=uid)


class _SerialOnly(msgspec.Struct):
    serial: int = 0


_SERIAL = msgspec.json.Decoder(_SerialOnly)


def journal_append(journal: Journal, data: bytes) -> None:
    """The one durable write of a commit (blocking; a seam for tests that inject failures)."""
    journal.append(data, compact=False)


def journal_compact(journal: Journal, data: bytes) -> None:
    """A compaction that is due, after a commit's callers were told (blocking; a seam)."""
    journal.compact_if_due(data)


@dataclass(eq=False)
class _Pending:
    """A mutation applied in memory and waiting for its batch to reach the disk."""

    op: Op
    done: bool = False
    error: BaseException | None = None
    woken: anyio.Event | None = None  # its caller waits on it while another caller writes


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
        self._journal = Journal(self._path)
        self._serial = 0  # of the newest document written (or tried: a serial is never reused)
        self._clock = clock
        self._durable = IntentState()  # what the disk holds (as far as we know)
        self._state = self._durable  # _durable with every pending mutation applied
        self._pending: list[_Pending] = []  # applied in memory, not yet on disk, in order
        self._version = 0
        self._flushing = False  # a batch is being written (by one of the callers)

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
            data = self._journal.load()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the operator intent file: {exc.strerror or exc}; fix its "
                "permissions or the --state-dir setting and start again",
                file=str(self._path),
            ) from exc
        state = IntentState() if data is None else self._decode(data)
        self._serial = _SERIAL.decode(data).serial if data is not None else 0
        self._durable = self._state = state
        self._pending.clear()
        self._version += 1
        log.info(
            "operator intent loaded from %s: %s",
            self._path,
            doc.summary(state),
        )

    def _decode(self, data: bytes) -> IntentState:
        try:
            state = msgspec.json.decode(data, type=IntentState)
        except RecursionError as exc:  # e.g. a deeply nested unknown field
            raise self._corrupt("JSON nested too deeply") from exc
        except msgspec.DecodeError as exc:
            raise self._corrupt(str(exc)) from exc
        if state.schema > SCHEMA:
            raise ConfigError(
                f"the operator intent file has schema {state.schema}, newer than this oneiric "
                f"understands ({SCHEMA}); run the newer oneiric or move the file aside",
                file=str(self._path),
            )
        return state

    def _corrupt(self, why: str) -> ConfigError:
        return ConfigError(
            f"the operator intent file is corrupt ({why}). It is written atomically, so "
            "this points at disk trouble or a manual edit: inspect it, then repair it or "
            "move it aside (every pause, drain and swap override will be forgotten) and "
            "start again",
            file=str(self._path),
        )

    # --- queries -------------------------------------------------------------------------

    def effective(self, domain: str, key: str) -> Effective:
        """The admin state the key is in, and which scope's intent decided it."""
        return doc.effective(self._state, domain, key)

    def override(self, domain: str, key: str) -> str | None:
        """The operator's provider override for a key, if any."""
        return doc.override_of(self._state, domain, key)

    def override_meta(self, domain: str, key: str) -> OverrideMeta | None:
        return doc.override_meta_of(self._state, domain, key)

    def keys_affected(
        self, domain: str | None, key: str | None, known: Iterable[ComponentKey]
    ) -> list[ComponentKey]:
        """The ``known`` keys inside the scope (``BadRequest`` for a malformed scope)."""
        return doc.keys_in_scope(domain, key, known)

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
        check_scope(domain, key)
        intent = Intent(state=state, uid=uid, pid=pid, at=self._clock(), note=note)
        if log.isEnabledFor(logging.INFO):  # the journal fields cost more than the check
            log.info(
                "intent %s %s (uid=%s pid=%s note=%r)",
                state,
                scope_label(domain, key),
                uid,
                pid,
                note,
                extra=_fields(domain, key, state, uid),
            )
        await self._mutate(doc.set_intent(domain, key, intent))

    async def resume(
        self, domain: str | None, key: str | None, *, uid: int | None, pid: int | None
    ) -> None:
        """Clear intent: everything for ``(None, None)``; the domain and all its keys for
        ``(d, None)``; only that key's own intent for ``(d, k)`` (a domain or global intent
        still applies, and ``effective().scope`` says so)."""
        check_scope(domain, key)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "intent resume %s (uid=%s pid=%s)",
                scope_label(domain, key),
                uid,
                pid,
                extra=_fields(domain, key, "resume", uid),
            )
        await self._mutate(doc.clear_intent(domain, key))

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
        check_scope(domain, key)
        if provider is not None and not provider:
            raise BadRequest("empty provider name; give a provider or clear the override")
        meta = OverrideMeta(uid=uid, pid=pid, at=self._clock(), note=note)
        log.info(
            "override %s -> %s (uid=%s pid=%s note=%r)",
            ComponentKey(domain, key),
            provider if provider is not None else "(cleared)",
            uid,
            pid,
            note,
            extra=_fields(domain, key, "swap", uid),
        )
        await self._mutate(doc.set_override(domain, key, provider, meta))

    # --- group commit ---------------------------------------------------------------------

    async def _mutate(self, op: Op) -> None:
        # Apply in memory synchronously (no await before this), so the order of calls is the
        # order of effects.
        pending = _Pending(op)
        self._state = op(self._state)
        self._pending.append(pending)
        self._version += 1
        # Once applied, a mutation is always resolved (committed or rolled back): a cancelled
        # caller must not leave an undurable change behind in memory. Not a shield around
        # every commit (a cancel scope was ~5 % of a durable request's CPU): the write itself
        # runs in an uncancellable worker-thread call, and a caller cancelled before its
        # mutation was resolved finishes the job shielded, then takes its cancellation.
        try:
            await self._commit(pending)
        except BaseException:
            if not pending.done:
                with anyio.CancelScope(shield=True):
                    try:
                        await self._commit(pending)
                    except Exception:  # resolved (rolled back): the cancellation wins
                        log.debug("a cancelled caller's intent change was not persisted")
            raise

    async def _commit(self, mine: _Pending) -> None:
        # Group commit: whoever finds no write running writes everything queued so far; the
        # others wait, each woken once: when the write that holds its mutation ended (see
        # _wake). Not a lock handed from waiter to waiter (with 64 writers in a batch that was
        # a chain of 64 loop turns before the last reply), nor one event for every waiter
        # (which woke the ones queued during a write for nothing, once per write).
        while not mine.done:
            if self._flushing:
                woken = mine.woken = anyio.Event()
                await woken.wait()
                continue
            self._flushing = True
            batch: list[_Pending] = []
            try:
                batch = await self._write_batch()
            finally:
                self._flushing = False
                self._wake(batch)
                self._elect()
        if mine.error is not None:
            if isinstance(mine.error, OSError) and mine.error.errno in _NO_SPACE:
                raise NoSpace(
                    f"no space left to write the operator intent {self._path} "
                    f"({mine.error.strerror or mine.error}); the change was not applied. Free "
                    "space on that file system (or raise the quota) and retry"
                ) from mine.error
            # A fresh exception per caller (they share the cause) so tracebacks stay separate.
            raise NotDurable(
                f"could not persist operator intent to {self._path}: {mine.error}; the change "
                "was not applied. Check the state directory (space, permissions) and retry"
            ) from mine.error

    def _wake(self, batch: list[_Pending]) -> None:
        """After a write: wake the callers of the mutations it held (now done or failed)."""
        for p in batch:
            if p.woken is not None:
                p.woken.set()

    def _elect(self) -> None:
        """After a write: wake the caller of the oldest mutation still queued, who writes the
        next batch (everything queued by then): one flush for all that arrived while the
        previous one ran."""
        for p in self._pending:
            if p.woken is not None:  # a waiting caller (the one whose write failed is not)
                p.woken.set()
                break

    async def _write_batch(self) -> list[_Pending]:
        """Persist every pending mutation (the caller is the one writer, ``_flushing``);
        return the mutations it wrote (or failed to)."""
        batch = list(self._pending)
        snapshot = self._state
        self._serial += 1
        # the serial travels in the document (recovery keeps the highest) but not in memory,
        # where states compare by content: spliced in as the object's first member
        data = b'{"serial":%d,%s' % (self._serial, msgspec.json.encode(snapshot)[1:])
        try:
            await anyio.to_thread.run_sync(journal_append, self._journal, data)
        except WrittenUnconfirmed as exc:
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
            # The batch is a prefix of the queue (only the writer removes entries); what
            # arrived during the write stays queued and is re-applied on the durable state.
            self._pending = self._pending[len(batch) :]
            state = self._durable
            for p in self._pending:
                state = p.op(state)
            self._state = state
            self._version += 1
            return batch
        for p in batch:
            p.done = True
        self._durable = snapshot
        self._pending = self._pending[len(batch) :]
        if self._journal.compaction_due():
            # A new checkpoint costs flushes of its own: the batch's callers get their replies
            # first; the next batch waits (the journal is rewritten under it).
            self._wake(batch)
            await anyio.to_thread.run_sync(journal_compact, self._journal, data)
        return batch
