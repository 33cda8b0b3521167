"""The domain manager: what differs per domain, wired to the runtime as one observer.

The runtime knows leases, bindings and admission; it does not know that a service has a loop,
a task a schedule or an event key a queue. :class:`DomainManager` subscribes to the runtime
(``bound``: a new instance serves a key; ``admission``: a key opened or closed) and hands each
key to its domain's manager. The control handler calls :meth:`DomainManager.run` and
:meth:`DomainManager.emit`; components reach the same through :func:`oneiric.run_task` and
:func:`oneiric.emit`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import anyio
import anyio.abc

from oneiric.domains.dead_letters import FILE_NAME, DeadLetters
from oneiric.domains.event import EventDispatcher
from oneiric.domains.service import ServiceSupervisor
from oneiric.domains.task import RunHandle, RunManager
from oneiric.domains.workflow import DIR_NAME, RunStore
from oneiric.errors import BadRequest, NotFound, Unavailable
from oneiric.runtime.core import KeyState, Runtime, RuntimeObserver, current_runtime
from oneiric.runtime.leases import Binding

log = logging.getLogger(__name__)


class DomainManager(RuntimeObserver):
    """Services, tasks, workflows and events of one runtime."""

    def __init__(
        self,
        rt: Runtime,
        tg: anyio.abc.TaskGroup,
        dead: DeadLetters | None = None,
        runs: RunStore | None = None,
    ) -> None:
        self.rt = rt
        self.services = ServiceSupervisor(rt, tg)
        self.tasks = RunManager(rt, tg, "task")
        self.workflows = RunManager(rt, tg, "workflow", runs)
        self.events = EventDispatcher(rt, tg, dead)

    async def attach(self) -> None:
        """Subscribe, and take over every key the runtime already serves (the first
        activation happens before the domains start)."""
        if self not in self.rt.observers:
            self.rt.observers.append(self)
        for st in list(self.rt.states.values()):
            if st.slot.current is not None:
                await self.bound(st, st.slot.current, None)

    # -- RuntimeObserver -------------------------------------------------------------------------
    async def bound(self, state: KeyState, new: Binding | None, old: Binding | None) -> None:
        match state.slot.domain:
            case "service":
                await self.services.bound(state, new, old)
            case "task":
                await self.tasks.bound(state, new, old)
            case "workflow":
                await self.workflows.bound(state, new, old)
            case "event":
                await self.events.bound(state, new, old)

    def admission(self, state: KeyState, admitting: bool) -> None:
        if state.slot.domain == "event":
            self.events.admission(state, admitting)

    # -- operations ------------------------------------------------------------------------------
    async def start(
        self, domain: str, key: str, payload: Any, *, resume: str | None = None
    ) -> RunHandle:
        """``oneiricctl run task|workflow KEY [--resume RUN_ID]``: start one run (see
        :meth:`RunManager.start`); the control handler waits on the handle when asked to."""
        if domain == "task":
            if resume is not None:
                raise BadRequest("only workflow runs can be resumed")
            return await self.tasks.start(key, payload)
        if domain == "workflow":
            return await self.workflows.start(key, payload, resume=resume)
        raise BadRequest(f"only task and workflow keys can be run, not {domain}")

    def follow_config(self, config: Any) -> None:
        """A reload changed the config: the dead-letter and run-history bounds follow live."""
        self.events.dead.limit = config.daemon.dead_letters
        if self.workflows.store is not None:
            self.workflows.store.history = config.daemon.workflow_history

    async def runs(self, key: str | None, limit: int) -> list[dict[str, Any]]:
        """``oneiricctl runs [KEY]``: recent workflow runs, newest first, with node states."""
        store = self.workflows.store
        if store is None:
            return []
        if (
            key is not None
            and ("workflow", key) not in self.rt.states
            and not any(r.key == key for r in store.records.values())
        ):
            raise NotFound(f"no workflow {key!r}: see 'oneiricctl list workflow'")
        return store.listing(key, limit)

    async def emit(
        self, topic: str, data: Any = None, *, wait: bool = False
    ) -> dict[str, list[str]]:
        """``oneiricctl emit TOPIC [--wait]``: see :meth:`EventDispatcher.emit` and
        :meth:`EventDispatcher.emit_and_wait`."""
        if wait:
            return await self.events.emit_and_wait(topic, data)
        return self.events.emit(topic, data)


def current_manager() -> DomainManager:
    """The domain manager of the runtime serving the calling task."""
    rt = current_runtime()
    for obs in rt.observers:
        if isinstance(obs, DomainManager):
            return obs
    raise Unavailable("oneiricd is still starting: tasks and events are not available yet")


async def start_domains(
    tg: anyio.abc.TaskGroup,
    rt: Runtime,
    *,
    state_dir: str | None = None,
    dead_letters: int = 1000,
    workflow_history: int = 50,
) -> DomainManager:
    """Start the domains in ``tg`` (the daemon's task group) and return their manager (the
    daemon hands it to the control handler for ``run`` and ``emit``). With ``state_dir``, the
    dead-letter list and the workflow run records live there (read back here)."""
    dead = DeadLetters(dead_letters)
    runs: RunStore | None = None
    if state_dir is not None:
        dead.path = os.path.join(state_dir, FILE_NAME)
        await anyio.to_thread.run_sync(dead.load)
        runs = RunStore(os.path.join(state_dir, DIR_NAME), workflow_history)
        await anyio.to_thread.run_sync(runs.load)
        await runs.prune()
    manager = DomainManager(rt, tg, dead, runs)
    await manager.attach()
    log.info(
        "domains started: %d service(s), %d task(s), %d workflow(s), %d event key(s)",
        *(
            sum(1 for ck in rt.states if ck.domain == name)
            for name in ("service", "task", "workflow", "event")
        ),
    )
    return manager
