"""Run a real Daemon in-process for tests: real config file, real Unix socket, real health file.

async with running_daemon(CONFIG) as h:
    result = await h.call("pause", domain="adapter", key="cache")
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from oneiric.control.client import ControlClient
from oneiric.daemon import Daemon, Options
from oneiric.runtime.core import Runtime
from oneiric.runtime.health import read_health
from waiting import wait_until


@dataclass
class Harness:
    daemon: Daemon
    dir: Path
    config: Path
    socket: str
    health_file: Path
    state_dir: Path

    @property
    def rt(self) -> Runtime:
        assert self.daemon.runtime is not None
        return self.daemon.runtime

    def client(self, timeout: float | None = 10.0) -> ControlClient:
        return ControlClient(self.socket, timeout=timeout)

    async def call(self, op: str, **args: Any) -> Any:
        def _call() -> Any:
            with self.client() as c:
                return c.call(op, **args)

        return await anyio.to_thread.run_sync(_call)

    async def stream(self, op: str, on_event: Callable[[Any], None], **args: Any) -> Any:
        def _call() -> Any:
            with self.client(timeout=None) as c:
                return c.stream(op, on_event, **args)

        return await anyio.to_thread.run_sync(_call)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait (on runtime change events, never on time) until ``predicate()`` holds."""
        await wait_until(predicate, self.rt, timeout=timeout)

    @property
    def health_writes(self) -> Callable[[], Awaitable[None]]:
        """A pulse for :func:`waiting.wait_until`: returns after the next health-file write."""
        return self.daemon.health_written

    async def wait_health(self, predicate: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        """Wait for health-file writes until ``predicate(snapshot)`` holds; return it."""
        seen: list[Any] = []

        def written() -> bool:
            try:
                snap = read_health(str(self.health_file))
            except (FileNotFoundError, ValueError):
                return False
            if predicate(snap):
                seen.append(snap)
                return True
            return False

        await wait_until(written, self.health_writes, timeout=timeout)
        return seen[-1]

    def write_config(self, text: str, name: str | None = None) -> Path:
        path = self.config if name is None else self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


MADE: list[Path] = []  # removed at the end of the session (tests/conftest.py)


def make_dir() -> Path:
    """A short directory (Unix socket paths are limited to 107 bytes), removed after the run."""
    path = Path(tempfile.mkdtemp(prefix="on", dir="/tmp"))
    MADE.append(path)
    return path


@asynccontextmanager
async def running_daemon(
    config_text: str,
    *,
    directory: Path | None = None,
    environ: dict[str, str] | None = None,
) -> AsyncIterator[Harness]:
    d = directory or make_dir()
    config = d / "oneiricd.toml"
    if not config.exists():
        config.write_text(config_text)
    h = Harness(
        daemon=Daemon(
            Options(
                config=str(config),
                socket=str(d / "s.sock"),
                state_dir=str(d / "state"),
                health_file=str(d / "health.json"),
            ),
            environ=environ or {},
        ),
        dir=d,
        config=config,
        socket=str(d / "s.sock"),
        health_file=d / "health.json",
        state_dir=d / "state",
    )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(h.daemon.run)
            try:
                yield h
            finally:
                h.daemon.request_stop()
    finally:
        if directory is None:
            shutil.rmtree(d, ignore_errors=True)
