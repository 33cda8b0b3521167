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
from typing import Any

import anyio.abc

from oneiric.domains.event import EventDispatcher
from oneiric.domains.service import ServiceSupervisor
from oneiric.domains.task import RunHandle, RunManager
from oneiric.errors import BadRequest, Unavailable
from oneiric.runtime.core import KeyState, Runtime, RuntimeObserver, current_runtime
from oneiric.runtime.leases import Binding

log = logging.getLogger(__name__)


class DomainManager(RuntimeObserver):
    """Services, tasks, workflows and events of one runtime."""

    def __init__(self, rt: Runtime, tg: anyio.abc.TaskGroup) -> None:
        self.rt = rt
        self.services = ServiceSupervisor(rt, tg)
        self.tasks = RunManager(rt, tg, "task")
        self.workflows = RunManager(rt, tg, "workflow")
        self.events = EventDispatcher(rt, tg)

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
    async def start(self, domain: str, key: str, payload: Any) -> RunHandle:
        """``oneiricctl run task|workflow KEY``: start one run (see :meth:`RunManager.start`);
        the control handler waits on the handle when asked to."""
        if domain == "task":
            return await self.tasks.start(key, payload)
        if domain == "workflow":
            return await self.workflows.start(key, payload)
        raise BadRequest(f"only task and workflow keys can be run, not {domain}")

    async def emit(self, topic: str, data: Any = None) -> dict[str, list[str]]:
        """``oneiricctl emit TOPIC``: see :meth:`EventDispatcher.emit`."""
        return self.events.emit(topic, data)


def current_manager() -> DomainManager:
    """The domain manager of the runtime serving the calling task."""
    rt = current_runtime()
    for obs in rt.observers:
        if isinstance(obs, DomainManager):
            return obs
    raise Unavailable("oneiricd is still starting: tasks and events are not available yet")


async def start_domains(tg: anyio.abc.TaskGroup, rt: Runtime) -> DomainManager:
    """Start the domains in ``tg`` (the daemon's task group) and return their manager (the
    daemon hands it to the control handler for ``run`` and ``emit``)."""
    manager = DomainManager(rt, tg)
    await manager.attach()
    log.info(
        "domains started: %d service(s), %d task(s), %d workflow(s), %d event key(s)",
        *(
            sum(1 for ck in rt.states if ck.domain == name)
            for name in ("service", "task", "workflow", "event")
        ),
    )
    return manager
