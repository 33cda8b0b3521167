"""Durable workflow runs: checkpoints in the state dir, resume, the list of recent runs (§10).

Every workflow run gets a run id that is unique across restarts (``<key>-<UTC stamp>-<hex>``)
and a record, ``STATE/workflows/<run id>.json``: the run's key, provider, payload, status and
the state of each node. The record is written when the run starts, after **each node ends**
(that is the checkpoint) and when the run ends; every write is atomic and fsync'd (temp file,
fsync, rename, directory fsync), so a crash leaves the previous or the next checkpoint, never
a torn one.

Statuses: ``running``; ``ok``/``failed`` when it ended; ``interrupted`` when the daemon stopped
under it, or — found ``running`` at start-up — when it was killed. ``oneiricctl run workflow
KEY --resume RUN_ID`` continues an ``interrupted`` or ``failed`` run under the same run id with
the same payload: nodes that ended ``ok`` keep their result and are not run again; the others
(failed, skipped, cancelled, or running when the daemon died: at-least-once) run again.

Finished runs (``ok``/``failed``) are pruned: the newest ``[daemon] workflow_history`` of them
are kept for ``oneiricctl runs``; older records are deleted. Interrupted runs are kept until
resumed: they are work an operator still owns.

The workflow provider reaches its run through :func:`current_run` (a context variable set for
the duration of its ``run(payload)``); the built-in provider uses it, a custom workflow
provider may too, and one that ignores it simply is not resumable node by node.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import secrets
import time
from typing import Any

import anyio
import msgspec

from oneiric._files import atomic_write
from oneiric.errors import BadRequest, Conflict, NotFound

log = logging.getLogger(__name__)

DIR_NAME = "workflows"
FINISHED = frozenset({"ok", "failed"})
RESUMABLE = frozenset({"interrupted", "failed"})


class NodeState(msgspec.Struct, kw_only=True):
    status: str = "pending"  # pending|ok|failed|skipped|cancelled
    result: Any = None
    error: str | None = None
    duration_ms: float | None = None
    attempts: int = 0


class RunRecord(msgspec.Struct, kw_only=True):
    run_id: str
    key: str
    provider: str
    status: str  # running|ok|failed|interrupted
    payload: Any = None
    started_at: float
    updated_at: float
    finished_at: float | None = None
    resumes: int = 0  # how many times the run was resumed
    error: str | None = None
    nodes: dict[str, NodeState] = {}


_current: contextvars.ContextVar[WorkflowRun | None] = contextvars.ContextVar(
    "oneiric_workflow_run", default=None
)


def current_run() -> WorkflowRun | None:
    """The durable run the calling workflow provider is executing, if any."""
    return _current.get()


def reset_current(token: contextvars.Token[WorkflowRun | None]) -> None:
    _current.reset(token)


class WorkflowRun:
    """One run's record and its checkpoint writes."""

    def __init__(self, store: RunStore, record: RunRecord) -> None:
        self.store = store
        self.record = record
        self._lock = anyio.Lock()

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def payload(self) -> Any:
        return self.record.payload

    def completed(self, node_id: str) -> NodeState | None:
        """The node's state when an earlier attempt of this run finished it ``ok``."""
        node = self.record.nodes.get(node_id)
        return node if node is not None and node.status == "ok" else None

    async def begin(self, node_ids: list[str]) -> None:
        """Declare the run's nodes (new ones pending; ones no longer in the DAG dropped)."""
        old = self.record.nodes
        self.record.nodes = {n: old.get(n) or NodeState() for n in node_ids}
        await self.checkpoint()

    async def node_done(self, node_id: str, state: NodeState) -> None:
        """Record a node's end durably: the checkpoint after each node."""
        self.record.nodes[node_id] = state
        await self.checkpoint()

    async def checkpoint(self) -> None:
        async with self._lock:
            self.record.updated_at = time.time()
            await self.store.write(self.record)

    def set_current(self) -> contextvars.Token[WorkflowRun | None]:
        return _current.set(self)


class RunStore:
    """The records of one daemon's workflow runs, in ``directory``."""

    def __init__(self, directory: str, history: int = 50) -> None:
        self.directory = directory
        self.history = history
        self.records: dict[str, RunRecord] = {}
        self.live: set[str] = set()  # run ids executing in this process

    def load(self) -> None:
        """Read the records left by earlier runs (blocking). A run found ``running`` was
        killed with the daemon: it becomes ``interrupted`` (resumable). Damaged files are
        reported and skipped."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        decoder = msgspec.json.Decoder(RunRecord)
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = os.path.join(self.directory, name)
            try:
                with open(path, "rb") as fh:
                    record = decoder.decode(fh.read())
            except (OSError, msgspec.DecodeError) as exc:
                log.error("workflow run record %s is unreadable (%s); skipped", path, exc)
                continue
            if record.status == "running":
                record.status = "interrupted"
                record.error = "the daemon stopped without finishing it (killed or crashed)"
                log.warning(
                    "workflow run %s of %s was interrupted; resume it with "
                    "'oneiricctl run workflow %s --resume %s'",
                    record.run_id,
                    record.key,
                    record.key,
                    record.run_id,
                )
            self.records[record.run_id] = record

    def _path(self, run_id: str) -> str:
        return os.path.join(self.directory, f"{run_id}.json")

    async def write(self, record: RunRecord) -> None:
        data = msgspec.json.encode(record)
        await anyio.to_thread.run_sync(
            functools.partial(atomic_write, self._path(record.run_id), data, mode=0o600)
        )

    def new_run(self, key: str, provider: str, payload: Any) -> WorkflowRun:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        run_id = f"{key}-{stamp}-{secrets.token_hex(3)}"
        now = time.time()
        record = RunRecord(
            run_id=run_id,
            key=key,
            provider=provider,
            status="running",
            payload=payload,
            started_at=now,
            updated_at=now,
        )
        self.records[run_id] = record
        self.live.add(run_id)
        return WorkflowRun(self, record)

    def resume(self, key: str, run_id: str, provider: str) -> WorkflowRun:
        """The run ``run_id`` of ``key``, ready to continue; refuses what cannot resume."""
        record = self.records.get(run_id)
        if record is None:
            raise NotFound(f"no workflow run {run_id!r}: see 'oneiricctl runs {key}'")
        if record.key != key:
            raise BadRequest(f"run {run_id!r} belongs to workflow {record.key!r}, not {key!r}")
        if run_id in self.live:
            raise Conflict(f"run {run_id!r} is running now")
        if record.status not in RESUMABLE:
            raise Conflict(
                f"run {run_id!r} finished {record.status}; only interrupted or failed runs "
                "resume (start a new run instead)"
            )
        record.status = "running"
        record.error = None
        record.finished_at = None
        record.resumes += 1
        record.provider = provider
        self.live.add(run_id)
        return WorkflowRun(self, record)

    async def finish(self, run: WorkflowRun, status: str, error: str | None = None) -> None:
        """Record the end of a run (``ok``, ``failed`` or ``interrupted``) and prune."""
        record = run.record
        record.status = status
        record.error = error
        if status in FINISHED:
            record.finished_at = time.time()
        self.live.discard(record.run_id)
        try:
            await run.checkpoint()
        except OSError as exc:
            log.error("cannot write the record of workflow run %s: %s", record.run_id, exc)
        if status in FINISHED:
            await self.prune()

    async def prune(self) -> None:
        """Delete the records of finished runs beyond the newest ``history``."""
        done = sorted(
            (r for r in self.records.values() if r.status in FINISHED),
            key=lambda r: (r.finished_at or 0.0, r.run_id),
            reverse=True,
        )
        for record in done[self.history :]:
            del self.records[record.run_id]
            try:
                await anyio.to_thread.run_sync(os.unlink, self._path(record.run_id))
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot delete workflow run record %s: %s", record.run_id, exc)

    def listing(self, key: str | None, limit: int) -> list[dict[str, Any]]:
        """``oneiricctl runs``: the newest runs first, each with its nodes' states."""
        found = [r for r in self.records.values() if key is None or r.key == key]
        found.sort(key=lambda r: (r.started_at, r.run_id), reverse=True)
        return [
            {
                "run_id": r.run_id,
                "key": r.key,
                "provider": r.provider,
                "status": r.status,
                "started_at": r.started_at,
                "updated_at": r.updated_at,
                "finished_at": r.finished_at,
                "resumes": r.resumes,
                "error": r.error,
                "nodes": {
                    n: {"status": s.status, "attempts": s.attempts, "error": s.error}
                    for n, s in r.nodes.items()
                },
            }
            for r in found[:limit]
        ]
