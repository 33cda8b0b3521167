"""The workflow provider: a DAG of task keys, each node one task run (one lease).

Settings::

    [[component]]
    domain = "workflow"
    key = "nightly"
    provider = "dag"
    factory = "oneiric.builtin.workflow:Workflow"
    settings.nodes = [
      { id = "stats",  task = "cache-stats" },
      { id = "hello",  task = "greet", payload = { name = "nightly" } },
      { id = "report", task = "slow", after = ["stats", "hello"] },
    ]

A run starts every node whose ``after`` nodes all succeeded, concurrently; a node that fails
stops its dependants (``skipped``) while independent branches go on. A node may carry
``retry = { attempts = 3, backoff = "2s" }``: a failed task run is tried again after the
backoff (doubling each time), up to ``attempts`` tries in all; the report says how many
(``attempts``). Inside oneiricd each run is durable (:mod:`oneiric.domains.workflow`): the
node's end is checkpointed before its dependants start, and a resumed run does not run again
the nodes that already ended ``ok`` (their recorded result is reported). The result reports every
node: ``{"ok": bool, "nodes": {id: {"status": "ok|failed|skipped|cancelled", "result",
"error", "duration_ms"}}}``. A run payload, when given, must be a table keyed by node id: it
replaces those nodes' configured payloads for that run.

Node runs go through :func:`oneiric.run_task`: a node waits for a free slot of a busy task and
fails at once (its dependants are skipped) when its task key is paused or draining.

Cycles, duplicate ids and unknown ``after`` ids are rejected when the config loads (and again
here, for manifests and direct use); unknown task keys are rejected at ``start()``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import msgspec

import oneiric
from oneiric.config.schema import Retry
from oneiric.config.sections import retry_value
from oneiric.domains.workflow import NodeState, current_run
from oneiric.errors import BadRequest, ConfigError, OneiricError, RunCancelled
from oneiric.runtime.lifecycle import describe

log = logging.getLogger(__name__)


class Node(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    task: str
    after: tuple[str, ...] = ()
    payload: Any = None
    retry: Any = None  # the raw table; parsed into ``policy`` by parse_nodes


def parse_nodes(raw: Any) -> list[Node]:
    """Validate ``nodes``: ids unique, ``after`` names known ids, no cycle, ``retry`` well
    formed. Raises ValueError naming the offending node."""
    try:
        nodes = msgspec.convert(raw, list[Node])
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid workflow nodes: {exc}") from None
    for i, node in enumerate(nodes):
        if node.retry is not None and not isinstance(node.retry, Retry):
            try:
                policy = retry_value(node.retry, file="settings", path=f"nodes[{i}].retry")
            except ConfigError as exc:
                raise ValueError(f"node {node.id!r}: {exc.detail} (at {exc.path})") from None
            nodes[i] = msgspec.structs.replace(node, retry=policy)
    if not nodes:
        raise ValueError("a workflow needs at least one node")
    ids: set[str] = set()
    for node in nodes:
        if node.id in ids:
            raise ValueError(f"duplicate node id {node.id!r}")
        ids.add(node.id)
    for node in nodes:
        for dep in node.after:
            if dep not in ids:
                raise ValueError(f"node {node.id!r}: 'after' names unknown node id {dep!r}")
    _check_acyclic(nodes)
    return nodes


def _check_acyclic(nodes: list[Node]) -> None:
    """Kahn's algorithm: what cannot be ordered lies on or behind a cycle."""
    waiting = {n.id: set(n.after) for n in nodes}
    ready = [i for i, deps in waiting.items() if not deps]
    while ready:
        done = ready.pop()
        for deps in waiting.values():
            if done in deps:
                deps.discard(done)
                if not deps:
                    ready.append(next(i for i, d in waiting.items() if d is deps))
        waiting.pop(done, None)
    if waiting:
        stuck = sorted(waiting)
        raise ValueError(
            f"nodes {', '.join(map(repr, stuck))} form or depend on a cycle (each waits for "
            "another that never finishes)"
        )


class Workflow:
    """Workflow provider. Settings: ``nodes`` (see the module docs)."""

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self.nodes = parse_nodes(nodes)

    def start(self) -> None:
        """Check that every node's task key exists in the running daemon."""
        from oneiric.runtime.core import current_runtime

        known = {ck.key for ck in current_runtime().known_keys() if ck.domain == "task"}
        for node in self.nodes:
            if node.task not in known:
                raise ValueError(
                    f"node {node.id!r}: no task component has key {node.task!r} "
                    f"(task keys: {', '.join(sorted(known)) or 'none'})"
                )

    async def run(self, payload: Any = None) -> dict[str, Any]:
        overrides = self._overrides(payload)
        report: dict[str, dict[str, Any]] = {}
        finished = {n.id: anyio.Event() for n in self.nodes}
        durable = current_run()
        if durable is not None:
            await durable.begin([n.id for n in self.nodes])

        async def run_node(node: Node) -> None:
            try:
                done = durable.completed(node.id) if durable is not None else None
                if done is not None:  # ended ok before the run was interrupted: not rerun
                    report[node.id] = {
                        **_entry("ok", result=done.result, duration_ms=done.duration_ms),
                        "attempts": done.attempts,
                        "resumed": True,
                    }
                    return
                for dep in node.after:
                    await finished[dep].wait()
                blocked = [d for d in node.after if report[d]["status"] != "ok"]
                if blocked:
                    report[node.id] = _entry(
                        "skipped", error=f"not run: {', '.join(blocked)} did not succeed"
                    )
                else:
                    report[node.id] = await self._run_node(
                        node, overrides.get(node.id, node.payload)
                    )
                if durable is not None:  # the checkpoint, before any dependant starts
                    entry = report[node.id]
                    await durable.node_done(
                        node.id,
                        NodeState(
                            status=entry["status"],
                            result=entry["result"],
                            error=entry["error"],
                            duration_ms=entry["duration_ms"],
                            attempts=entry.get("attempts", 0),
                        ),
                    )
            finally:
                report.setdefault(node.id, _entry("cancelled", error="the workflow was cancelled"))
                finished[node.id].set()

        async with anyio.create_task_group() as tg:
            for node in self.nodes:
                tg.start_soon(run_node, node)
        ordered = {n.id: report[n.id] for n in self.nodes}
        return {"ok": all(e["status"] == "ok" for e in ordered.values()), "nodes": ordered}

    async def _run_node(self, node: Node, payload: Any) -> dict[str, Any]:
        started = time.monotonic()
        policy = node.retry if isinstance(node.retry, Retry) else Retry()

        def took() -> float:
            return round((time.monotonic() - started) * 1000, 3)

        attempt = 1
        while True:
            try:
                result = await oneiric.run_task(node.task, payload)
            except RunCancelled as exc:
                return {
                    **_entry("cancelled", error=str(exc), duration_ms=took()),
                    "attempts": attempt,
                }
            except Exception as exc:  # run_task raises OneiricErrors; be safe with the rest
                error = str(exc) if isinstance(exc, OneiricError) else describe(exc)
                if attempt < policy.attempts:
                    delay = policy.delay(attempt)
                    log.warning(
                        "workflow node %r (task %s) try %d of %d failed: %s; retrying in %gs",
                        node.id,
                        node.task,
                        attempt,
                        policy.attempts,
                        error,
                        delay,
                    )
                    await anyio.sleep(delay)
                    attempt += 1
                    continue
                log.warning("workflow node %r (task %s) failed: %s", node.id, node.task, error)
                return {**_entry("failed", error=error, duration_ms=took()), "attempts": attempt}
            return {**_entry("ok", result=result, duration_ms=took()), "attempts": attempt}

    def _overrides(self, payload: Any) -> dict[str, Any]:
        if payload is None:
            return {}
        ids = {n.id for n in self.nodes}
        if not isinstance(payload, dict) or not set(payload) <= ids:
            raise BadRequest(
                "a workflow payload must be a table keyed by node id (node ids: "
                f"{', '.join(sorted(ids))}), got {payload!r}"
            )
        return payload


def _entry(
    status: str, *, result: Any = None, error: str | None = None, duration_ms: float | None = None
) -> dict[str, Any]:
    return {"status": status, "result": result, "error": error, "duration_ms": duration_ms}
