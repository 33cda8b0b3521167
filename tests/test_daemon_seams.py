"""The daemon's collaborators on their own: the control handler, the reloader and the health
reporter built from real parts (a real runtime, real config files, a real notify socket, the
real health file) without a Daemon, which is how they depend on each other and on nothing
above; and the daemon wiring them (the running config's stop_timeout bounds the stop)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from configs import CACHE_A_B, SELECT_CACHE_A, daemon
from harness import make_dir, running_daemon
from oneiric.config import load_config
from oneiric.control.peers import Peer
from oneiric.control.protocol import (
    EmitRequest,
    HealthRequest,
    PingRequest,
    ReloadRequest,
    Request,
    RunRequest,
    StatusRequest,
)
from oneiric.control.replies import PingReply, ReloadResult
from oneiric.errors import ConfigError, NotFound, StartupError, Unavailable
from oneiric.handlers import ControlHandler
from oneiric.reload import Reloader, timeouts_of
from oneiric.runtime.core import Runtime
from oneiric.runtime.health import HealthSnapshot, decode_snapshot, read_health
from oneiric.runtime.intent import IntentStore
from oneiric.runtime.reporter import HealthReporter, LoadedConfig
from oneiric.systemd import Notifier
from waiting import wait_until

pytestmark = pytest.mark.anyio
both = pytest.mark.both_backends  # the parts alone run on asyncio and trio

CONFIG = daemon(stop_timeout="5s", watch=False) + CACHE_A_B + SELECT_CACHE_A

PEER = Peer(pid=os.getpid(), uid=os.getuid(), gid=os.getgid(), role="admin")


@dataclass
class Parts:
    dir: Path
    rt: Runtime
    health: HealthReporter
    reloader: Reloader
    handler: ControlHandler
    systemd: socket.socket  # stands in for systemd: receives what the notifier sends
    statuses: list[str]  # the reporter's STATUS= lines

    def notices(self) -> list[str]:
        """Every datagram sent so far."""
        out = []
        while True:
            try:
                out.append(self.systemd.recv(65536).decode())
            except BlockingIOError:
                return out


@asynccontextmanager
async def parts(text: str = CONFIG) -> AsyncIterator[Parts]:
    d = make_dir()
    (d / "oneiricd.toml").write_text(text)
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(d / "notify"))
    systemd.setblocking(False)
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(d / "notify")})
    config = load_config(d / "oneiricd.toml")
    loaded = LoadedConfig(config, loaded_at=time.time())
    store = IntentStore(d / "intent.json")
    store.load()
    statuses: list[str] = []
    try:
        async with Runtime(intent=store, timeouts=timeouts_of(config)) as rt:
            health = HealthReporter(
                rt,
                loaded,
                path=str(d / "health.json"),
                started_at=time.time(),
                on_status=statuses.append,
            )
            reloader = Reloader(
                rt, loaded, config_path=config.path, health=health, notifier=notifier
            )
            await reloader.activate()
            handler = ControlHandler(rt, reloader, health)
            yield Parts(d, rt, health, reloader, handler, systemd, statuses)
    finally:
        notifier.close()
        systemd.close()


async def ask(p: Parts, request: Request) -> object:
    events: list[object] = []

    async def emit(event: object) -> None:
        events.append(event)

    return await p.handler(request, PEER, emit)


@both
async def test_the_handler_answers_from_its_collaborators() -> None:
    async with parts() as p:
        ping = await ask(p, PingRequest(id=1))
        assert isinstance(ping, PingReply) and ping.state == "starting"  # the reporter's state
        p.health.set_state("running")
        ping = await ask(p, PingRequest(id=2))
        assert isinstance(ping, PingReply) and ping.state == "running"

        reply = await ask(p, HealthRequest(id=3))
        assert isinstance(reply, HealthSnapshot)
        # its rows are the runtime's cached JSON: read it as a client does
        snap = decode_snapshot(msgspec.json.encode(reply))
        assert [(c.key, c.provider) for c in snap.components] == [("cache", "a")]
        with pytest.raises(NotFound):
            await ask(p, StatusRequest(id=4, domain="adapter", key="nope"))

        (p.dir / "oneiricd.toml").write_text(CONFIG.replace('cache = "a"', 'cache = "b"'))
        result = await ask(p, ReloadRequest(id=5))
        assert isinstance(result, ReloadResult) and result.changed == ["adapter/cache"]
        assert p.rt.components()[0].provider == "b"


@both
async def test_run_and_emit_say_still_starting_until_the_domains_are_handed_over() -> None:
    async with parts() as p:
        with pytest.raises(Unavailable, match="still starting"):
            await ask(p, RunRequest(id=1, domain="task", key="t"))
        with pytest.raises(Unavailable, match="still starting"):
            await ask(p, EmitRequest(id=2, topic="a.b"))


@both
async def test_a_reload_says_reloading_then_ready_and_restores_the_state() -> None:
    async with parts() as p:
        p.health.set_state("running")
        (p.dir / "oneiricd.toml").write_text(CONFIG.replace('cache = "a"', 'cache = "b"'))
        await p.reloader.reload(trigger="test")
        sent = p.notices()
        assert sent[0].startswith("RELOADING=1")
        assert sent[-1].startswith("READY=1") and "STATUS=running: 1/1 components ready" in sent[-1]
        assert p.health.state == "running"


@both
async def test_a_reload_of_unchanged_files_skips_the_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Byte for byte the running config's files: no parse, no re-ranking; any byte changed,
    or a failed reload before, and it is parsed again."""
    import oneiric.reload as reload_mod

    parsed: list[str] = []
    real = reload_mod.load_with_plugins

    def counting(path: str, **kw: Any) -> Any:
        parsed.append(path)
        return real(path, **kw)

    monkeypatch.setattr(reload_mod, "load_with_plugins", counting)
    async with parts() as p:
        (p.dir / "oneiricd.toml").write_text(CONFIG.replace('cache = "a"', 'cache = "b"'))
        await p.reloader.reload(trigger="test")
        assert len(parsed) == 1 and p.rt.components()[0].provider == "b"
        result = await p.reloader.reload(trigger="test")  # nothing written since
        assert len(parsed) == 1 and result.changed == [] and result.outcomes == {}
        (p.dir / "oneiricd.toml").write_text(CONFIG + "\nbogus = 1\n")
        with pytest.raises(ConfigError):
            await p.reloader.reload(trigger="test")
        (p.dir / "oneiricd.toml").write_text(CONFIG.replace('cache = "a"', 'cache = "b"'))
        await p.reloader.reload(trigger="test")  # the same bytes as running, but it failed
        assert len(parsed) == 3 and p.reloader.error is None


@both
async def test_a_broken_config_is_kept_as_the_error_and_the_running_one_serves() -> None:
    async with parts() as p:
        p.health.set_state("running")
        (p.dir / "oneiricd.toml").write_text(CONFIG + "\nbogus = 1\n")
        with pytest.raises(ConfigError, match="bogus"):
            await p.reloader.reload(trigger="test")
        assert p.reloader.error is not None and "bogus" in p.reloader.error
        assert p.health.snapshot().config.last_error == p.reloader.error
        assert "config error (running the previous config)" in p.health.status_line()
        assert p.rt.components()[0].provider == "a"
        assert p.health.state == "running"


@both
async def test_after_close_a_reload_still_applies_but_never_says_ready() -> None:
    async with parts() as p:
        p.health.set_state("stopping")
        p.reloader.close()  # the daemon sent STOPPING=1
        (p.dir / "oneiricd.toml").write_text(CONFIG.replace('cache = "a"', 'cache = "b"'))
        await p.reloader.reload(trigger="test")
        assert p.rt.components()[0].provider == "b"
        assert p.notices() == []
        assert p.health.state == "stopping"


@both
async def test_the_reporter_writes_on_change_and_its_final_word_is_stopped() -> None:
    async with parts() as p, anyio.create_task_group() as tg:
        await tg.start(p.health.run)
        path = str(p.dir / "health.json")
        assert read_health(path).state == "starting"
        p.health.set_state("running")
        await wait_until(lambda: read_health(path).state == "running", p.health.written)
        assert p.statuses == ["running: 1/1 components ready"]  # STATUS= only while running
        tg.cancel_scope.cancel()
    await p.health.write_final()
    assert read_health(path).state == "stopped"


@both
async def test_while_starting_the_reporter_writes_on_heartbeats_and_at_ready_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Start-up changes every key in turn: the file is not rewritten for each (at 10,000 keys
    that rewrote a 5 MB file over and over and delayed READY); the state change writes."""
    import oneiric.runtime.reporter as reporter

    writes: list[str] = []  # the state of each snapshot gathered for the file
    real = HealthReporter._snapshot_for_file

    async def counted(self: HealthReporter) -> tuple[HealthSnapshot, list[Any]]:
        writes.append(self.state)  # on the loop, before the file is written in a thread
        return await real(self)

    monkeypatch.setattr(HealthReporter, "_snapshot_for_file", counted)
    monkeypatch.setattr(reporter, "HEALTH_COALESCE", 0)  # a change is gathered at once
    async with parts() as p, anyio.create_task_group() as tg:
        await tg.start(p.health.run)
        assert writes == ["starting"]
        for _ in range(5):  # keys activating
            p.rt.key_changed(p.rt.state("adapter", "cache"))
            await anyio.wait_all_tasks_blocked()
        assert writes == ["starting"]
        p.health.set_state("running")
        await wait_until(lambda: writes[-1:] == ["running"], p.health.written)
        p.rt.key_changed(p.rt.state("adapter", "cache"))  # running: every change is written
        await wait_until(lambda: len(writes) == 3, p.health.written)
        tg.cancel_scope.cancel()


@both
async def test_a_first_health_write_that_fails_is_a_startup_error() -> None:
    async with parts() as p:
        (p.dir / "health.json").mkdir()  # cannot be replaced by a file
        with pytest.raises(StartupError, match="cannot write the health file") as err:
            await p.health.run(task_status=anyio.TASK_STATUS_IGNORED)
        assert err.value.exit_status == 78
        await p.health.write_final()  # never written: nothing to finalise, no error


async def test_the_stop_waits_as_long_as_the_running_configs_stop_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """stop_timeout is a live setting: a reload that lowers it bounds the next stop's wait for
    in-flight work (it used to be the value the daemon started with)."""
    caplog.set_level(logging.WARNING, logger="oneiric.daemon")
    long = CONFIG.replace('stop_timeout = "5s"', 'stop_timeout = "1h"')
    held, release = anyio.Event(), anyio.Event()
    with anyio.fail_after(30):  # a 1 h budget would hang here
        async with anyio.create_task_group() as outer:
            async with running_daemon(long) as h:
                h.write_config(long.replace('stop_timeout = "1h"', 'stop_timeout = "50ms"'))
                await h.call("reload")

                async def hold() -> None:
                    async with h.rt.use("adapter", "cache"):
                        held.set()
                        await release.wait()

                outer.start_soon(hold)
                await held.wait()
            release.set()
    assert "drain budget of 0.05s passed" in caplog.text


async def test_oneiricd_pauses_the_collector_until_ready_then_freezes_the_startup_graph() -> None:
    """``own_process`` (oneiricd's own process): no cyclic collection walks the start-up graph
    while it is built; at READY it is frozen out of later collections and the collector runs
    again. A plain Daemon (in a test process, embedded) leaves the collector alone."""
    import gc

    from oneiric.daemon import Daemon, Options

    d = make_dir()
    (d / "oneiricd.toml").write_text(CONFIG)
    options = Options(
        config=str(d / "oneiricd.toml"),
        socket=str(d / "s.sock"),
        state_dir=str(d / "state"),
        health_file=str(d / "health.json"),
    )
    frozen = gc.get_freeze_count()
    try:
        plain = Daemon(options, environ={})
        plain.load()
        assert gc.isenabled()
        daemon = Daemon(options, environ={}, own_process=True)
        daemon.load()
        assert not gc.isenabled()
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            assert gc.isenabled() and gc.get_freeze_count() > frozen
            daemon.request_stop()
    finally:
        gc.unfreeze()  # give the test process its collector back as it was
        gc.enable()


async def test_cyclic_garbage_made_while_starting_is_collected_not_frozen() -> None:
    """With the collector off until READY, what start-up throws away in a cycle (a failed
    activation's exception and traceback with the frame's locals, a component's scratch graph)
    is still there at READY. It must be collected then, not frozen with the live graph: frozen
    objects are never collected again, so it would stay for the daemon's whole life."""
    import gc
    import weakref

    from oneiric.daemon import Daemon, Options

    d = make_dir()
    (d / "oneiricd.toml").write_text(CONFIG)
    options = Options(
        config=str(d / "oneiricd.toml"),
        socket=str(d / "s.sock"),
        state_dir=str(d / "state"),
        health_file=str(d / "health.json"),
    )

    class Scratch:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the cyclic collector can free it

    freed: list[bool] = []
    try:
        daemon = Daemon(options, environ={}, own_process=True)
        daemon.load()
        assert not gc.isenabled()
        weakref.finalize(Scratch(), freed.append, True)  # garbage made while starting
        assert not freed
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            gc.collect()  # a later collection: frozen objects are out of its reach
            assert freed == [True]
            daemon.request_stop()
    finally:
        gc.unfreeze()  # give the test process its collector back as it was
        gc.enable()


@pytest.mark.parametrize("keys", [3, 101])
async def test_startup_logs_each_activation_only_for_a_small_config(
    caplog: pytest.LogCaptureFixture, keys: int
) -> None:
    """Up to ACTIVATION_LINES [[component]] entries each activation is an INFO line; past
    it (10,000 lines cost ~0.4 s of start-up) they are DEBUG; a summary line either way."""
    from oneiric.daemon import ACTIVATION_LINES

    assert 3 <= ACTIVATION_LINES < 101
    caplog.set_level(logging.INFO)
    text = "[daemon]\nwatch = false\n" + "".join(
        f'[[component]]\ndomain = "adapter"\nkey = "k{i}"\nprovider = "m"\n'
        'factory = "oneiric.builtin.cache:MemoryCache"\n'
        for i in range(keys)
    )
    async with running_daemon(text):
        pass
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    per_key = [m for m in lines if "activated provider 'm'" in m]
    assert len(per_key) == (keys if keys <= ACTIVATION_LINES else 0)
    assert sum(f"activated {keys} of {keys} component(s) in" in m for m in lines) == 1
