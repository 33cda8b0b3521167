"""The control protocol (SPEC §8), sans-IO: request Structs and reply envelopes.

Nothing here touches a socket, so the server, tests and any future transport share one
definition of the wire format and it is unit-tested without I/O. Lines come from
:mod:`oneiric.control.framing` (its names are re-exported here: the wire format is one
vocabulary). Requests are a msgspec tagged union (``op`` is the tag) decoded by one
module-level Decoder; the Structs ignore unknown fields so a newer client can talk to an older
daemon. Replies are an envelope (success, error with one of :data:`ERROR_CODES`, or a streamed
event) around an op's result, whose Structs are in :mod:`oneiric.control.replies`; a
connection's rules are in :mod:`oneiric.control.session`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal, get_args

import msgspec

from oneiric._const import MAX_NAME, MAX_TOPIC, NAME_PATTERN, Domain
from oneiric.control.framing import MAX_LINE, Frame, LineFramer, TooLong
from oneiric.errors import ErrorCode, ProtocolError

__all__ = [
    "ERROR_CODES",
    "KNOWN_OPS",
    "MAX_DEPTH",
    "MAX_LINE",
    "MUTATING_OPS",
    "DeadLettersRequest",
    "DrainRequest",
    "EmitRequest",
    "ErrorBody",
    "ErrorCode",
    "ErrorReply",
    "EventMessage",
    "EventsRequest",
    "ExplainRequest",
    "Frame",
    "HealthRequest",
    "LineFramer",
    "ListRequest",
    "MetricsRequest",
    "OkReply",
    "PauseRequest",
    "PingRequest",
    "ReloadRequest",
    "ReplayRequest",
    "Request",
    "ResumeRequest",
    "RunRequest",
    "RunsRequest",
    "StatusRequest",
    "SwapRequest",
    "SyncRequest",
    "TooLong",
    "WatchRequest",
    "decode_request",
    "encode_error",
    "encode_event",
    "encode_ok",
    "nested_too_deeply",
]

#: Deepest nesting of arrays/objects a request may have. The protocol sets it rather than the
#: interpreter's recursion limit, which differs between Python versions (3.11 refuses ~5,000
#: levels, 3.13 decodes 5,000 and refuses 20,000), so every daemon answers the same.
MAX_DEPTH: Final = 64
MAX_NOTE: Final = 1024

#: A component key or provider name: the charset and length config accepts (\Z, not $: a
#: trailing newline must not pass). Validated here, so nothing a peer sends as a name can
#: reach a log line or the intent file unchecked.
_NAME_REGEX: Final = rf"^{NAME_PATTERN}\Z"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME, pattern=_NAME_REGEX)]
_NAME_RULE: Final = f"Expected `str` matching regex {_NAME_REGEX!r}"
_NAME_HUMAN: Final = "a key or provider is letters, digits, '_', '.' or '-'"
#: An event topic, bounded here (its charset is checked by the event domain, which says how).
Topic = Annotated[str, msgspec.Meta(max_length=MAX_TOPIC)]
#: An operator's note: free text, bounded.
Note = Annotated[str, msgspec.Meta(max_length=MAX_NOTE)]

# ---------------------------------------------------------------------------------------------
# Requests


class _Request(msgspec.Struct, tag_field="op", kw_only=True):
    id: int


def _check_key(domain: str | None, key: str | None) -> None:
    if key is not None and domain is None:
        raise ValueError("`key` needs `domain`")


class PingRequest(_Request, tag="ping"):
    pass


class StatusRequest(_Request, tag="status"):
    domain: Domain | None = None
    key: Name | None = None

    def __post_init__(self) -> None:
        _check_key(self.domain, self.key)


class ExplainRequest(_Request, tag="explain"):
    domain: Domain
    key: Name
    capability: list[str] | None = None  # mark candidates declaring all of these


class ListRequest(_Request, tag="list"):
    domain: Domain | None = None
    shadowed: bool = False


class PauseRequest(_Request, tag="pause"):
    domain: Domain | None = None
    key: Name | None = None
    note: Note | None = None

    def __post_init__(self) -> None:
        _check_key(self.domain, self.key)


class ResumeRequest(_Request, tag="resume"):
    domain: Domain | None = None
    key: Name | None = None

    def __post_init__(self) -> None:
        _check_key(self.domain, self.key)


class DrainRequest(_Request, tag="drain"):
    domain: Domain | None = None
    key: Name | None = None
    note: Note | None = None
    timeout: Annotated[float, msgspec.Meta(ge=0)] | None = None
    wait: bool = True

    def __post_init__(self) -> None:
        _check_key(self.domain, self.key)


class SwapRequest(_Request, tag="swap"):
    domain: Domain
    key: Name
    provider: Name | None = None
    clear: bool = False

    def __post_init__(self) -> None:
        if self.clear == (self.provider is not None):
            raise ValueError("swap needs exactly one of `provider` or `clear: true`")


class ReloadRequest(_Request, tag="reload"):
    pass


class WatchRequest(_Request, tag="watch"):
    pass


class RunRequest(_Request, tag="run"):
    domain: Literal["task", "workflow"]
    key: Name
    payload: Any = None
    wait: bool = True
    resume: str | None = None  # workflow only: the run id to resume from its checkpoint

    def __post_init__(self) -> None:
        if self.resume is not None and self.domain != "workflow":
            raise ValueError("`resume` is for workflow runs only")
        if self.resume is not None and self.payload is not None:
            raise ValueError("a resumed run keeps its payload: do not pass `payload`")


class EmitRequest(_Request, tag="emit"):
    topic: Topic
    data: Any = None
    wait: bool = False  # wait until each admitting handler delivered it or dead-lettered it


class DeadLettersRequest(_Request, tag="dead_letters"):
    pass


class ReplayRequest(_Request, tag="replay"):
    ids: list[int] | None = None  # dead-letter ids; None with ``all``
    all: bool = False
    wait: bool = False

    def __post_init__(self) -> None:
        if self.all == (self.ids is not None):
            raise ValueError("replay needs exactly one of `ids` or `all: true`")
        if self.ids is not None and not self.ids:
            raise ValueError("`ids` must name at least one dead letter")


class RunsRequest(_Request, tag="runs"):
    key: Name | None = None  # one workflow key, or all
    limit: Annotated[int, msgspec.Meta(ge=1)] = 20


class SyncRequest(_Request, tag="sync"):
    pass


class HealthRequest(_Request, tag="health"):
    pass


class EventsRequest(_Request, tag="events"):
    """The daemon's recent history (SPEC §11): entries of the last ``since_s`` seconds (all
    kept when None), of one domain or key when given; ``follow`` streams new ones as events."""

    since_s: Annotated[float, msgspec.Meta(ge=0)] | None = None
    domain: Domain | None = None
    key: str | None = None
    follow: bool = False

    def __post_init__(self) -> None:
        _check_key(self.domain, self.key)


class MetricsRequest(_Request, tag="metrics"):
    """The Prometheus exposition text of the daemon's metrics (SPEC §11)."""


Request = (
    PingRequest
    | StatusRequest
    | ExplainRequest
    | ListRequest
    | PauseRequest
    | ResumeRequest
    | DrainRequest
    | SwapRequest
    | ReloadRequest
    | WatchRequest
    | RunRequest
    | EmitRequest
    | SyncRequest
    | HealthRequest
    | DeadLettersRequest
    | ReplayRequest
    | RunsRequest
    | EventsRequest
    | MetricsRequest
)

_REQUEST_TYPES: Final[tuple[type[_Request], ...]] = Request.__args__
KNOWN_OPS: Final[tuple[str, ...]] = tuple(str(t.__struct_config__.tag) for t in _REQUEST_TYPES)
MUTATING_OPS: Final = frozenset(
    {"pause", "resume", "drain", "swap", "reload", "run", "emit", "sync", "replay"}
)


class _Envelope(msgspec.Struct):
    id: Any = None
    op: Any = None


_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
_request_decoder: Final[msgspec.json.Decoder[Request]] = msgspec.json.Decoder(Request)


_STRUCTURE: Final = re.compile(rb'[\[\]{}"\\]')


def nested_too_deeply(line: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether ``line`` opens more than ``limit`` arrays/objects at once (brackets inside JSON
    strings do not count). Cheap for ordinary requests: the exact scan runs only when the line
    holds more than ``limit`` opening brackets in all."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _STRUCTURE.finditer(line):
        at = match.start()
        if at == escaped_at:
            continue
        char = line[at]
        if in_string:
            if char == 0x5C:  # backslash: the next byte is escaped
                escaped_at = at + 1
            elif char == 0x22:
                in_string = False
        elif char == 0x22:
            in_string = True
        elif char in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif char in (0x5D, 0x7D):
            depth -= 1
    return False


def decode_request(line: bytes) -> Request:
    """Decode one request line; raise :class:`ProtocolError` saying what is wrong."""
    if nested_too_deeply(line):
        raise ProtocolError("bad_request", f"request nested too deeply (limit {MAX_DEPTH} levels)")
    try:  # a valid request: one decode (the envelope checks below could not have failed)
        return _request_decoder.decode(line)
    except (msgspec.DecodeError, RecursionError):
        pass  # then find out exactly what is wrong with it, as below
    try:
        env = _envelope_decoder.decode(line)
    except RecursionError:
        raise ProtocolError("bad_request", "request nested too deeply") from None
    except msgspec.DecodeError as exc:
        if isinstance(exc, msgspec.ValidationError):  # valid JSON, but not an object
            raise ProtocolError("bad_request", f"a request must be a JSON object: {exc}") from None
        raise ProtocolError("bad_request", f"invalid JSON: {exc}") from None
    req_id = env.id if type(env.id) is int else None
    if req_id is None:
        raise ProtocolError("bad_request", "field `id` is missing or not an integer")
    if not isinstance(env.op, str):
        raise ProtocolError("bad_request", "field `op` is missing or not a string", req_id)
    if env.op not in KNOWN_OPS:
        raise ProtocolError(
            "unknown_op",
            f"unknown op {env.op!r}; known ops: {', '.join(KNOWN_OPS)}",
            req_id,
        )
    try:
        return _request_decoder.decode(line)
    except RecursionError:
        raise ProtocolError("bad_request", "request nested too deeply", req_id) from None
    except msgspec.ValidationError as exc:
        why = str(exc).replace(_NAME_RULE, _NAME_HUMAN)
        raise ProtocolError("bad_request", f"invalid {env.op!r} request: {why}", req_id) from None


# ---------------------------------------------------------------------------------------------
# Reply envelopes (what each op's ``result`` holds: oneiric.control.replies)

#: The error codes a daemon sends (SPEC §8); ``oneiricctl --json`` adds client-side ones.
ERROR_CODES: Final[tuple[str, ...]] = get_args(ErrorCode)


class OkReply(msgspec.Struct, kw_only=True):
    """``{"id": …, "ok": true, "result": …}``: the final reply of a request that succeeded."""

    id: int | None
    ok: Literal[True] = True
    result: Any


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``{"code": …, "message": …[, "detail": …]}``; ``detail`` only when there is one."""

    code: ErrorCode
    message: str
    detail: Any = None


class ErrorReply(msgspec.Struct, kw_only=True):
    """``{"id": …, "ok": false, "error": {…}}``: the final reply of a request that failed
    (``id`` is null when the line's id could not be read)."""

    id: int | None
    ok: Literal[False] = False
    error: ErrorBody


class EventMessage(msgspec.Struct, kw_only=True):
    """``{"id": …, "event": …}``: one streamed item, before the request's final reply."""

    id: int | None
    event: Any


_encoder: Final = msgspec.json.Encoder()


def encode_ok(id: int | None, result: Any) -> bytes:
    """``{"id":…,"ok":true,"result":…}\\n``; raises TypeError if ``result`` is not encodable."""
    return _encoder.encode(OkReply(id=id, result=result)) + b"\n"


def encode_error(id: int | None, code: ErrorCode, message: str, detail: Any = None) -> bytes:
    """``{"id":…,"ok":false,"error":{"code":…,"message":…[,"detail":…]}}\\n``."""
    body = ErrorBody(code=code, message=message, detail=detail)
    return _encoder.encode(ErrorReply(id=id, error=body)) + b"\n"


def encode_event(id: int | None, event: Any) -> bytes:
    """``{"id":…,"event":…}\\n`` — one streamed item before the final reply."""
    return _encoder.encode(EventMessage(id=id, event=event)) + b"\n"
