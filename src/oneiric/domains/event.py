"""Event domain: route, hold while paused, deliver in order, retry, dead-letter (SPEC §2, §10).
One delivery attempt = one lease.

Routing: ``emit(topic, data)`` finds every event key whose serving candidate's ``topics``
glob-match the topic (``fnmatch``, case-sensitive; ``*`` also matches dots) and whose
``filters`` (field equality on the event data; dotted fields reach into nested tables) all
hold. Handlers are taken in ``priority`` order (highest first, then by key); a handler with
``fanout = "exclusive"`` consumes the event: the walk stops there, so handlers ranked below it
do not receive it (with the highest-priority match exclusive, it is the only receiver).

Delivery: each key has one bounded queue (``queue_size``) and one worker that starts
deliveries in queue order while the key admits leases, at most ``concurrency`` at a time (no
limit when unset). While the key is paused or draining the queue holds events; resume delivers
them in order. An event that finds the queue full is dropped, counted, logged and reported to
the emitter — never silently lost. A handler that raises is retried per ``retry = {attempts,
backoff}`` (exponential backoff; the retry keeps its concurrency slot, so ``concurrency = 1``
stays strictly one-after-another, but not its lease, so a drain does not wait out a backoff);
after the last attempt the event goes to the dead-letter list (:mod:`.dead_letters`), from
which ``replay`` hands it back to the same key. Events still queued when the daemon stops are
discarded (and logged).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from oneiric.domains._base import call_component, increment, set_extras, wait_until
from oneiric.domains.dead_letters import DeadLetter, DeadLetters
from oneiric.domains.routing import Event, check_topic, filters_match, route
from oneiric.errors import NotFound, OneiricError
from oneiric.runtime.core import KeyState, Runtime
from oneiric.runtime.keys import ComponentKey
from oneiric.runtime.leases import Binding
from oneiric.runtime.lifecycle import describe

__all__ = ["Event", "EventDispatcher", "check_topic", "filters_match"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Delivery:
    """One event on its way to one key: which try is next, and who waits for the outcome."""

    event: Event
    attempt: int = 1
    replays: int = 0  # times this event came back from the dead-letter list
    done: anyio.Event | None = None  # set when delivered or dead (emit --wait, replay --wait)
    outcome: str = ""  # "delivered" | "dead"
    waiting: bool = True  # queued, or a retry waiting for admission: a pause holds it


@dataclass(slots=True)
class _KeyQueue:
    queue: deque[_Delivery] = field(default_factory=deque)
    running: int = 0
    wake: anyio.Event = field(default_factory=anyio.Event)
    started: bool = False


class EventDispatcher:
    """Queues and workers of every event key, and the dead-letter list."""

    def __init__(
        self, rt: Runtime, tg: anyio.abc.TaskGroup, dead: DeadLetters | None = None
    ) -> None:
        self.rt = rt
        self.tg = tg
        self.keys: dict[str, _KeyQueue] = {}
        self.dead = dead or DeadLetters()
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
    def route(self, topic: str, data: Any) -> list[KeyState]:
        """The keys that receive an event, in delivery order (:func:`.routing.route`)."""
        return route(self.rt.states.items(), topic, data)

    def emit(self, topic: str, data: Any = None) -> dict[str, list[str]]:
        """Queue the event for every key it routes to; say which keys will get it now
        (``delivered``), which hold it until resumed (``held``) and which dropped it because
        their queue is full (``dropped``). ``dead`` is filled by :meth:`emit_and_wait`."""
        out, _ = self._publish(topic, data, wait=False)
        return out

    async def emit_and_wait(self, topic: str, data: Any = None) -> dict[str, list[str]]:
        """:meth:`emit`, then wait for the keys that admit the event now to finish with it:
        each ends in ``delivered`` or (retries exhausted) ``dead``; a key paused before it
        got to the event reports it ``held`` (it is delivered on resume, not waited for)."""
        out, waits = self._publish(topic, data, wait=True)
        delivered: list[str] = []
        for st, delivery in waits:
            outcome = await self._settled(st, delivery)
            (delivered if outcome == "delivered" else out[outcome]).append(st.slot.name)
        out["delivered"] = delivered
        return out

    @staticmethod
    async def _settled(st: KeyState, delivery: _Delivery) -> str:
        """``delivered`` or ``dead`` once the delivery ended; ``held`` as soon as the key
        stops admitting while the delivery still waits for a try."""
        done = delivery.done
        assert done is not None
        await wait_until(st, lambda: done.is_set() or (delivery.waiting and not st.slot.admitting))
        return delivery.outcome if done.is_set() else "held"

    def _publish(
        self, topic: str, data: Any, *, wait: bool
    ) -> tuple[dict[str, list[str]], list[tuple[KeyState, _Delivery]]]:
        check_topic(topic)
        event = Event(topic=topic, data=data, id=next(self._ids), emitted_at=time.time())
        out: dict[str, list[str]] = {"delivered": [], "held": [], "dropped": [], "dead": []}
        waits: list[tuple[KeyState, _Delivery]] = []
        for st in self.route(topic, data):
            delivery = _Delivery(event, done=anyio.Event() if wait else None)
            verdict = self._enqueue(st, delivery)
            out[verdict].append(st.slot.name)
            if wait and verdict == "delivered":
                waits.append((st, delivery))
        log.debug("event #%d %s: %s", event.id, topic, out)
        return out, waits

    def _enqueue(self, st: KeyState, delivery: _Delivery) -> str:
        """Append to the key's queue: ``delivered`` (admitting), ``held`` or ``dropped``."""
        binding = st.slot.current
        assert binding is not None
        kq = self._queue(st)
        event = delivery.event
        if len(kq.queue) >= binding.candidate.queue_size:
            log.warning(
                "%s: queue full (%d held); dropped event #%d %s",
                st.slot.name,
                len(kq.queue),
                event.id,
                event.topic,
            )
            increment(self.rt, st, "dropped_events")
            return "dropped"
        kq.queue.append(delivery)
        kq.wake.set()
        set_extras(self.rt, st, held_events=len(kq.queue))
        return "delivered" if st.slot.admitting else "held"

    # -- dead letters ----------------------------------------------------------------------------
    def dead_letters(self) -> dict[str, Any]:
        """``oneiricctl events --dead``: the list, oldest first, with its bound and overflow."""
        return {
            "dead": self.dead.list(),
            "limit": self.dead.limit,
            "overflow": self.dead.overflow,
        }

    async def replay(self, ids: list[int] | None, *, wait: bool = False) -> dict[str, Any]:
        """Hand dead letters (``ids``, or all of them) back to the key they died on, with a
        fresh set of tries. An entry whose key has no active instance stays in the list and
        is reported under ``failed``. With ``wait``, return once each replayed event was
        delivered or died again."""
        wanted = list(self.dead.entries) if ids is None else ids
        unknown = [i for i in wanted if i not in self.dead.entries]
        if ids is not None and unknown:
            raise NotFound(
                f"no dead letter {', '.join(f'#{i}' for i in unknown)}: see "
                "'oneiricctl events --dead'"
            )
        taken = self.dead.take(wanted)
        out: dict[str, Any] = {"replayed": {}, "failed": {}}
        keep: list[DeadLetter] = []
        waits: list[tuple[int, KeyState, _Delivery]] = []
        for entry in taken:
            st = self.rt.states.get(ComponentKey("event", entry.key))
            if st is None or st.slot.current is None:
                keep.append(entry)
                out["failed"][str(entry.id)] = f"event/{entry.key} has no active instance"
                continue
            event = Event(
                topic=entry.topic, data=entry.data, id=entry.event_id, emitted_at=entry.emitted_at
            )
            delivery = _Delivery(
                event, replays=entry.replays + 1, done=anyio.Event() if wait else None
            )
            verdict = self._enqueue(st, delivery)
            if verdict == "dropped":
                keep.append(entry)
                out["failed"][str(entry.id)] = f"event/{entry.key}: queue full"
                continue
            # without waiting, "queued" (an admitting key will try it now) or "held"
            out["replayed"][str(entry.id)] = "queued" if verdict == "delivered" else verdict
            if wait and verdict == "delivered":
                waits.append((entry.id, st, delivery))
            log.info(
                "dead letter #%d (event #%d %s) replayed to event/%s: %s",
                entry.id,
                entry.event_id,
                entry.topic,
                entry.key,
                verdict,
            )
        self.dead.put_back(keep)
        await self.dead.save()
        for dead_id, st, delivery in waits:
            out["replayed"][str(dead_id)] = await self._settled(st, delivery)
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
            delivery = kq.queue.popleft()
            delivery.waiting = False
            kq.running += 1
            self.tg.start_soon(self._deliver, st, kq, lease, instance, delivery)
        set_extras(self.rt, st, held_events=len(kq.queue))

    async def _deliver(
        self, st: KeyState, kq: _KeyQueue, lease: Any, instance: Any, delivery: _Delivery
    ) -> None:
        """Try the delivery until it succeeds or its tries are used up; holds the key's
        concurrency slot throughout, a lease only while a try runs."""
        event = delivery.event
        try:
            while True:
                binding = lease._binding
                provider = binding.provider if binding is not None else "?"
                retry = binding.candidate.retry if binding is not None else None
                try:
                    error = await self._try(st, instance, event)
                finally:
                    await lease.__aexit__(None, None, None)
                if error is None:
                    increment(self.rt, st, "delivered")
                    self._finish(delivery, "delivered")
                    return
                increment(self.rt, st, "failed_deliveries")
                attempts = retry.attempts if retry is not None else 1
                if retry is None or delivery.attempt >= attempts:
                    await self._bury(st, delivery, provider, error)
                    return
                delay = retry.delay(delivery.attempt)
                log.warning(
                    "%s: event #%d %s: try %d of %d failed; retrying in %gs",
                    st.slot.name,
                    event.id,
                    event.topic,
                    delivery.attempt,
                    attempts,
                    delay,
                )
                increment(self.rt, st, "retried_deliveries")
                await anyio.sleep(delay)
                delivery.attempt += 1
                delivery.waiting = True
                acquired = await self._relet(st)
                delivery.waiting = False
                if acquired is None:
                    await self._bury(
                        st, delivery, provider, f"{error}; then the key lost its instance"
                    )
                    return
                lease, instance = acquired
        finally:
            kq.running -= 1
            kq.wake.set()

    async def _try(self, st: KeyState, instance: Any, event: Event) -> str | None:
        """One try: None on success, else what went wrong."""
        try:
            handle = getattr(instance, "handle", None)
            if handle is None:
                raise TypeError(f"provider of {st.slot.name} has no handle(event) method")
            await call_component(handle, event, name=st.slot.name)
        except Exception as exc:
            text = f"handle() of event #{event.id} {event.topic} raised {describe(exc)}"
            log.error("%s: %s", st.slot.name, text, exc_info=exc)
            set_extras(self.rt, st, last_run_error=text)
            return text
        return None

    async def _relet(self, st: KeyState) -> tuple[Any, Any] | None:
        """A lease for the next try: waits while the key is paused; None when the key has no
        instance any more (removed), so the retry cannot happen."""
        slot = st.slot
        while True:
            if slot.current is None:
                return None
            if slot.admitting:
                lease = slot.lease(wait=False)
                return lease, await lease.__aenter__()
            await slot.wait_changed()

    async def _bury(self, st: KeyState, delivery: _Delivery, provider: str, error: str) -> None:
        event = delivery.event
        entry = self.dead.add(
            key=st.slot.key,
            provider=provider,
            topic=event.topic,
            data=event.data,
            event_id=event.id,
            emitted_at=event.emitted_at,
            attempts=delivery.attempt,
            error=error,
            dead_at=time.time(),
            replays=delivery.replays,
        )
        log.error(
            "%s: event #%d %s is dead after %d tr%s: dead letter #%d (oneiricctl replay %d)",
            st.slot.name,
            event.id,
            event.topic,
            delivery.attempt,
            "y" if delivery.attempt == 1 else "ies",
            entry.id,
            entry.id,
        )
        increment(self.rt, st, "dead_letters")
        self._finish(delivery, "dead")
        await self.dead.save()

    @staticmethod
    def _finish(delivery: _Delivery, outcome: str) -> None:
        delivery.outcome = outcome
        if delivery.done is not None:
            delivery.done.set()
