"""Issue 12 leftover: importing a component's module must not block the daemon's event loop.

A module that hangs (or is slow) at import used to be imported on the loop: the control socket,
the watchdog and every other key stopped with it. Now a module not yet imported is imported in
a worker thread within the activation timeout (oneiric/runtime/imports.py); an import that
overruns is an activation failure naming the module, later attempts wait for the import in
flight instead of blocking on its import lock, and an imported module takes the fast path.

The modules block on something the test controls: a fifo (the real daemon) or an event
(tests/import_gates.py, in-process), never on time.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import import_gates
from configs import component
from oneiric.control.client import ControlClient
from oneiric.errors import ComponentExit
from oneiric.runtime import imports
from suite_support import TESTS, VENV_BIN, Daemon, fresh_dir, running

HEAD = """
[daemon]
activation_timeout = "2s"
stop_timeout = "2s"
drain_timeout = "2s"
health_interval = "1h"
watch = false

[[component]]
domain = "adapter"
key = "cache"
provider = "memory"
factory = "oneiric.builtin.cache:MemoryCache"
"""


def gated(n: int) -> str:
    """The component whose module blocks at import; ``n`` makes each version a new candidate."""
    return f"""
[[component]]
domain = "adapter"
key = "gated"
provider = "slow"
factory = "hostile_import_gate:Slow"
settings = {{ n = {n} }}
"""


# -- the real daemon: a fifo holds the import ------------------------------------------------------


class Gate:
    """The fifos of tests/hostile_import_gate.py: ``importing`` (the module says it began),
    ``gate`` (the test lets it go) and ``done`` (the module says it ran to the end)."""

    def __init__(self, d: Path) -> None:
        os.mkfifo(d / "importing")
        os.mkfifo(d / "gate")
        os.mkfifo(d / "done")
        self.dir = d
        self.began = os.open(d / "importing", os.O_RDONLY | os.O_NONBLOCK)
        self.done = os.open(d / "done", os.O_RDONLY | os.O_NONBLOCK)

    def wait_began(self) -> float:
        ready, _, _ = select.select([self.began], [], [], 60)
        assert ready, "the module's import never began"
        os.read(self.began, 1)
        return time.monotonic()

    def open(self) -> None:
        """Let the module go, and wait until its code has run to the end."""
        # blocks until the importing module has the fifo open for reading (it has: it began)
        fd = os.open(self.dir / "gate", os.O_WRONLY)
        os.write(fd, b"go")
        os.close(fd)
        ready, _, _ = select.select([self.done], [], [], 60)
        assert ready and os.read(self.done, 1) == b"d", "the module never finished"

    def close(self) -> None:
        os.close(self.began)
        os.close(self.done)


@pytest.fixture
def gate_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Gate]]:
    with fresh_dir() as d:
        gate = Gate(d)
        monkeypatch.setenv("ONEIRIC_IMPORT_GATE", str(d))  # the daemon inherits it
        try:
            yield d, gate
        finally:
            gate.close()


def reload_in_thread(sock: str) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        with ControlClient(sock, timeout=120) as c:
            out["reply"] = c.call("reload")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def ping_while(thread: threading.Thread, c: ControlClient) -> int:
    """Ping the daemon on its own connection until ``thread`` ends (a real condition: the
    reload's reply); each ping must be answered (30 s each, however loaded the machine)."""
    pings = 0
    while thread.is_alive():
        assert c.call("ping")["state"] in {"running", "reloading"}
        pings += 1
    thread.join()
    return pings


def watchdog_pings(daemon: Daemon, start: float, end: float) -> int:
    return sum(1 for t, m in daemon.messages if start <= t <= end and "WATCHDOG=1" in m)


def test_a_module_that_blocks_at_import_never_blocks_the_daemon(
    gate_dir: tuple[Path, Gate],
) -> None:
    d, gate = gate_dir
    (d / "oneiricd.toml").write_text(HEAD)
    with running(d, watchdog_usec=400_000) as daemon, ControlClient(daemon.socket, timeout=30) as c:
        # 1. a reload brings the component in: its import hangs, the daemon does not
        (d / "oneiricd.toml").write_text(HEAD + gated(1))
        thread, out = reload_in_thread(daemon.socket)
        began = gate.wait_began()
        pings = ping_while(thread, c)
        ended = time.monotonic()
        error = out["reply"]["failed"]["adapter/gated"]
        assert "importing module 'hostile_import_gate' did not finish within 2s" in error, error
        assert pings > 0
        assert watchdog_pings(daemon, began, ended) > 0, "the watchdog starved"
        rows = {r["key"]: r for r in c.call("status")["components"]}
        assert rows["cache"]["lifecycle"] == "ready"
        # 2. another try while that import still hangs (holding the module's import lock): it
        # waits for the import in flight, within its own timeout, and the loop never blocks
        (d / "oneiricd.toml").write_text(HEAD + gated(2))
        thread, out = reload_in_thread(daemon.socket)
        assert ping_while(thread, c) > 0
        error = out["reply"]["failed"]["adapter/gated"]
        assert "did not finish within 2s (an import of it started" in error, error
        # 3. the module is let go: the next activation gets it (as the thread finishes, or
        # from sys.modules)
        gate.open()
        (d / "oneiricd.toml").write_text(HEAD + gated(3))
        assert c.call("reload")["failed"] == {}
        rows = {r["key"]: r for r in c.call("status")["components"]}
        assert rows["gated"]["lifecycle"] == "ready"
        gaps = daemon.watchdog_gaps()
        print(f"\nwatchdog max gap {max(gaps):.3f}s (interval 0.2s); {pings} pings in the hang")
        assert daemon.stop(timeout=90) == 0, daemon.stderr()[-2000:]


def test_a_hung_import_at_start_up_is_a_failed_key_and_is_named_at_exit(
    gate_dir: tuple[Path, Gate],
) -> None:
    d, gate = gate_dir
    (d / "oneiricd.toml").write_text(HEAD + gated(1))
    with running(d, watchdog_usec=400_000) as daemon:  # READY, although the import hangs
        gate.wait_began()
        with ControlClient(daemon.socket, timeout=30) as c:
            rows = {r["key"]: r for r in c.call("status")["components"]}
        assert rows["cache"]["lifecycle"] == "ready"
        assert rows["gated"]["lifecycle"] == "failed"
        code = daemon.stop(timeout=90)
        # the thread still importing cannot be stopped: exit 1, naming it
        assert code == 1, daemon.stderr()[-2000:]
        assert "oneiric import hostile_import_gate" in daemon.stderr()


def test_check_reports_a_module_that_hangs_at_import_instead_of_hanging(
    gate_dir: tuple[Path, Gate],
) -> None:
    d, gate = gate_dir
    other = component("adapter", "gated2", "slow", "hostile_import_gate:Slow")
    (d / "oneiricd.toml").write_text(HEAD + gated(1) + other)
    env = {**os.environ, "PYTHONPATH": str(TESTS), "ONEIRIC_CONFIG": str(d / "oneiricd.toml")}
    out = subprocess.run(
        [str(VENV_BIN / "oneiricd"), "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    gate.wait_began()  # it really was importing
    assert out.returncode == 78, (out.returncode, out.stderr)
    lines = [line for line in out.stderr.splitlines() if "hostile_import_gate:Slow" in line]
    assert len(lines) == 2, out.stderr
    assert "importing module 'hostile_import_gate' did not finish within 2s" in lines[0]
    assert "did not finish (see above)" in lines[1]


# -- in-process: events hold the import ------------------------------------------------------------


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh module (unique name) whose import blocks until its gate opens."""
    name = f"gated_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(
        "import import_gates\nimport_gates.enter(__name__)\n\n\nclass Thing:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield name
    finally:
        import_gates.open_all()  # no worker thread may stay blocked after the test


@pytest.mark.anyio
async def test_an_imported_module_takes_the_fast_path_without_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an imported module must not cost a thread hop")

    monkeypatch.setattr(anyio.to_thread, "run_sync", no_thread)
    from oneiric.builtin.cache import MemoryCache

    assert await imports.load_factory("oneiric.builtin.cache:MemoryCache", 1) is MemoryCache


@pytest.mark.anyio
async def test_one_import_in_flight_per_module_whoever_asks(module: str) -> None:
    spec = f"{module}:Thing"
    with pytest.raises(TimeoutError, match=f"importing module '{module}' did not finish"):
        await imports.load_factory(spec, 0.2)  # the gate is closed: it cannot finish
    assert import_gates.arrived(module).is_set()
    # the module is in sys.modules, half initialised, its import lock held by the abandoned
    # thread: a second caller must not take it, nor block on the lock, nor import it again
    with pytest.raises(TimeoutError, match="an import of it started"):
        await imports.load_factory(spec, 0.2)
    results: list[Any] = []

    async def load() -> None:
        results.append(await imports.load_factory(spec, 60))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(load)
            tg.start_soon(load)
            await anyio.wait_all_tasks_blocked()
            import_gates.open_gate(module)
    assert results == [sys.modules[module].Thing] * 2
    assert import_gates.runs[module] == 1
    assert module not in imports._pending


@pytest.mark.anyio
async def test_a_failed_import_is_reported_and_tried_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"broken_{uuid.uuid4().hex}"
    path = tmp_path / f"{name}.py"
    path.write_text("raise RuntimeError('no database')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="no database"):
        await imports.load_factory(f"{name}:Thing", 30)
    path.write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(ComponentExit, match=name):  # sys.exit() at import, in the thread
        await imports.load_factory(f"{name}:Thing", 30)
    path.write_text("class Thing:\n    pass\n")
    assert (await imports.load_factory(f"{name}:Thing", 30)).__name__ == "Thing"
