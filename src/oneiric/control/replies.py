"""Every reply and streamed event of the control protocol (SPEC §8), as msgspec Structs.

With :mod:`oneiric.control.protocol` (framing, requests, the reply envelopes and error codes)
this is the whole wire contract: the
daemon's handler builds these, the session encodes them, and docs/protocol.md documents them
field by field. Field names and their order are the JSON the clients read (``oneiricctl``
decodes them with the stdlib ``json``, not with these classes), so a field is only ever added,
never renamed or removed. Fields that are absent from some replies use ``msgspec.UNSET``, so
they are left out of the JSON rather than sent as ``null``.

Two results are the runtime's own Structs, named here as replies: the status document (the
same schema as the health file, :class:`~oneiric.runtime.health.HealthSnapshot`) and the
explanation of a key's ranking. A task's result and a workflow's report are the component's
own data, passed through.
"""

from __future__ import annotations

from typing import Any, Literal, NewType, TypeAlias

import msgspec

from oneiric.domains.dead_letters import DeadLetter
from oneiric.runtime.health import DaemonState, HealthSnapshot
from oneiric.runtime.history import HistoryEntry
from oneiric.runtime.registry import ExplainEntry, Explanation

__all__ = [
    "DeadLetter",
    "DeadLettersReply",
    "DrainProgress",
    "DrainReply",
    "EmitReply",
    "EncodedWatchSnapshot",
    "EventsEntry",
    "EventsReply",
    "ExplainEntry",
    "ExplainReply",
    "ListReply",
    "ListedCandidate",
    "MetricsReply",
    "PauseReply",
    "PingReply",
    "ReloadResult",
    "ReplayReply",
    "Result",
    "ResumeReply",
    "RunAccepted",
    "RunsReply",
    "StatusReply",
    "StreamEvent",
    "SwapReply",
    "SyncReply",
    "TaskRunReply",
    "WatchEnded",
    "WatchSnapshot",
    "WorkflowRunInfo",
    "WorkflowRunNode",
    "WorkflowRunReply",
]

# --- results, op by op -----------------------------------------------------------------------


class PingReply(msgspec.Struct, kw_only=True):
    version: str
    pid: int
    uptime_s: float
    state: DaemonState


#: ``status`` (filtered) and ``health``: the status document, the health file's schema.
StatusReply: TypeAlias = HealthSnapshot
#: ``explain``: the ranking of a key's candidates (each an :class:`ExplainEntry`) with reasons.
ExplainReply: TypeAlias = Explanation


class ListedCandidate(msgspec.Struct, kw_only=True):
    domain: str
    key: str
    provider: str
    factory: str
    source: str
    priority: int
    stack_level: int
    winner: bool
    active: bool
    capabilities: list[str] = []


class ListReply(msgspec.Struct, kw_only=True):
    candidates: list[ListedCandidate]


class PauseReply(msgspec.Struct, kw_only=True):
    """``state`` says what the change achieved: ``partly draining`` when a wider drain still
    holds some of the keys (``still_held``: key → "draining by domain")."""

    affected: list[str]
    state: Literal["paused", "partly draining"]
    still_held: dict[str, str]


class ResumeReply(msgspec.Struct, kw_only=True):
    """``partly active`` when a wider pause or drain still holds some of the keys."""

    affected: list[str]
    state: Literal["active", "partly active"]
    still_held: dict[str, str]


class DrainProgress(msgspec.Struct, kw_only=True, tag_field="type", tag="progress"):
    """Event of ``drain``: ``{"type": "progress", "in_flight": {...}, "elapsed_s": …}``."""

    in_flight: dict[str, int]
    elapsed_s: float


class DrainReply(msgspec.Struct, kw_only=True):
    """``in_flight`` is only sent with ``wait=false`` (what was still running when the drain
    was recorded); a waited drain that returns has drained everything."""

    drained: bool
    affected: list[str]
    in_flight: dict[str, int] | msgspec.UnsetType = msgspec.UNSET
    elapsed_s: float


class SwapReply(msgspec.Struct, kw_only=True):
    provider: str | None
    previous: str | None
    parked: bool
    outcome: str
    swap_ms: float
    #: ``swap --clear`` of a key that had no operator override: nothing was changed or written
    nothing_to_clear: bool = False


class ReloadResult(msgspec.Struct, kw_only=True):
    """The result of ``reload`` (and of every config reload, however triggered)."""

    changed: list[str]
    not_live: list[str]
    outcomes: dict[str, str]
    failed: dict[str, str] = {}  # key -> why its swap failed (the previous instance serves)
    warnings: list[str] = []  # valid but suspicious, e.g. a selection expected from remote


class WatchSnapshot(msgspec.Struct, kw_only=True, tag_field="type", tag="snapshot"):
    """Event of ``watch``: the status document after a change."""

    snapshot: HealthSnapshot


class WatchEnded(msgspec.Struct, kw_only=True):
    ended: str


class RunAccepted(msgspec.Struct, kw_only=True):
    """``run`` with ``wait=false``."""

    run_id: str
    accepted: Literal[True] = True


class TaskRunReply(msgspec.Struct, kw_only=True):
    result: Any
    duration_ms: float | None
    run_id: str


#: ``run workflow``: the workflow provider's report (the built-in one's: ``{ok, nodes}``) with
#: ``duration_ms`` and ``run_id`` added. Its shape is the provider's, so it stays a mapping.
WorkflowRunReply: TypeAlias = dict[str, Any]


class EmitReply(msgspec.Struct, kw_only=True):
    """Which event keys took the event (``delivered``), hold it until resumed (``held``) or
    dropped it because their queue is full (``dropped``); with ``wait``, ``delivered`` are the
    handlers that handled it and ``dead`` those where every try failed (SPEC §10)."""

    delivered: list[str]
    held: list[str]
    dropped: list[str]
    dead: list[str] = []


class DeadLettersReply(msgspec.Struct, kw_only=True):
    """``dead_letters`` (``oneiricctl events --dead``): oldest first; ``overflow`` counts the
    entries dropped because the list (bounded by ``limit``) was full."""

    dead: list[DeadLetter]
    limit: int
    overflow: int


class ReplayReply(msgspec.Struct, kw_only=True):
    """``replay``: dead-letter id (as a string) -> ``queued``/``held`` (with ``wait``:
    ``delivered``/``dead``); ``failed``: id -> why it stayed in the list."""

    replayed: dict[str, str]
    failed: dict[str, str]


class WorkflowRunNode(msgspec.Struct, kw_only=True):
    status: str
    attempts: int
    error: str | None


class WorkflowRunInfo(msgspec.Struct, kw_only=True):
    run_id: str
    key: str
    provider: str
    status: str  # running|ok|failed|interrupted
    started_at: float
    updated_at: float
    finished_at: float | None
    resumes: int
    error: str | None
    nodes: dict[str, WorkflowRunNode]


class RunsReply(msgspec.Struct, kw_only=True):
    """``runs``: recent workflow runs, newest first."""

    runs: list[WorkflowRunInfo]


class SyncReply(msgspec.Struct, kw_only=True):
    """What one remote check did (SPEC §9): ``ok`` is false when nothing could be applied
    (``outcome`` rejected or unreachable, ``reason`` and ``error`` say why)."""

    ok: bool
    outcome: Literal["applied", "unchanged", "rejected", "unreachable"]
    status: str  # the remote status after the check: ok|stale|error
    version: int | None  # the applied targets metadata version
    reason: str | None = None
    error: str | None = None
    changed: list[str] = []
    outcomes: dict[str, str] = {}
    failed: dict[str, str] = {}
    restart_needed: bool = False
    restart_reasons: list[str] = []
    next_check_at: float | None = None


class EventsReply(msgspec.Struct, kw_only=True):
    """``events``: the history entries asked for, oldest first; with ``follow``, the reply
    that ends the stream (``ended`` says why)."""

    events: list[HistoryEntry]
    ended: str | None = None


class EventsEntry(msgspec.Struct, kw_only=True, tag_field="type", tag="entry"):
    """Event of ``events --follow``: one new history entry."""

    entry: HistoryEntry


class MetricsReply(msgspec.Struct, kw_only=True):
    """``metrics``: the Prometheus text exposition format (version 0.0.4)."""

    text: str
    content_type: str


#: What an op answers: the ``result`` of a success reply, for every op.
Result = (
    PingReply
    | StatusReply
    | ExplainReply
    | ListReply
    | PauseReply
    | ResumeReply
    | DrainReply
    | SwapReply
    | ReloadResult
    | WatchEnded
    | RunAccepted
    | TaskRunReply
    | WorkflowRunReply
    | EmitReply
    | DeadLettersReply
    | ReplayReply
    | RunsReply
    | SyncReply
    | EventsReply
    | MetricsReply
)

#: A :class:`WatchSnapshot` already encoded: ``watch`` encodes one per runtime version, however
#: many streams follow it (a plain ``msgspec.Raw`` at run time, a distinct type for mypy).
EncodedWatchSnapshot = NewType("EncodedWatchSnapshot", msgspec.Raw)

#: What a streaming op emits before its one reply (``drain``, ``events --follow``, ``watch``).
StreamEvent: TypeAlias = DrainProgress | EventsEntry | WatchSnapshot | EncodedWatchSnapshot
