"""Event domain: publish, match, hold while paused, deliver in order. One delivery = one lease.

``emit(topic, data)`` appends the event to the queue of every event key whose serving
candidate's ``topics`` glob-match the topic (``fnmatch``, case-sensitive; ``*`` also matches
dots). Each key has one bounded queue (``queue_size``) and one worker that starts deliveries in
queue order while the key admits leases, at most ``concurrency`` at a time (no limit when
unset; set ``concurrency = 1`` for strictly one-after-another handling). While the key is
paused or draining the queue holds events; resume delivers them in order. An event that finds
the queue full is dropped, counted in ``dropped_events``, logged and reported to the emitter —
never silently lost. Events still held when the daemon stops are discarded (and logged).
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import anyio
import anyio.abc

from oneiric.domains._base import call_component, increment, set_extras
from oneiric.errors import BadRequest, OneiricError
from oneiric.runtime.core import KeyState, Runtime
from oneiric.runtime.leases import Binding
from oneiric.runtime.lifecycle import describe

log = logging.getLogger(__name__)

_TOPIC = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]*")


@dataclass(frozen=True, slots=True)
class Event:
    """What ``handle(event)`` receives."""

    topic: str
    data: Any = None
    id: int = 0  # daemon-wide sequence number, increasing in emission order
    emitted_at: float = 0.0  # epoch seconds


@dataclass(slots=True)
class _KeyQueue:
    queue: deque[Event] = field(default_factory=deque)
    running: int = 0
    wake: anyio.Event = field(default_factory=anyio.Event)
    started: bool = False


def check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        raise BadRequest(
            f"invalid topic {topic!r}: use letters, digits and '_', separated by '.', ':', '/' "
            "or '-' (like user.created); glob characters belong in a handler's topics"
        )
    return topic


class EventDispatcher:
    """Queues and workers of every event key."""

    def __init__(self, rt: Runtime, tg: anyio.abc.TaskGroup) -> None:
        self.rt = rt
        self.tg = tg
        self.keys: dict[str, _KeyQueue] = {}
        self._ids = itertools.count(1)

    def _queue(self, st: KeyState) -> _KeyQueue:
        kq = self.keys.get(st.slot.key)
        if kq is None:
            kq = self.keys[st.slot.key] = _KeyQueue()
        if not kq.started:
            kq.started = True
            self.tg.start_soon(self._worker, st, kq)
        return kq

    # -- observer --------------------------------------------------------------------------------
    async def bound(self, st: KeyState, new: Binding | None, old: Binding | None) -> None:
        if new is not None:
            self._queue(st).wake.set()
            return
        # the key was removed: what it still held can never be delivered — say so, count it
        kq = self.keys.get(st.slot.key)
        if kq is not None and kq.queue:
            lost = len(kq.queue)
            log.warning(
                "%s: removed with %d undelivered event(s); they are dropped", st.slot.name, lost
            )
            kq.queue.clear()
            increment(self.rt, st, "dropped_events", lost)
            set_extras(self.rt, st, held_events=0)

    def admission(self, st: KeyState, admitting: bool) -> None:
        kq = self.keys.get(st.slot.key)
        if kq is not None:
            kq.wake.set()
            if not admitting and self.rt.stopping and kq.queue:
                log.warning(
                    "%s: the daemon is stopping; %d held event(s) will not be delivered",
                    st.slot.name,
                    len(kq.queue),
                )

    # -- publishing ------------------------------------------------------------------------------
    def emit(self, topic: str, data: Any = None) -> dict[str, list[str]]:
        """Queue the event for every matching event key; say which keys will get it now
        (``delivered``), which hold it until resumed (``held``) and which dropped it because
        their queue is full (``dropped``)."""
        check_topic(topic)
        event = Event(topic=topic, data=data, id=next(self._ids), emitted_at=time.time())
        out: dict[str, list[str]] = {"delivered": [], "held": [], "dropped": []}
        for ck, st in sorted(self.rt.states.items()):
            binding = st.slot.current
            if ck.domain != "event" or binding is None:
                continue
            if not any(fnmatchcase(topic, p) for p in binding.candidate.topics):
                continue
            kq = self._queue(st)
            name = st.slot.name
            if len(kq.queue) >= binding.candidate.queue_size:
                log.warning(
                    "%s: queue full (%d held); dropped event #%d %s",
                    name,
                    len(kq.queue),
                    event.id,
                    topic,
                )
                increment(self.rt, st, "dropped_events")
                out["dropped"].append(name)
                continue
            kq.queue.append(event)
            kq.wake.set()
            out["delivered" if st.slot.admitting else "held"].append(name)
            set_extras(self.rt, st, held_events=len(kq.queue))
        log.debug("event #%d %s: %s", event.id, topic, out)
        return out

    # -- delivery --------------------------------------------------------------------------------
    async def _worker(self, st: KeyState, kq: _KeyQueue) -> None:
        while True:
            kq.wake = anyio.Event()
            await self._pump(st, kq)
            await kq.wake.wait()

    async def _pump(self, st: KeyState, kq: _KeyQueue) -> None:
        """Start deliveries in queue order while admitted and below the concurrency limit."""
        slot = st.slot
        while kq.queue and slot.admitting and slot.current is not None:
            limit = slot.current.candidate.concurrency
            if limit is not None and kq.running >= limit:
                break
            lease = slot.lease(wait=False)
            try:
                instance = await lease.__aenter__()  # admitted and bound: no await point
            except OneiricError:  # pragma: no cover - guarded by the loop condition
                break
            event = kq.queue.popleft()
            kq.running += 1
            self.tg.start_soon(self._deliver, st, kq, lease, instance, event)
        set_extras(self.rt, st, held_events=len(kq.queue))

    async def _deliver(
        self, st: KeyState, kq: _KeyQueue, lease: Any, instance: Any, event: Event
    ) -> None:
        ok = False
        try:
            handle = getattr(instance, "handle", None)
            if handle is None:
                raise TypeError(f"provider of {st.slot.name} has no handle(event) method")
            await call_component(handle, event)
            ok = True
        except Exception as exc:
            text = f"handle() of event #{event.id} {event.topic} raised {describe(exc)}"
            log.error("%s: %s", st.slot.name, text, exc_info=exc)
            set_extras(self.rt, st, last_run_error=text)
        finally:
            await lease.__aexit__(None, None, None)
            kq.running -= 1
            kq.wake.set()
            increment(self.rt, st, "delivered" if ok else "failed_deliveries")
