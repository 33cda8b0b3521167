"""Task and workflow domains: runs on demand and on schedule. One run = one lease.

A run is started only when the key admits leases, has an active instance and is below its
``concurrency`` limit; otherwise it is refused at once with a clear error (:class:`Paused`,
``Unavailable``, :class:`Busy`), so an operator's ``oneiricctl run`` never hangs on a paused
key. Components that run tasks (:func:`oneiric.run_task`, workflow nodes) wait for a free
concurrency slot instead of failing — the workflow itself created the contention.

Every run executes in the domain manager's task group, not in the caller's: a client that
disconnects (or ``--no-wait``) does not cancel the run.

Schedules (``every``): one loop per key; each tick starts a run when it can and otherwise
counts a *skipped* run (paused, draining, busy, no instance). Skipped runs are never caught up.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from oneiric.domains._base import (
    call_component,
    increment,
    jsonable,
    set_extras,
)
from oneiric.domains.workflow import RunStore, WorkflowRun, reset_current
from oneiric.errors import (
    BadRequest,
    Busy,
    OneiricError,
    Paused,
    RunCancelled,
    TaskFailed,
    Unavailable,
)
from oneiric.runtime.core import KeyState, Runtime
from oneiric.runtime.leases import Binding
from oneiric.runtime.lifecycle import describe

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunHandle:
    """One run: ``done`` is set when it finished; then ``result`` or ``error`` is filled."""

    run_id: str
    name: str
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Any = None
    error: OneiricError | None = None
    duration_ms: float | None = None

    async def wait(self) -> Any:
        """The run's result, or raise its error."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(slots=True)
class _KeyRuns:
    running: int = 0
    freed: anyio.Event = field(default_factory=anyio.Event)
    scheduled: bool = False
    run_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))  # task/KEY#N


def refusal(rt: Runtime, st: KeyState, verb: str = "runs") -> OneiricError | None:
    """Why ``st`` takes no new run right now, as the error to raise (None: it can)."""
    slot = st.slot
    if slot.current is None:
        why = f" ({st.last_error})" if st.last_error else ""
        return Unavailable(f"{slot.name} has no active instance (lifecycle {st.lifecycle}){why}")
    if not slot.admitting:
        if slot.reason == "stopping":
            return Paused(f"oneiricd is stopping; {slot.name} takes no new {verb}")
        return Paused(
            f"{slot.name} is {rt.admin_state(st)}; {verb} are refused until it is resumed "
            f"({resume_hint(rt, st)})"
        )
    return None


def resume_hint(rt: Runtime, st: KeyState) -> str:
    """The command that lifts the intent in force: it may live on the key, its domain or
    everything, and resuming the key alone does not lift a domain-wide pause."""
    scope = rt.intent.effective(st.slot.domain, st.slot.key).scope
    if scope == "global":
        return "oneiricctl resume --all"
    if scope == "domain":
        return f"oneiricctl resume {st.slot.domain}"
    return f"oneiricctl resume {st.slot.domain} {st.slot.key}"


class RunManager:
    """Runs of one domain (``task`` or ``workflow``)."""

    def __init__(
        self,
        rt: Runtime,
        tg: anyio.abc.TaskGroup,
        domain: str,
        store: RunStore | None = None,
    ) -> None:
        self.rt = rt
        self.tg = tg
        self.domain = domain
        self.store = store  # workflow runs: durable records and resume
        self.keys: dict[str, _KeyRuns] = {}
        self._scheduled: dict[str, RunHandle] = {}  # last scheduled run per key (no overlap)

    def _runs(self, key: str) -> _KeyRuns:
        kr = self.keys.get(key)
        if kr is None:
            kr = self.keys[key] = _KeyRuns()
        return kr

    # -- observer --------------------------------------------------------------------------------
    async def bound(self, st: KeyState, new: Binding | None, old: Binding | None) -> None:
        kr = self._runs(st.slot.key)
        if new is not None and not kr.scheduled:
            kr.scheduled = True
            self.tg.start_soon(self._schedule, st)

    # -- starting runs ---------------------------------------------------------------------------
    async def start(
        self,
        key: str,
        payload: Any = None,
        *,
        wait_slot: bool = False,
        resume: str | None = None,
    ) -> RunHandle:
        """Start a run of ``key`` (in the background) and return its handle. Raises NotFound,
        Paused/Unavailable (not admitting, no instance), Busy (at the concurrency limit, unless
        ``wait_slot``: then it waits for a run to finish) or BadRequest (no ``run`` method).
        ``resume``: continue that interrupted/failed workflow run (see :mod:`.workflow`)."""
        if resume is not None and self.store is None:
            raise BadRequest(f"{self.domain} runs cannot be resumed")
        st = self.rt.state(self.domain, key)
        kr = self._runs(key)
        while True:
            refused = refusal(self.rt, st)
            if refused is not None:
                raise refused
            binding = st.slot.current
            assert binding is not None
            limit = binding.candidate.concurrency
            if limit is None or kr.running < limit:
                break
            if not wait_slot:
                raise Busy(
                    f"{st.slot.name} is busy: {kr.running} run(s) in progress, concurrency "
                    f"limit {limit}; try again when one finishes"
                )
            freed = kr.freed
            await freed.wait()
        run = getattr(binding.instance, "run", None)
        if run is None:
            raise BadRequest(
                f"{st.slot.name}: provider {binding.provider!r} has no run(payload) method"
            )
        durable: WorkflowRun | None = None
        if self.store is not None:
            if resume is not None:
                durable = self.store.resume(key, resume, binding.provider)
                payload = durable.payload
            else:
                durable = self.store.new_run(key, binding.provider, payload)
        lease = st.slot.lease(wait=False)
        instance = await lease.__aenter__()  # admitted and bound: the fast path, no await point
        run_id = durable.run_id if durable is not None else f"{st.slot.name}#{next(kr.run_ids)}"
        handle = RunHandle(run_id=run_id, name=st.slot.name)
        kr.running += 1
        self.tg.start_soon(self._execute, st, kr, lease, instance, payload, handle, durable)
        return handle

    async def _execute(
        self,
        st: KeyState,
        kr: _KeyRuns,
        lease: Any,
        instance: Any,
        payload: Any,
        handle: RunHandle,
        durable: WorkflowRun | None = None,
    ) -> None:
        name = st.slot.name
        started = time.monotonic()
        set_extras(self.rt, st, last_run_at=time.time())
        failed = False
        token = durable.set_current() if durable is not None else None
        try:
            result = await call_component(instance.run, payload, name=name)
            handle.result = jsonable(result)
            if isinstance(result, dict) and result.get("ok") is False and "nodes" in result:
                failed = True  # a workflow reporting failed nodes
                set_extras(self.rt, st, last_run_error=_failed_nodes(result))
            if durable is not None:
                await self._finish_durable(durable, "failed" if failed else "ok", result)
        except Exception as exc:
            failed = True
            handle.error = self._error(st, handle, exc, started)
            set_extras(self.rt, st, last_run_error=str(handle.error))
            log.error("%s: run %s failed: %s", name, handle.run_id, describe(exc), exc_info=exc)
            if durable is not None:
                await self._finish_durable(durable, "failed", None, str(handle.error))
        except BaseException:
            handle.error = RunCancelled(f"{name}: run {handle.run_id} was cancelled")
            if durable is not None:
                await self._finish_durable(
                    durable, "interrupted", None, "the daemon stopped during the run"
                )
            raise
        finally:
            if token is not None:
                reset_current(token)
            handle.duration_ms = round((time.monotonic() - started) * 1000, 3)
            await lease.__aexit__(None, None, None)
            kr.running -= 1
            kr.freed.set()
            kr.freed = anyio.Event()
            if handle.error is None or not isinstance(handle.error, RunCancelled):
                st.extras["runs"] = int(st.extras.get("runs", 0)) + 1
                if failed:
                    st.extras["failed_runs"] = int(st.extras.get("failed_runs", 0)) + 1
            handle.done.set()
            self.rt.key_changed(st)
        log.info(
            "%s: run %s %s in %.1f ms",
            name,
            handle.run_id,
            "failed" if failed else "finished",
            handle.duration_ms,
        )

    async def _finish_durable(
        self, durable: WorkflowRun, status: str, result: Any, error: str | None = None
    ) -> None:
        """The run's last record write, shielded: a stop must not leave it "running"."""
        assert self.store is not None
        if error is None and status == "failed" and isinstance(result, dict):
            error = _failed_nodes(result)
        with anyio.CancelScope(shield=True):
            await self.store.finish(durable, status, error)

    def _error(
        self, st: KeyState, handle: RunHandle, exc: Exception, started: float
    ) -> OneiricError:
        if isinstance(exc, OneiricError):  # the component's own protocol error says it best
            return exc
        return TaskFailed(
            f"{st.slot.name} failed: {describe(exc)}",
            detail={
                "run_id": handle.run_id,
                "error_type": type(exc).__name__,
                "duration_ms": round((time.monotonic() - started) * 1000, 3),
            },
        )

    # -- schedules -------------------------------------------------------------------------------
    async def tick(self, key: str) -> bool:
        """One scheduled tick of ``key``: start a run, or count a skipped one. True if started.
        A tick never waits for anything (that is what keeps runs from piling up)."""
        st = self.rt.state(self.domain, key)
        previous = self._scheduled.get(key)
        if previous is not None and not previous.done.is_set():
            log.info("%s: scheduled run skipped: the previous one is still running", st.slot.name)
            increment(self.rt, st, "skipped_runs")
            return False
        try:
            self._scheduled[key] = await self.start(key, None)
        except OneiricError as exc:
            log.info("%s: scheduled run skipped: %s", st.slot.name, exc)
            increment(self.rt, st, "skipped_runs")
            return False
        return True

    async def _schedule(self, st: KeyState) -> None:
        """Tick every ``every`` seconds of the serving candidate (re-read after each change)."""
        key = st.slot.key
        every: float | None = None
        deadline = 0.0
        seen = st.version
        try:
            while True:
                cur = st.slot.current
                want = cur.candidate.every if cur is not None else None
                if want != every:
                    every = want
                    deadline = anyio.current_time() + (every or 0.0)
                    set_extras(self.rt, st, next_run_at=time.time() + every if every else None)
                if not every:
                    seen = await st.wait_changed(seen)
                    continue
                with anyio.move_on_after(deadline - anyio.current_time()):
                    seen = await st.wait_changed(seen)
                    continue
                await self.tick(key)
                now = anyio.current_time()
                deadline += every
                if deadline <= now:  # fell behind (a stalled loop): skip, never catch up
                    missed = int((now - deadline) // every) + 1
                    deadline += missed * every
                    increment(self.rt, st, "skipped_runs", missed)
                set_extras(self.rt, st, next_run_at=time.time() + (deadline - now))
                seen = self.rt.version
        except Exception:  # pragma: no cover - a scheduler bug must not stop the daemon
            log.exception("%s: scheduler failed", st.slot.name)


def _failed_nodes(result: dict[str, Any]) -> str:
    nodes = result.get("nodes") or {}
    bad = [
        f"{nid} {n.get('status')}"
        for nid, n in nodes.items()
        if isinstance(n, dict) and n.get("status") != "ok"
    ]
    return "workflow failed: " + ", ".join(bad)
