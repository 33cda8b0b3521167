"""Components that attack the daemon from inside: ``sys.exit()`` wherever component code runs,
factories that never return, threads that never end, code that blocks the event loop.

Each behaviour is picked by a setting; anything a test waits for is a ``threading.Event`` (set
from whichever thread the component code runs in) or a file the test can poll in another
process."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import anyio

ENTERED: dict[str, threading.Event] = {}


def entered(name: str) -> threading.Event:
    ev = ENTERED.get(name)
    if ev is None:
        ev = ENTERED[name] = threading.Event()
    return ev


def _mark(path: str) -> None:
    if path:
        with open(path, "w") as fh:
            fh.write(str(os.getpid()))


def _leave(how: str) -> None:
    if how == "exit0":
        sys.exit(0)
    if how == "exit3":
        sys.exit(3)
    if how == "interrupt":
        raise KeyboardInterrupt
    raise AssertionError(f"unknown way to leave: {how}")


async def never_returns(**settings: Any) -> Any:  # an async factory that hangs forever
    entered("never_returns").set()
    await anyio.sleep_forever()


class Leaver:
    """Leaves with ``how`` (exit0 | exit3 | interrupt) from ``where``: run | handle | health |
    start | stop. ``sync`` picks plain methods (they run in a worker thread for run/handle)."""

    def __init__(self, how: str = "exit0", where: str = "run", sync: bool = False) -> None:
        self.how, self.where, self.sync = how, where, sync

    def _maybe(self, where: str) -> None:
        if self.where == where:
            _leave(self.how)

    async def start(self) -> None:
        self._maybe("start")

    async def health(self) -> bool:
        self._maybe("health")
        return True

    async def stop(self) -> None:
        self._maybe("stop")

    def run(self, payload: Any = None) -> Any:
        if self.sync:
            self._maybe("run")
            return "ran"
        return self._arun()

    async def _arun(self) -> str:
        self._maybe("run")
        return "ran"

    def handle(self, event: Any) -> Any:
        if self.sync:
            self._maybe("handle")
            return None
        return self._ahandle()

    async def _ahandle(self) -> None:
        self._maybe("handle")


class StubbornService:
    """A plain service ``run()`` with no ``stop_run()``: it blocks its worker thread forever
    (it can only be abandoned). ``mark``: a file written once run() has started."""

    def __init__(self, mark: str = "") -> None:
        self.mark = mark

    def run(self) -> None:
        _mark(self.mark)
        entered("stubborn").set()
        threading.Event().wait()


class ThreadLeaker:
    """start() starts a non-daemon thread that never ends (named ``leaked-by-component``)."""

    def __init__(self, mark: str = "") -> None:
        self.mark = mark

    def start(self) -> None:
        threading.Thread(
            target=threading.Event().wait, name="leaked-by-component", daemon=False
        ).start()
        _mark(self.mark)


class LoopBlocker:
    """A service whose async run() blocks the event loop (wrong on purpose) while a test holds
    it: ``fifo`` is a named pipe; the byte ``b`` makes run() write ``B`` to the pipe ``ack``
    (the test knows the loop is now blocked) and do a *blocking* read on the loop until the
    next byte arrives. The watchdog (pinged from the loop) must notice the gap."""

    def __init__(self, fifo: str, ack: str = "") -> None:
        self.fifo, self.ack = fifo, ack

    async def run(self) -> None:
        fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)  # RDWR: never EOF, no writer needed
        try:
            while True:
                await anyio.wait_readable(fd)
                if os.read(fd, 1) == b"b":
                    if self.ack:
                        _mark(self.ack)
                    os.set_blocking(fd, True)
                    os.read(fd, 1)  # blocks the whole loop until the test writes again
                    os.set_blocking(fd, False)
        finally:
            os.close(fd)


class HangsWhileFlagged:
    """start() hangs (after writing to ``mark``, e.g. a FIFO the test reads) while the file
    ``flag`` exists, and fails at once otherwise: a swap the test can crash the daemon in."""

    def __init__(self, flag: str, mark: str = "") -> None:
        self.flag, self.mark = flag, mark

    async def start(self) -> None:
        if os.path.exists(self.flag):
            _mark(self.mark)
            await anyio.sleep_forever()
        raise RuntimeError("backend down")
