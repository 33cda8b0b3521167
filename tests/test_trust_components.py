"""Issue 12 regressions, hostile components and state (in-process daemon, real socket): an
async factory that never returns (defect 5), ``sys.exit()``/``KeyboardInterrupt`` from
component code (6), a deeply nested intent file (13), a full disk under the state dir (14)."""

from __future__ import annotations

import errno
import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

import hostile_components as hc
from harness import Harness, make_dir, running_daemon
from oneiric.control.client import RemoteError
from oneiric.daemon import Daemon, Options, StartupError
from oneiric.runtime.intent import IntentStore, NoSpace

pytestmark = pytest.mark.anyio

VENV_BIN = Path(sys.executable).parent
TESTS = Path(__file__).parent

HEAD = """
[daemon]
drain_timeout = "5s"
stop_timeout = "5s"
activation_timeout = "{activation}"
watch = false
"""


def comp(domain: str, key: str, provider: str, factory: str, extra: str = "") -> str:
    return f"""
[[component]]
domain = "{domain}"
key = "{key}"
provider = "{provider}"
factory = "{factory}"
{extra}
"""


GOOD = comp("adapter", "cache", "memory", "oneiric.builtin.cache:MemoryCache")
HANGING = comp("adapter", "hang", "never", "hostile_components:never_returns")


def lifecycle(h: Harness, domain: str, key: str) -> str:
    return h.rt.component_health(h.rt.state(domain, key)).lifecycle


# -- defect 5: an async factory that never returns ------------------------------------------------


async def test_a_factory_that_never_returns_is_bounded_by_activation_timeout() -> None:
    cfg = HEAD.format(activation="0.5s") + GOOD + HANGING
    with anyio.fail_after(60):  # without the bound, READY never comes
        async with running_daemon(cfg) as h:
            st = h.rt.state("adapter", "hang")
            assert st.lifecycle == "failed"
            assert "construction did not finish within 0.5s" in (st.last_error or "")
            assert lifecycle(h, "adapter", "cache") == "ready"
            assert (await h.call("ping"))["state"] == "running"


async def test_reload_with_a_hanging_factory_finishes_and_later_reloads_and_stop_work() -> None:
    cfg = HEAD.format(activation="0.5s") + GOOD
    with anyio.fail_after(60):
        async with running_daemon(cfg) as h:
            h.write_config(cfg + HANGING)
            first = await h.call("reload")  # would wedge forever before the fix
            assert first["failed"].keys() == {"adapter/hang"}
            assert "did not finish within" in first["failed"]["adapter/hang"]
            h.write_config(cfg)
            second = await h.call("reload")  # the reload lock is free again
            assert "adapter/hang" in second["changed"]
            h.write_config(cfg + HANGING)
            hc.entered("never_returns").clear()
            async with anyio.create_task_group() as tg:
                assert h.daemon.reloader is not None
                tg.start_soon(functools.partial(h.daemon.reloader.reload, trigger="t"))
                await anyio.to_thread.run_sync(hc.entered("never_returns").wait, 30)
                h.daemon.request_stop()  # ...while SIGTERM arrives: stop must still finish
        # leaving the context means the daemon stopped: not "draining" forever
        assert h.daemon.health is not None and h.daemon.health.state == "stopped"


# -- defect 6: SystemExit / KeyboardInterrupt from component code -----------------------------


LEAVERS = (
    comp("task", "exit0", "x", "hostile_components:Leaver", 'settings = { how = "exit0" }')
    + comp(
        "task",
        "sync_exit",
        "x",
        "hostile_components:Leaver",
        'settings = { how = "exit3", sync = true }',
    )
    + comp("task", "ctrlc", "x", "hostile_components:Leaver", 'settings = { how = "interrupt" }')
    + comp(
        "event",
        "handler",
        "x",
        "hostile_components:Leaver",
        'topics = ["boom"]\nsettings = { how = "exit0", where = "handle" }',
    )
    + comp(
        "event",
        "sync_handler",
        "x",
        "hostile_components:Leaver",
        'topics = ["boom"]\nsettings = { how = "interrupt", where = "handle", sync = true }',
    )
    + comp(
        "adapter",
        "gate",
        "x",
        "hostile_components:Leaver",
        'settings = { how = "exit0", where = "health" }',
    )
    + comp("adapter", "import", "x", "hostile_exit_at_import:Never")
)


async def test_sys_exit_in_component_code_is_that_components_failure() -> None:
    async with running_daemon(HEAD.format(activation="10s") + GOOD + LEAVERS) as h:
        for key, how in (("exit0", "sys.exit(0)"), ("sync_exit", "sys.exit(3)")):
            with pytest.raises(RemoteError) as err:
                await h.call("run", domain="task", key=key)
            assert err.value.code == "conflict" and how in err.value.message, err.value
        with pytest.raises(RemoteError, match="KeyboardInterrupt"):
            await h.call("run", domain="task", key="ctrlc")
        emitted = await h.call("emit", topic="boom")
        assert sorted(emitted["delivered"]) == ["event/handler", "event/sync_handler"]

        def delivered_and_failed() -> bool:
            return all(
                h.rt.component_health(h.rt.state("event", k)).failed_deliveries == 1
                for k in ("handler", "sync_handler")
            )

        await h.wait_for(delivered_and_failed)
        gate = h.rt.state("adapter", "gate")
        assert gate.lifecycle == "failed" and "sys.exit(0)" in (gate.last_error or "")
        imp = h.rt.state("adapter", "import")
        assert imp.lifecycle == "failed" and "importing" in (imp.last_error or "")
        # the daemon never noticed: it is running and serving
        assert (await h.call("ping"))["state"] == "running"
        assert lifecycle(h, "adapter", "cache") == "ready"


async def test_sys_exit_from_periodic_health_marks_the_key_degraded() -> None:
    from oneiric.runtime.checks import check_health

    ok, err = await check_health(hc.Leaver(how="exit0", where="health"), 5)
    assert not ok and "sys.exit(0)" in (err or "")


def test_check_reports_a_factory_module_that_exits_at_import() -> None:
    d = make_dir()
    (d / "oneiricd.toml").write_text(
        HEAD.format(activation="1s") + comp("adapter", "x", "x", "hostile_exit_at_import:Never")
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS), "ONEIRIC_CONFIG": str(d / "oneiricd.toml")}
    out = subprocess.run(
        [str(VENV_BIN / "oneiricd"), "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 78, (out.returncode, out.stderr)
    assert "hostile_exit_at_import:Never" in out.stderr and "sys.exit(0)" in out.stderr


# -- defect 13: deeply nested unknown field in intent.json ------------------------------------


def test_deeply_nested_intent_is_a_config_error(tmp_path: Path) -> None:
    from oneiric.errors import ConfigError

    path = tmp_path / "intent.json"
    path.write_bytes(b'{"schema":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(ConfigError, match="nested too deeply"):
        IntentStore(path).load()


async def test_daemon_exits_78_on_a_deeply_nested_intent_file() -> None:
    d = make_dir()
    (d / "oneiricd.toml").write_text(HEAD.format(activation="1s") + GOOD)
    (d / "state").mkdir()
    (d / "state" / "intent.json").write_bytes(b'{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}")
    daemon = Daemon(
        Options(
            config=str(d / "oneiricd.toml"),
            socket=str(d / "s.sock"),
            state_dir=str(d / "state"),
            health_file=str(d / "health.json"),
        ),
        environ={},
    )
    with pytest.raises(StartupError) as exc:
        await daemon.run()
    assert exc.value.exit_status == 78 and "nested too deeply" in str(exc.value)


# -- defect 14: the state directory's file system is full -------------------------------------


@pytest.fixture
def tiny_state() -> Any:
    """A daemon directory whose ``state`` is a real 256 KiB tmpfs: writes beyond it fail with
    ENOSPC, like a full disk."""
    d = make_dir()
    (d / "state").mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d / "state")], check=True
    )
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d / "state")], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


async def test_disk_full_is_its_own_clear_error(tiny_state: Path) -> None:
    cfg = HEAD.format(activation="10s") + GOOD
    (tiny_state / "oneiricd.toml").write_text(cfg)
    async with running_daemon(cfg, directory=tiny_state) as h:
        filler = fill(h.state_dir)
        with pytest.raises(RemoteError) as err:
            await h.call("pause", domain="adapter", key="cache", note="ops")
        assert err.value.code == "unavailable", err.value
        assert "no space left" in err.value.message and str(h.state_dir) in err.value.message
        assert h.rt.intent.effective("adapter", "cache").state == "active"  # rolled back
        with pytest.raises(NoSpace):
            await h.rt.intent.pause("adapter", None, uid=0, pid=1)
        filler.unlink()
        await h.call("pause", domain="adapter", key="cache")  # room again: it works
        assert h.rt.intent.effective("adapter", "cache").state == "paused"
