"""The daemon's answers to control requests (SPEC §7–§8): translate each op into runtime calls.

Runs inside the control server's per-request task; raises :class:`OneiricError` subclasses,
which the server turns into error replies. Its collaborators are handed to it, typed: the
runtime, the reloader, the health reporter and (once started) the domain manager; it never
reaches into the daemon. The ops that hold a request open and stream (``watch``, ``events
--follow``) are in :mod:`oneiric.streams`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Final

import anyio
import msgspec

from oneiric._const import VERSION
from oneiric.control.peers import Peer
from oneiric.control.protocol import (
    DeadLettersRequest,
    DrainRequest,
    EmitRequest,
    EventsRequest,
    ExplainRequest,
    HealthRequest,
    ListRequest,
    MetricsRequest,
    PauseRequest,
    PingRequest,
    ReloadRequest,
    ReplayRequest,
    Request,
    ResumeRequest,
    RunRequest,
    RunsRequest,
    StatusRequest,
    SwapRequest,
    SyncRequest,
    WatchRequest,
)
from oneiric.control.replies import (
    DeadLettersReply,
    DrainProgress,
    DrainReply,
    EmitReply,
    ExplainReply,
    ListedCandidate,
    ListReply,
    MetricsReply,
    PauseReply,
    PingReply,
    ReplayReply,
    Result,
    ResumeReply,
    RunAccepted,
    RunsReply,
    SwapReply,
    TaskRunReply,
    WorkflowRunReply,
)
from oneiric.control.session import Emit
from oneiric.domains.manager import DomainManager
from oneiric.errors import DrainTimeout, OneiricError, SwapFailed, Unavailable
from oneiric.metrics import CONTENT_TYPE, Metrics
from oneiric.reload import Reloader
from oneiric.runtime.core import Runtime
from oneiric.runtime.keys import ComponentKey
from oneiric.runtime.reporter import HealthReporter
from oneiric.streams import WatchStreams, follow_events

if TYPE_CHECKING:
    from oneiric.remote.sync import RemoteSync

log = logging.getLogger(__name__)


def _names(keys: list[ComponentKey]) -> list[str]:
    return [str(ck) for ck in keys]


_DRAINING: Final = frozenset({"draining"})
_HELD: Final = frozenset({"paused", "draining"})


def _still_held(rt: Runtime, keys: list[ComponentKey], states: frozenset[str]) -> dict[str, str]:
    """Keys whose effective state is one of ``states`` after the change, and by which scope
    ("paused by domain"): the reply must not claim more than the change achieved."""
    held: dict[str, str] = {}
    for ck in keys:
        eff = rt.intent.effective(ck.domain, ck.key)
        if eff.state in states:
            held[str(ck)] = f"{eff.state} by {eff.scope}"
    return held


class ControlHandler:
    """Callable the control server invokes per request."""

    def __init__(
        self,
        rt: Runtime,
        reloader: Reloader,
        health: HealthReporter,
        domains: DomainManager | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.rt = rt
        self.reloader = reloader
        self.health = health
        #: what ``metrics`` renders; a daemon always has one, tests of other ops need not
        self.metrics = metrics
        #: None until the domains have started (the server answers before that: ``run`` and
        #: ``emit`` say "still starting" meanwhile)
        self.domains = domains
        #: the remote manifest sync (SPEC §9); None without [remote] (``sync`` is unavailable)
        self.remote: RemoteSync | None = None
        self._watches = WatchStreams(rt, health)

    async def __call__(self, request: Request, peer: Peer, emit: Emit) -> Result:
        rt = self.rt
        match request:
            case PingRequest():
                return PingReply(
                    version=VERSION,
                    pid=os.getpid(),
                    uptime_s=round(time.time() - self.health.started_at, 3),
                    state=self.health.state,
                )
            case StatusRequest(domain=domain, key=key):
                snap = self.health.snapshot(domain, key, encoded=True)
                if domain is not None and key is not None:
                    if not snap.components:
                        rt.state(domain, key)  # raises not_found naming the key
                    snap.recent_events = rt.history.of_key(f"{domain}/{key}")
                return snap
            case HealthRequest():
                return self.health.snapshot(encoded=True)
            case ExplainRequest(domain=domain, key=key, capability=capability):
                asked = None if capability is None else tuple(capability)
                explanation: ExplainReply = rt.explain(domain, key, asked)
                return explanation
            case ListRequest(domain=domain, shadowed=shadowed):
                return ListReply(candidates=self._list(domain, shadowed))
            case PauseRequest(domain=domain, key=key, note=note):
                keys = await rt.pause(domain, key, uid=peer.uid, pid=peer.pid, note=note or "")
                names = _names(keys)
                self._record_intent("pause", keys, peer, names, note=note or None)
                held = _still_held(rt, keys, _DRAINING)  # a wider drain is stricter
                return PauseReply(
                    affected=names,
                    state="paused" if not held else "partly draining",
                    still_held=held,
                )
            case ResumeRequest(domain=domain, key=key):
                keys = await rt.resume(domain, key, uid=peer.uid, pid=peer.pid)
                names = _names(keys)
                self._record_intent("resume", keys, peer, names)
                held = _still_held(rt, keys, _HELD)  # by a wider intent
                return ResumeReply(
                    affected=names,
                    state="active" if not held else "partly active",
                    still_held=held,
                )
            case DrainRequest():
                return await self._drain(request, peer, emit)
            case SwapRequest(domain=domain, key=key, provider=provider, clear=clear):
                return await self._swap(domain, key, None if clear else provider, peer)
            case ReloadRequest():
                return await self.reloader.reload(trigger=f"oneiricctl (uid {peer.uid})")
            case WatchRequest():
                return await self._watches.stream(emit, peer)
            case RunRequest():
                return await self._run(request)
            case EmitRequest(topic=topic, data=data, wait=wait):
                out = await self._domains().emit(topic, data, wait=wait)
                return EmitReply(
                    delivered=out["delivered"],
                    held=out["held"],
                    dropped=out["dropped"],
                    dead=out["dead"],
                )
            case DeadLettersRequest():
                return DeadLettersReply(**self._domains().events.dead_letters())
            case ReplayRequest(ids=ids, wait=wait):
                return ReplayReply(**await self._domains().events.replay(ids, wait=wait))
            case RunsRequest(key=key, limit=limit):
                rows = await self._domains().runs(key, limit)
                return msgspec.convert({"runs": rows}, RunsReply)
            case EventsRequest():
                return await follow_events(rt, self.health, request, emit)
            case MetricsRequest():
                if self.metrics is None:
                    raise Unavailable("this daemon keeps no metrics")
                return MetricsReply(text=await self.metrics.render(), content_type=CONTENT_TYPE)
            case SyncRequest():
                if self.remote is None:
                    raise Unavailable(
                        "no [remote] section in the config: this host is not steered by a "
                        "remote manifest (see docs/fleet.md)"
                    )
                return await self.remote.sync_now()
        raise OneiricError(f"unhandled op {type(request).__name__}")  # pragma: no cover

    def _domains(self) -> DomainManager:
        if self.domains is None:
            raise Unavailable("oneiricd is still starting; try again in a moment")
        return self.domains

    async def _run(self, req: RunRequest) -> RunAccepted | TaskRunReply | WorkflowRunReply:
        handle = await self._domains().start(req.domain, req.key, req.payload, resume=req.resume)
        if not req.wait:
            return RunAccepted(run_id=handle.run_id)
        result = await handle.wait()
        if req.domain == "workflow" and isinstance(result, dict) and "nodes" in result:
            # the provider's own report ({ok, nodes} for the built-in one), passed through
            return {**result, "duration_ms": handle.duration_ms, "run_id": handle.run_id}
        return TaskRunReply(result=result, duration_ms=handle.duration_ms, run_id=handle.run_id)

    def _list(self, domain: str | None, shadowed: bool) -> list[ListedCandidate]:
        rt = self.rt
        out: list[ListedCandidate] = []
        for ck in rt.registry.keys(domain=domain):
            d, k = ck
            res = rt.resolve(d, k)
            st = rt.states.get(ck)
            active = st.slot.current if st is not None else None
            for r in rt.registry.ranked(d, k):
                c = r.candidate
                winner = res.winner is not None and res.winner.candidate == c
                if not shadowed and not winner:
                    continue
                out.append(
                    ListedCandidate(
                        domain=d,
                        key=k,
                        provider=c.provider,
                        factory=c.factory,
                        source=c.source,
                        priority=c.priority,
                        stack_level=c.stack_level,
                        capabilities=list(c.capabilities),
                        winner=winner,
                        active=active is not None and active.candidate == c,
                    )
                )
        return out

    async def _swap(self, domain: str, key: str, provider: str | None, peer: Peer) -> SwapReply:
        rt = self.rt
        st = rt.state(domain, key)
        previous = st.slot.current.provider if st.slot.current is not None else None
        if provider is None and rt.intent.override(domain, key) is None:
            return SwapReply(  # a clear with nothing to clear: no durable write, no reconcile
                provider=previous,
                previous=previous,
                parked=False,
                outcome="unchanged",
                swap_ms=0.0,
                nothing_to_clear=True,
            )
        started = time.monotonic()
        outcome = await rt.set_override(domain, key, provider, uid=peer.uid, pid=peer.pid)
        self._record_intent(
            "swap --clear" if provider is None else f"swap to {provider!r}",
            [ComponentKey(domain, key)],
            peer,
            outcome=outcome,
        )
        if outcome == "failed":
            raise SwapFailed(
                f"swap of {st.slot.name} failed, {previous!r} keeps serving: {st.last_error}"
            )
        current = st.slot.current.provider if st.slot.current is not None else None
        return SwapReply(
            provider=st.parked.provider if st.parked is not None else current,
            previous=previous,
            parked=outcome == "parked",
            outcome=outcome,
            swap_ms=round((time.monotonic() - started) * 1000, 3),
        )

    async def _drain(self, req: DrainRequest, peer: Peer, emit: Emit) -> DrainReply:
        rt = self.rt
        keys = await rt.drain(req.domain, req.key, uid=peer.uid, pid=peer.pid, note=req.note or "")
        self._record_intent("drain", keys, peer, note=req.note or None)
        started = time.monotonic()
        if not req.wait:
            left = rt.in_flight(keys)
            return DrainReply(
                drained=not left, affected=_names(keys), in_flight=left, elapsed_s=0.0
            )

        async def progress(in_flight: dict[str, int]) -> None:
            elapsed = round(time.monotonic() - started, 3)
            await emit(DrainProgress(in_flight=in_flight, elapsed_s=elapsed))

        with anyio.move_on_after(req.timeout if req.timeout is not None else float("inf")):
            await rt.wait_idle(keys, progress=progress)
            return DrainReply(
                drained=True,
                affected=_names(keys),
                elapsed_s=round(time.monotonic() - started, 3),
            )
        left = rt.in_flight(keys)
        raise DrainTimeout(
            f"drain timed out after {req.timeout:g}s; still in flight: "
            + ", ".join(f"{k} ({n})" for k, n in sorted(left.items())),
            left,
        )

    def _record_intent(
        self,
        op: str,
        keys: list[ComponentKey],
        peer: Peer,
        names: list[str] | None = None,
        **detail: str | None,
    ) -> None:
        """The history entry of an intent change (``names``: ``keys`` as strings, if the
        caller has them already)."""
        if names is None:
            names = _names(keys)
        note = detail.get("note")
        self.rt.history.record(
            "intent",
            f"{op} {', '.join(names) or 'nothing'} by uid {peer.uid}"
            + (f": {note}" if note else ""),
            key=names[0] if len(names) == 1 else None,
            op=op,
            uid=peer.uid,
            pid=peer.pid,
            keys=list(names) if len(names) > 1 else None,
            **detail,
        )
