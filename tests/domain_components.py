"""Components for the domain tests. Anything that blocks waits on an ``anyio.Event`` the test
controls (:func:`gate`); anything that happens is appended to :data:`LOG` so tests can assert
the order of events (e.g. make-before-break: ``b.run`` before ``a.end`` before ``a.stop``)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import anyio

import oneiric

GATES: dict[str, anyio.Event] = {}
LOG: list[str] = []
COUNTS: Counter[str] = Counter()
RECEIVED: list[tuple[str, str, Any, int]] = []  # (handler name, topic, data, event id)


def gate(name: str) -> anyio.Event:
    ev = GATES.get(name)
    if ev is None:
        ev = GATES[name] = anyio.Event()
    return ev


async def passed(name: str, timeout: float = 10.0) -> None:
    """Wait (bounded) until the gate ``name`` is set by a component."""
    with anyio.fail_after(timeout):
        await gate(name).wait()


def reset() -> None:
    GATES.clear()
    LOG.clear()
    COUNTS.clear()
    RECEIVED.clear()
    FlakyHandler.BROKEN.clear()
    FlakyHandler.TRIES.clear()
    FlakyTask.BROKEN.clear()


# -- services -----------------------------------------------------------------------------------
class Service:
    """``run()`` until cancelled. Settings: ``name``; ``crashes``: the first N attempts raise;
    ``exits``: run() returns at once. Sets gate ``<name>.run.<n>`` when attempt n starts."""

    def __init__(self, name: str = "svc", crashes: int = 0, exits: bool = False) -> None:
        self.name, self.crashes, self.exits = name, crashes, exits
        self.stopping = anyio.Event()

    async def run(self) -> None:
        self.stopping = anyio.Event()
        COUNTS[f"{self.name}.run"] += 1
        n = COUNTS[f"{self.name}.run"]
        LOG.append(f"{self.name}.run")
        gate(f"{self.name}.run.{n}").set()
        try:
            if n <= self.crashes:
                raise RuntimeError(f"{self.name} crash {n}")
            if self.exits:
                return
            await self.stopping.wait()
        except anyio.get_cancelled_exc_class():
            LOG.append(f"{self.name}.cancelled")
            raise
        finally:
            LOG.append(f"{self.name}.end")

    def stop(self) -> None:
        LOG.append(f"{self.name}.stop")


class CooperativeService(Service):
    """Also has ``stop_run()``; with ``ignore_stop`` it ignores it (to test the grace)."""

    def __init__(self, name: str = "coop", ignore_stop: bool = False, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.ignore_stop = ignore_stop

    def stop_run(self) -> None:
        LOG.append(f"{self.name}.stop_run")
        if not self.ignore_stop:
            self.stopping.set()


class SyncService:
    """A plain-function ``run()`` (runs in a worker thread) that returns when told to."""

    def __init__(self, name: str = "syncsvc") -> None:
        self.name = name
        self._stop = threading.Event()

    def run(self) -> None:
        LOG.append(f"{self.name}.run")
        self._stop.wait(30)
        LOG.append(f"{self.name}.end")

    def stop_run(self) -> None:
        self._stop.set()


# -- tasks --------------------------------------------------------------------------------------
class Task:
    """``run(payload)``: payload ``{"gate": g}`` sets gate ``g.started`` and waits for gate
    ``g``; ``{"fail": msg}`` raises ValueError(msg). Returns ``{"by": name, "payload": ...}``."""

    def __init__(self, name: str = "task") -> None:
        self.name = name

    async def run(self, payload: Any = None) -> Any:
        COUNTS[f"{self.name}.run"] += 1
        LOG.append(f"{self.name}.run")
        if isinstance(payload, dict):
            if "gate" in payload:
                gate(f"{payload['gate']}.started").set()
                await gate(payload["gate"]).wait()
            if "fail" in payload:
                raise ValueError(payload["fail"])
        return {"by": self.name, "payload": payload}

    def stop(self) -> None:
        LOG.append(f"{self.name}.stop")


class SyncTask:
    """A plain-function ``run`` (executed in a worker thread)."""

    def run(self, payload: Any = None) -> Any:
        return {"sync": True, "payload": payload}


class OddResult:
    """Returns something JSON cannot carry."""

    async def run(self, payload: Any = None) -> Any:
        return object()


class NoRun:
    """A task key whose provider cannot run."""


class Emitter:
    """Task that publishes ``payload["topic"]`` with ``payload["data"]`` via oneiric.emit."""

    async def run(self, payload: Any = None) -> Any:
        return await oneiric.emit(payload["topic"], payload.get("data"))


class Caller:
    """Task that runs another task via oneiric.run_task and returns its result."""

    async def run(self, payload: Any = None) -> Any:
        return await oneiric.run_task(payload["task"], payload.get("payload"))


# -- events -------------------------------------------------------------------------------------
class Handler:
    """``handle(event)`` records it; data ``{"gate": g}`` sets gate ``<name>:g.started`` and
    waits for gate ``<name>:g``; data ``{"fail": msg}`` raises."""

    def __init__(self, name: str = "handler") -> None:
        self.name = name

    async def handle(self, event: Any) -> None:
        data = event.data
        RECEIVED.append((self.name, event.topic, data, event.id))
        if isinstance(data, dict):
            if "gate" in data:
                gate(f"{self.name}:{data['gate']}.started").set()
                await gate(f"{self.name}:{data['gate']}").wait()
            if "fail" in data:
                raise ValueError(data["fail"])

    def stop(self) -> None:
        LOG.append(f"{self.name}.stop")


class SyncHandler:
    def __init__(self, name: str = "synch") -> None:
        self.name = name

    def handle(self, event: Any) -> None:
        RECEIVED.append((self.name, event.topic, event.data, event.id))


class NoHandle:
    """An event provider without handle()."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings


class BlockingSyncService:
    """A plain (sync) service without stop_run(): run() blocks its worker thread until the
    test sets RELEASE. Records how many run() calls ever overlapped."""

    STARTED = threading.Event()
    RELEASE = threading.Event()
    active = 0
    max_active = 0
    lock = threading.Lock()

    def run(self) -> None:
        cls = BlockingSyncService
        with cls.lock:
            cls.active += 1
            cls.max_active = max(cls.max_active, cls.active)
        cls.STARTED.set()
        try:
            cls.RELEASE.wait(30)
        finally:
            with cls.lock:
                cls.active -= 1


class BlockingSyncHandler:
    """A plain handle() doing blocking work: holds its worker thread until RELEASE is set."""

    RELEASE = threading.Event()
    started = threading.Semaphore(0)

    def handle(self, event: Any) -> None:
        BlockingSyncHandler.started.release()
        BlockingSyncHandler.RELEASE.wait(30)


class FlakyHandler:
    """Fails the first ``fails`` tries of every event (or ``data["fails"]``), then records it;
    while its name is in
    BROKEN every try fails. TRIES counts tries per (name, event id)."""

    BROKEN: set[str] = set()
    TRIES: Counter[tuple[str, int]] = Counter()

    def __init__(self, name: str = "flaky", fails: int = 0) -> None:
        self.name = name
        self.fails = fails

    async def handle(self, event: Any) -> None:
        FlakyHandler.TRIES[(self.name, event.id)] += 1
        if self.name in FlakyHandler.BROKEN:
            raise RuntimeError(f"{self.name} is broken")
        fails = self.fails
        if isinstance(event.data, dict) and "fails" in event.data:
            fails = event.data["fails"]  # this event's own count
        if FlakyHandler.TRIES[(self.name, event.id)] <= fails:
            raise RuntimeError(f"{self.name} try {FlakyHandler.TRIES[(self.name, event.id)]}")
        RECEIVED.append((self.name, event.topic, event.data, event.id))


class FlakyTask:
    """Fails its first ``fails`` runs (per process); while its name is in BROKEN it always
    fails. COUNTS["<name>.run"] counts runs."""

    BROKEN: set[str] = set()

    def __init__(self, name: str = "flaky", fails: int = 0) -> None:
        self.name = name
        self.fails = fails

    async def run(self, payload: Any = None) -> Any:
        COUNTS[f"{self.name}.run"] += 1
        if self.name in FlakyTask.BROKEN or COUNTS[f"{self.name}.run"] <= self.fails:
            raise RuntimeError(f"{self.name} run {COUNTS[f'{self.name}.run']} failed")
        return {"by": self.name, "run": COUNTS[f"{self.name}.run"]}


class FileTask:
    """For a daemon in another process: appends ``<name>`` to the file ``log`` per run."""

    def __init__(self, name: str, log: str) -> None:
        self.name = name
        self.log = log

    async def run(self, payload: Any = None) -> Any:
        with open(self.log, "a") as fh:
            fh.write(f"{self.name}\n")
        return self.name


class SocketTask:
    """For a daemon in another process: each run connects to the Unix socket ``control``,
    sends ``started <name>``, and returns the line the test answers with."""

    def __init__(self, name: str, control: str) -> None:
        self.name = name
        self.control = control

    async def run(self, payload: Any = None) -> Any:
        stream = await anyio.connect_unix(self.control)
        async with stream:
            await stream.send(f"started {self.name}\n".encode())
            reply = b""
            while not reply.endswith(b"\n"):
                reply += await stream.receive()
        return reply.decode().strip()
