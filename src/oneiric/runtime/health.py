"""The health snapshot file (SPEC §5): Structs, atomic writer, reader and staleness judge.

``oneiricctl health`` reads this file without the daemon, so this module stays import-light:
stdlib and msgspec only (never anyio). The daemon writes it on every change and at least every
``heartbeat_s`` seconds; a reader decides from ``pid`` and ``updated_at`` whether the writer is
still alive. Field names are a public contract: add fields freely (with defaults, so old and new
readers and writers interoperate), never rename or remove them; bump ``SCHEMA`` only for an
incompatible change.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final, Literal

import msgspec

__all__ = [
    "SCHEMA",
    "Admin",
    "ComponentHealth",
    "ConfigHealth",
    "DaemonState",
    "DomainSummary",
    "HealthSnapshot",
    "HistoryEntry",
    "HistoryKind",
    "Lifecycle",
    "PluginHealth",
    "RemoteHealth",
    "Staleness",
    "WatcherHealth",
    "decode_snapshot",
    "encode_snapshot",
    "judge",
    "read_health",
    "summarize_domains",
    "tally",
    "write_health",
]

SCHEMA: Final = 1
STALE_HEARTBEATS: Final = 3  # a snapshot older than this many heartbeats is stale

Admin = Literal["active", "paused", "draining", "drained"]
Lifecycle = Literal["inactive", "activating", "ready", "degraded", "failed", "stopping"]
DaemonState = Literal["starting", "running", "reloading", "draining", "stopping", "stopped"]


HistoryKind = Literal[
    "activate", "swap", "rollback", "remove", "intent", "reload", "remote_sync", "restart"
]


class HistoryEntry(msgspec.Struct, kw_only=True, frozen=True):
    """One thing that happened (:mod:`oneiric.runtime.history` keeps them). ``at`` is epoch
    seconds; ``key`` is ``domain/key`` when the entry concerns one; ``detail`` holds the kind's
    own fields (``duration_ms``, ``provider``, ``previous``, ``reason``, ``uid``, ``note``,
    ``trigger`` …)."""

    seq: int
    at: float
    kind: HistoryKind
    message: str
    key: str | None = None
    detail: dict[str, Any] = {}


class ComponentHealth(msgspec.Struct, kw_only=True):
    """One (domain, key): who serves it, the operator's intent and how it is doing."""

    domain: str
    key: str
    provider: str | None = None
    admin: Admin = "active"
    lifecycle: Lifecycle = "inactive"
    in_flight: int = 0
    parked_provider: str | None = None  # a selection change waiting for resume
    note: str | None = None  # the operator's --note of the intent in force
    last_error: str | None = None
    swaps: int = 0
    failed_swaps: int = 0
    last_swap_ms: float | None = None
    # swap durations (ms) over the key's recent successful swaps (up to 256), None before one
    swap_ms_p50: float | None = None
    swap_ms_p95: float | None = None
    swap_ms_p99: float | None = None
    # extras
    paused_by: str | None = None  # "key" | "domain" | "global": where the intent lives
    intent_uid: int | None = None
    intent_at: float | None = None
    winner: str | None = None  # the ranked winner, when it differs from ``provider``
    restarts: int = 0  # service
    backoff_s: float | None = None  # service: delay before the next restart
    runs: int = 0  # task
    skipped_runs: int = 0
    failed_runs: int = 0
    held_events: int = 0  # event
    dropped_events: int = 0
    delivered: int = 0
    failed_deliveries: int = 0  # event: handle() raised (each failed try counts)
    retried_deliveries: int = 0  # event: tries made again after a failure (retry)
    dead_letters: int = 0  # event: events that failed every try (see events --dead)
    run_state: str | None = None  # service: running|stopping|stopped|backoff|exited
    last_run_error: str | None = None  # service crash, failed task/workflow run or delivery
    last_run_at: float | None = None  # task/workflow: when the last run started (epoch s)
    next_run_at: float | None = None  # task: when the next scheduled run is due (epoch s)


class ConfigHealth(msgspec.Struct, kw_only=True):
    path: str
    loaded_at: float | None = None
    last_error: str | None = None  # the last failed reload; the running config is kept
    files: list[str] = []  # main file and drop-ins, in merge order


class RemoteHealth(msgspec.Struct, kw_only=True):
    """The ``remote`` object (SPEC §9); timestamps are epoch seconds."""

    status: str = "disabled"  # disabled|ok|stale|error
    url: str | None = None
    targets: list[str] = []
    version: int | None = None  # the applied targets metadata version
    applied_at: float | None = None
    last_check_at: float | None = None
    last_error: str | None = None  # null after a success
    next_check_at: float | None = None
    artifacts: int = 0
    restart_needed: bool = False
    # beyond the contract
    reason: str | None = None  # class of the last failure: unreachable, unsigned, rollback, ...
    failures: int = 0  # consecutive failed checks (the backoff exponent)
    restart_reasons: list[str] = []
    expires: float | None = None  # earliest expiry of the trusted TUF metadata
    components: int = 0  # remote candidates applied


class PluginHealth(msgspec.Struct, kw_only=True):
    """Entry-point plugins (SPEC §10) found by the last scan (start-up or reload)."""

    loaded: list[str] = []  # "<distribution>:<provider>"
    errors: list[str] = []  # broken plugins, skipped: one line each saying why


class DomainSummary(msgspec.Struct, kw_only=True):
    """Counts over one domain's components (the listed ones), for dashboards and STATUS=."""

    components: int = 0
    ready: int = 0
    degraded: int = 0
    failed: int = 0
    inactive: int = 0  # inactive, activating or stopping
    paused: int = 0  # admin paused
    draining: int = 0  # admin draining or drained
    in_flight: int = 0


class WatcherHealth(msgspec.Struct, kw_only=True):
    """The config watcher: ``state`` is ``watching``, ``off`` (``[daemon] watch = false``),
    ``failed`` (could not arm: changes apply on reload/SIGHUP only) or ``starting``."""

    state: str = "starting"
    backend: str | None = None  # "inotify" or "watchfiles"
    directories: list[str] = []  # watched now
    reloads: int = 0  # reloads started by a file change
    failures: int = 0  # of which the new config did not validate
    skipped: int = 0  # changes held back because a file was empty (a save in progress)
    arms: int = 0  # times the watch was (re-)armed
    last_error: str | None = None  # why arming last failed


def summarize_domains(components: list[ComponentHealth]) -> dict[str, DomainSummary]:
    """Per-domain counts of a component list, in the order domains first appear."""
    out: dict[str, DomainSummary] = {}
    for c in components:
        tally(out, c)
    return out


def tally(out: dict[str, DomainSummary], c: ComponentHealth) -> None:
    """Count one component into per-domain summaries (:func:`summarize_domains`, one row at
    a time: the health writer counts as it gathers, in slices)."""
    d = out.get(c.domain)
    if d is None:
        d = out[c.domain] = DomainSummary()
    d.components += 1
    d.in_flight += c.in_flight
    if c.lifecycle in ("ready", "degraded", "failed"):
        setattr(d, c.lifecycle, getattr(d, c.lifecycle) + 1)
    else:
        d.inactive += 1
    if c.admin == "paused":
        d.paused += 1
    elif c.admin in ("draining", "drained"):
        d.draining += 1


class HealthSnapshot(msgspec.Struct, kw_only=True):
    """The whole file. Timestamps are epoch seconds."""

    schema: int = SCHEMA
    version: str
    pid: int
    state: DaemonState
    started_at: float
    updated_at: float
    heartbeat_s: float  # the writer's heartbeat interval, for staleness
    config: ConfigHealth
    remote: RemoteHealth
    components: list[ComponentHealth] = []
    plugins: PluginHealth = msgspec.field(default_factory=PluginHealth)
    domains: dict[str, DomainSummary] = {}  # per-domain counts of ``components``
    watcher: WatcherHealth | None = None  # None where no watcher runs (tests, early start-up)
    #: ``status DOMAIN KEY`` only: that key's last history entries (``oneiricctl events``);
    #: absent from the health file and from wider status documents
    recent_events: list[HistoryEntry] | None = None


class _SchemaOnly(msgspec.Struct):
    schema: int = SCHEMA


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(HealthSnapshot)
_PEEK: Final = msgspec.json.Decoder(_SchemaOnly)


def encode_snapshot(s: HealthSnapshot) -> bytes:
    return _ENCODER.encode(s)


def decode_snapshot(data: bytes) -> HealthSnapshot:
    """Parse a snapshot. Unknown fields are ignored (newer writers); anything else that does
    not fit raises ``ValueError`` saying what was wrong."""
    try:
        schema = _PEEK.decode(data).schema
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a oneiric health snapshot: {exc}") from exc
    if schema > SCHEMA:
        raise ValueError(
            f"health snapshot schema {schema} is newer than this oneiric understands "
            f"({SCHEMA}); use the oneiricctl that matches the running daemon"
        )
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a oneiric health snapshot: {exc}") from exc


def write_health(path: str | os.PathLike[str], s: HealthSnapshot) -> None:
    """Replace the file atomically (readers never see a torn file). Blocking: the daemon calls
    it off the event loop. World-readable: status is not a secret, and readers need no socket
    access."""
    from oneiric._files import atomic_write  # lazy: readers (oneiricctl) need no tempfile

    atomic_write(path, encode_snapshot(s), mode=0o644, durable=False)


def read_health(path: str | os.PathLike[str]) -> HealthSnapshot:
    """Read and parse the file; ``FileNotFoundError`` passes through (daemon never ran or the
    runtime dir is gone), a bad file raises ``ValueError`` naming it."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return decode_snapshot(data)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from exc


class Staleness(msgspec.Struct, frozen=True):
    stale: bool
    reason: str | None
    dead: bool = False  # the writer's pid is gone: the daemon is not running (exit 3)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # 0 and negatives address process groups, never one daemon
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, it just is not ours
        return True
    return True


def judge(s: HealthSnapshot, *, now: float | None = None) -> Staleness:
    """Is the writer of this snapshot still behind it? A clean ``stopped`` file is not stale
    (it is the final word of a daemon that exited properly; the reason says ``stopped``). Any
    other state is stale when its pid is gone (the daemon crashed) or when it is older than
    three heartbeats (the daemon hangs, or the pid was reused)."""
    if s.state == "stopped":
        return Staleness(stale=False, reason="stopped")
    if not _pid_alive(s.pid):
        return Staleness(
            stale=True, reason=f"pid {s.pid} is not running (the daemon died)", dead=True
        )
    now = time.time() if now is None else now
    age = now - s.updated_at
    limit = STALE_HEARTBEATS * s.heartbeat_s
    if s.heartbeat_s > 0 and age > limit:
        return Staleness(
            stale=True,
            reason=(
                f"last updated {age:.1f}s ago, more than {STALE_HEARTBEATS} heartbeats "
                f"({limit:g}s); the daemon (pid {s.pid}) is not responding"
            ),
        )
    return Staleness(stale=False, reason=None)
