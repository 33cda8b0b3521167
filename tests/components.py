"""Components written for the tests: each behaviour is switched by a setting, and anything that
blocks waits on an ``anyio.Event`` the test controls through :data:`GATES`."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import anyio

GATES: dict[str, anyio.Event] = {}
CALLS: Counter[str] = Counter()
LIVE: set[str] = set()  # names of constructed-but-not-stopped instances
ERRORS: list[str] = []
FAIL_START: set[str] = set()  # names of Flaky instances whose start() fails right now


def gate(name: str) -> anyio.Event:
    ev = GATES.get(name)
    if ev is None:
        ev = GATES[name] = anyio.Event()
    return ev


def reset() -> None:
    GATES.clear()
    CALLS.clear()
    LIVE.clear()
    ERRORS.clear()
    FAIL_START.clear()
    HANDOFFS.clear()


class Thing:
    """Async component. Settings: name, fail ('init'|'start'|'health'|'health_raise'),
    block ('start'|'health'|'stop': waits on gate '<name>.<stage>'), value."""

    def __init__(self, name: str = "thing", fail: str = "", block: str = "", value: Any = None):
        if fail == "init":
            raise RuntimeError(f"{name} refuses to construct")
        self.name, self.fail, self.block, self.value = name, fail, block, value
        self.stopped = 0
        CALLS[f"{name}.init"] += 1
        LIVE.add(name)

    async def start(self) -> None:
        CALLS[f"{self.name}.start"] += 1
        gate(f"{self.name}.starting").set()
        if self.block == "start":
            await gate(f"{self.name}.start").wait()
        if self.fail == "start":
            raise RuntimeError(f"{self.name} cannot start")

    async def health(self) -> bool:
        CALLS[f"{self.name}.health"] += 1
        if self.block == "health":
            await gate(f"{self.name}.health").wait()
        if self.fail == "health_raise":
            raise RuntimeError("probe exploded")
        return self.fail != "health"

    async def stop(self) -> None:
        CALLS[f"{self.name}.stop"] += 1
        self.stopped += 1
        if self.stopped > 1:
            ERRORS.append(f"{self.name} stopped twice")
        if self.block == "stop":
            await gate(f"{self.name}.stop").wait()
        LIVE.discard(self.name)


class SyncThing:
    """Same idea with plain methods."""

    def __init__(self, name: str = "sync", healthy: bool = True) -> None:
        self.name, self.healthy = name, healthy
        CALLS[f"{name}.init"] += 1
        LIVE.add(name)

    def start(self) -> None:
        CALLS[f"{self.name}.start"] += 1

    def health(self) -> bool:
        return self.healthy

    def stop(self) -> None:
        CALLS[f"{self.name}.stop"] += 1
        LIVE.discard(self.name)


class Bare:
    """No lifecycle methods at all."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings


def not_callable_factory() -> None:  # pragma: no cover - referenced by path only
    return None


NOT_CALLABLE = 42


class LeaseHolder:
    """Holds leases on ``target`` ("domain/key") for a test running the daemon in another
    process. Listens on the Unix socket ``control``: each connection takes one lease and answers
    "held\\n" once it holds it; the lease ends when the client sends anything or hangs up."""

    def __init__(self, target: str, control: str) -> None:
        self.target = tuple(target.split("/", 1))
        self.control = control
        self._listener: Any = None

    async def start(self) -> None:
        import os

        from oneiric.runtime.core import current_runtime

        rt = current_runtime()
        if os.path.exists(self.control):
            os.unlink(self.control)
        self._listener = await anyio.create_unix_listener(self.control)
        domain, key = self.target

        async def serve(stream: Any) -> None:
            async with stream:
                async with rt.use(domain, key):
                    await stream.send(b"held\n")
                    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                        await stream.receive()

        self._scope = anyio.CancelScope()

        async def accept_loop() -> None:
            with self._scope:
                async with self._listener:
                    await self._listener.serve(serve)

        rt.task_group.start_soon(accept_loop)

    async def stop(self) -> None:
        self._scope.cancel()


class Flaky(Thing):
    """Fails start() while its name is in FAIL_START: the same candidate can fail, then work."""

    async def start(self) -> None:
        await super().start()
        if self.name in FAIL_START:
            raise RuntimeError(f"{self.name}: backend down")


HANDOFFS: list[tuple[str, str, int]] = []  # (new, old, old's stop count when after_swap ran)


class Hooked(Thing):
    """Swap hooks. Setting ``veto``: "raise" / "false" make before_swap() refuse, "block"
    makes it wait on gate '<name>.before_swap' (never set: the timeout decides); ``after``:
    "raise" makes after_swap() fail. after_swap records (new, old, old.stopped) in HANDOFFS."""

    def __init__(self, name: str = "hooked", veto: str = "", after: str = "") -> None:
        super().__init__(name=name)
        self.veto, self.after = veto, after

    async def before_swap(self, new: Any) -> bool:
        CALLS[f"{self.name}.before_swap"] += 1
        if self.veto == "raise":
            raise RuntimeError(f"{self.name} is mid-transaction")
        if self.veto == "block":
            await gate(f"{self.name}.before_swap").wait()
        return self.veto != "false"

    def after_swap(self, old: Any) -> None:
        HANDOFFS.append((self.name, old.name, old.stopped))
        if self.after == "raise":
            raise RuntimeError("could not copy the warm cache")
