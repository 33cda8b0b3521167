"""One control connection's protocol, sans-IO (after h11's ``Connection``).

A :class:`Session` is fed the bytes a peer sent (:meth:`Session.receive_data`) and is asked
what to do next (:meth:`Session.next_decision`); it never touches a socket, a clock or a task
group, so every rule of SPEC §8 about a request is decided — and unit-tested — here:

- framing and decoding (``too_large``, ``bad_request``, ``unknown_op``: an :class:`Answer`,
  bytes to send, no handler involved);
- authorisation (a mutating op from a reader: an :class:`Answer` with ``permission_denied``
  and its audit record; after :data:`AUDIT_DENIED_PER_CONNECTION` refusals further ones are
  only counted, and :meth:`Session.close` returns the summary);
- inline vs task (:attr:`Dispatch.inline`: quick ops are answered by the connection's reader
  in order; long ones get a task each);
- the audit trail (``accepted`` when a long mutating op is dispatched, then its outcome —
  ``ok``, the error code, or ``cancelled`` — from :meth:`Session.finish`; one that does not
  wait for its end, like ``run --no-wait``, is audited once, ``accepted``);
- "zero or more events, then exactly one reply" per request (:meth:`Session.event`,
  :meth:`Session.result`, :meth:`Session.error`; breaking it is :class:`SessionMisuse`);
- error translation at the boundary: any :class:`OneiricError` becomes its ``code``, message
  and ``detail``; anything else is ``internal`` and logged with its traceback.

The byte pump (:mod:`oneiric.control.connection`) does only I/O: it reads, feeds, acts on each
decision, runs the handler and writes the bytes it is given.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, TypeAlias

import msgspec

from oneiric.control.framing import MAX_LINE, LineFramer, TooLong
from oneiric.control.peers import Peer
from oneiric.control.protocol import (
    MUTATING_OPS,
    EmitRequest,
    Request,
    decode_request,
    encode_error,
    encode_event,
    encode_ok,
)
from oneiric.control.replies import StreamEvent
from oneiric.errors import OneiricError, ProtocolError, SessionMisuse
from oneiric.logging_setup import fields

__all__ = [
    "AUDIT_DENIED_PER_CONNECTION",
    "INLINE_OPS",
    "NEED_DATA",
    "PEER_CLOSED",
    "Answer",
    "AuditRecord",
    "AuditSummary",
    "Decision",
    "Dispatch",
    "Emit",
    "Handler",
    "RequestStats",
    "Session",
    "op_of",
]

log = logging.getLogger(__name__)
audit_log = logging.getLogger("oneiric.audit")

#: Ops answered inline by the connection's reader (no task per request): they return promptly
#: (pause/resume wait only for their durable commit), so pipelined requests keep their order and
#: the common case costs one loop turn. Ops that may wait long (watch, drain, swap, run, reload)
#: get a task each, bounded per connection.
INLINE_OPS: Final = frozenset({"ping", "status", "health", "explain", "list", "pause", "resume"})
#: Refused (permission_denied) requests audited per connection before they are summarised.
AUDIT_DENIED_PER_CONNECTION: Final = 5

Emit: TypeAlias = Callable[[StreamEvent], Awaitable[None]]
"""Sends ``{"id": <request id>, "event": ...}`` on the request's connection: one of the
protocol's streamed events (:data:`~oneiric.control.replies.StreamEvent`)."""


class Handler(Protocol):
    """The daemon's side: answer one decoded, authorised request.

    Return the result (anything msgspec encodes; the daemon's handler returns one of
    :data:`oneiric.control.replies.Result`) or raise :class:`OneiricError` (its ``code``,
    message and ``detail`` become the error reply). Streaming ops call ``emit`` before
    returning.
    """

    async def __call__(self, request: Request, peer: Peer, emit: Emit) -> object: ...


class _Wait(enum.Enum):
    NEED_DATA = "need data"
    PEER_CLOSED = "peer closed"


#: :meth:`Session.next_decision`: every complete line was decided; feed more bytes.
NEED_DATA: Final = _Wait.NEED_DATA
#: :meth:`Session.next_decision`: the peer's end-of-stream was fed and everything before it
#: was decided (a trailing incomplete line is dropped).
PEER_CLOSED: Final = _Wait.PEER_CLOSED


def op_of(req: Request) -> str:
    """The wire name of a request's op (its tag)."""
    return str(type(req).__struct_config__.tag)


def _target(req: Request) -> str:
    if isinstance(req, EmitRequest):
        return req.topic
    domain: str | None = getattr(req, "domain", None)
    key: str | None = getattr(req, "key", None)
    if domain is None:
        return "*"
    return domain if key is None else f"{domain}/{key}"


class AuditRecord(msgspec.Struct, frozen=True):
    """One line of the audit trail: who asked for which mutating op on what, and the outcome
    (``accepted``, ``ok``, an error code, or ``cancelled``)."""

    uid: int
    pid: int
    op: str
    target: str
    note: str | None
    outcome: str

    @classmethod
    def of(cls, peer: Peer, req: Request, outcome: str) -> AuditRecord:
        note = getattr(req, "note", None)
        return cls(peer.uid, peer.pid, op_of(req), _target(req), note, outcome)

    def log(self) -> None:
        """Write it to the ``oneiric.audit`` logger (INFO), with the journal fields op, uid and
        (when it names one component) key: ``journalctl ONEIRIC_KEY=adapter/cache``."""
        if not audit_log.isEnabledFor(logging.INFO):
            return  # nothing would be written: build no fields (a pause's hot path)
        one_key = self.op != "emit" and "/" in self.target
        audit_log.info(
            "audit uid=%d pid=%d op=%s target=%s note=%s outcome=%s",
            self.uid,
            self.pid,
            self.op,
            audit_field(self.target),
            audit_field(self.note, always_quote=True),
            self.outcome,
            extra=fields(key=self.target if one_key else None, op=self.op, uid=self.uid),
        )


_PLAIN_FIELD: Final = re.compile(r"[A-Za-z0-9_.:/*@+-]{1,256}")


def _waits(req: Request) -> bool:
    """Whether ``req``'s reply tells how the operation ended (False for ``run --no-wait``,
    ``drain --no-wait``, and an emit or replay not asked to wait: their reply says only that
    it was accepted)."""
    return bool(getattr(req, "wait", True))


def audit_field(value: str | None, *, always_quote: bool = False) -> str:
    """One audit-line field that a peer chose (target, note): bare when it is a plain name,
    else a JSON string (double quotes; every quote, backslash and control character escaped;
    non-ASCII as ``\\u`` escapes). Either way it can never hold a space outside quotes, a
    newline or a forged ``key=value`` (and the protocol already bounds names and notes)."""
    if value is None:
        return "None"
    if not always_quote and _PLAIN_FIELD.fullmatch(value):
        return value
    return json.dumps(value)


class AuditSummary(msgspec.Struct, frozen=True):
    """Refusals beyond :data:`AUDIT_DENIED_PER_CONNECTION`, counted rather than logged."""

    uid: int
    pid: int
    refused: int

    def log(self) -> None:
        audit_log.info(
            "audit uid=%d pid=%d refused %d more mutating request(s) on this connection",
            self.uid,
            self.pid,
            self.refused,
            extra=fields(uid=self.uid),
        )


class Answer(msgspec.Struct, frozen=True):
    """Send ``data`` now; the handler is not involved (a line that is not a valid request, or
    one the peer may not make). ``audit`` is the record to log, if any."""

    data: bytes
    audit: AuditRecord | None = None


class Dispatch:
    """A decoded, authorised request for the handler.

    ``inline`` ones are run by the connection's reader before it reads on; the others get a
    task each (bounded per connection) and, when mutating, ``accepted`` is their audit record
    to log at dispatch. Pass the dispatch back to :meth:`Session.event`, :meth:`Session.result`
    or :meth:`Session.error`, and always to :meth:`Session.finish`.
    """

    __slots__ = ("accepted", "id", "inline", "op", "outcome", "request")

    def __init__(self, request: Request, *, inline: bool, accepted: AuditRecord | None) -> None:
        self.request = request
        self.id = request.id
        self.op = op_of(request)
        self.inline = inline
        self.accepted = accepted
        #: The reply's outcome once it was built (``ok`` or an error code).
        self.outcome: str | None = None

    def __repr__(self) -> str:
        return f"Dispatch({self.op!r}, id={self.id}, inline={self.inline})"


Decision = Answer | Dispatch | _Wait


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


#: Control requests answered, by (op, outcome): ``ok`` or the error code.
RequestStats: TypeAlias = "Counter[tuple[str, str]]"


class Session:
    """The protocol state of one connection; see the module docstring."""

    def __init__(
        self,
        peer: Peer,
        *,
        admin_group: str | None,
        max_line: int = MAX_LINE,
        stats: RequestStats | None = None,
    ) -> None:
        self.peer = peer
        #: requests counted by (op, outcome) for the metrics; shared by a server's sessions
        self.stats: RequestStats = Counter() if stats is None else stats
        self._admin_group = admin_group
        self._framer = LineFramer(max_line)
        self._frames: deque[bytes | TooLong] = deque()
        self._eof = False
        self._open: set[Dispatch] = set()
        self._denied = 0

    # -- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; ``b""`` means end of stream."""
        if self._eof:
            if data:
                raise SessionMisuse("data fed after the peer's end of stream")
            return
        if not data:
            self._eof = True
            return
        self._frames.extend(self._framer.feed(data))

    def next_decision(self) -> Decision:
        """What to do about the next complete line, or :data:`NEED_DATA` /
        :data:`PEER_CLOSED`. Lines are decided one at a time, so the caller chooses how much
        of a peer's pipelined input becomes work before it serves someone else."""
        if not self._frames:
            return PEER_CLOSED if self._eof else NEED_DATA
        return self._decide(self._frames.popleft())

    @property
    def in_flight(self) -> int:
        """Requests dispatched and not yet finished."""
        return len(self._open)

    # -- policy ------------------------------------------------------------------------------

    def _decide(self, frame: bytes | TooLong) -> Decision:
        if isinstance(frame, TooLong):
            message = f"request line longer than {frame.limit} bytes; it was discarded"
            return Answer(encode_error(None, "too_large", message))
        try:
            req = decode_request(frame)
        except ProtocolError as exc:
            return Answer(encode_error(exc.id, exc.code, exc.message))
        op = op_of(req)
        if op in MUTATING_OPS and self.peer.role != "admin":
            self.stats[op, "permission_denied"] += 1
            return Answer(
                encode_error(req.id, "permission_denied", self._denied_message(op)),
                self._refusal_audit(req),
            )
        inline = op in INLINE_OPS
        # long mutating ops (drain, swap, reload, run) take effect before they finish waiting:
        # the audit trail must not depend on the client waiting for the outcome line. One that
        # does not wait (``--no-wait``) is audited once, when its reply says it was accepted.
        audit_now = not inline and op in MUTATING_OPS and _waits(req)
        accepted = self._audit(req, "accepted") if audit_now else None
        dispatch = Dispatch(req, inline=inline, accepted=accepted)
        self._open.add(dispatch)
        return dispatch

    def _denied_message(self, op: str) -> str:
        who = "only root and the daemon's own user"
        if self._admin_group is not None:
            who = f"only root, the daemon's own user and members of group '{self._admin_group}'"
        return f"{op!r} changes the daemon; {who} may do this"

    def _refusal_audit(self, req: Request) -> AuditRecord | None:
        self._denied += 1
        if self._denied > AUDIT_DENIED_PER_CONNECTION:
            return None  # summarised by close()
        return self._audit(req, "permission_denied")

    def _audit(self, req: Request, outcome: str) -> AuditRecord:
        return AuditRecord.of(self.peer, req, outcome)

    # -- output ------------------------------------------------------------------------------

    def _check_open(self, d: Dispatch, what: str) -> None:
        if d not in self._open:
            raise SessionMisuse(f"{what} for {d!r}, which is not in flight on this session")
        if d.outcome is not None:
            raise SessionMisuse(f"{what} for {d!r} after its final reply")

    def event(self, d: Dispatch, event: object) -> bytes:
        """One streamed item of ``d`` (only before its reply); TypeError if not encodable."""
        self._check_open(d, "an event")
        return encode_event(d.id, event)

    def result(self, d: Dispatch, value: object) -> bytes:
        """The success reply of ``d``; a value msgspec cannot encode becomes ``internal``."""
        self._check_open(d, "a reply")
        try:
            data = encode_ok(d.id, value)
        except Exception as exc:  # TypeError, or whatever a custom type's encoding raised
            return self.error(d, exc)
        d.outcome = "ok"
        return data

    def error(self, d: Dispatch, exc: BaseException) -> bytes:
        """The error reply of ``d`` for what its handler raised (translated here, at the
        boundary: a lone exception in a group counts as itself)."""
        self._check_open(d, "a reply")
        err = _unwrap(exc)
        if isinstance(err, OneiricError):
            code, message, detail = err.code, str(err), err.detail
        else:
            log.error("control request %r (id %d) failed", d.op, d.id, exc_info=exc)
            code, message, detail = "internal", f"internal error: {err!r}", None
        d.outcome = code
        return encode_error(d.id, code, message, detail)

    def finish(self, d: Dispatch) -> AuditRecord | None:
        """``d`` is over (replied, or abandoned: cancelled, peer gone). Returns its audit
        record when it was a mutating op; the outcome is ``cancelled`` if no reply was built."""
        if d not in self._open:
            raise SessionMisuse(f"{d!r} finished twice or never dispatched here")
        self._open.discard(d)
        self.stats[d.op, d.outcome or "cancelled"] += 1
        if d.op not in MUTATING_OPS:
            return None
        outcome = d.outcome or "cancelled"
        if outcome == "ok" and not _waits(d.request):
            outcome = "accepted"  # started, not finished: its end is not the reply's to tell
        return self._audit(d.request, outcome)

    def close(self) -> AuditSummary | None:
        """The connection ends: the summary of refusals not audited one by one, if any."""
        extra = self._denied - AUDIT_DENIED_PER_CONNECTION
        if extra <= 0:
            return None
        self._denied = AUDIT_DENIED_PER_CONNECTION
        return AuditSummary(self.peer.uid, self.peer.pid, extra)
