"""oneiricd's orchestrator: one root task group owning the runtime, the control server, the
health file, the config watcher, the domains and the systemd conversation.

Start-up order is the contract of SPEC §6: load config (exit 78 when broken) → restore intent →
bind the control socket (exit 75 when a live daemon answers) → activate the selected components
→ ``READY=1``. Every long-lived task is started with ``tg.start`` and reports ready only when it
is. Shutdown drains everything (bounded by ``stop_timeout``), stops the components, writes the
final ``stopped`` health file and removes the socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec

from oneiric._const import EXIT_ALREADY_RUNNING, EXIT_CONFIG, VERSION
from oneiric.config import Config, DaemonConfig, ResolvedPaths, default_paths, load_config
from oneiric.control.listen import open_control_socket
from oneiric.control.server import serve
from oneiric.errors import AlreadyRunning, ConfigError, OneiricError
from oneiric.runtime.core import Runtime, Timeouts
from oneiric.runtime.health import (
    ComponentHealth,
    ConfigHealth,
    HealthSnapshot,
    RemoteHealth,
    write_health,
)
from oneiric.runtime.intent import IntentStore
from oneiric.runtime.registry import Candidate
from oneiric.systemd import Notifier, watchdog_loop

log = logging.getLogger(__name__)

#: [daemon] settings that take effect on reload; the others need a restart.
LIVE_SETTINGS = frozenset(
    {
        "drain_timeout",
        "stop_timeout",
        "activation_timeout",
        "health_interval",
        "log_level",
        "watch",
    }
)


def _write_health_file(path: str, snap: HealthSnapshot) -> None:
    """Write the snapshot, recreating the directory if something removed it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_health(path, snap)


#: After a change, wait this long for more before rewriting the health file: a burst of 64
#: concurrent pauses costs one write instead of dozens (measured: +25 % durable requests/s).
HEALTH_COALESCE = 0.005


class StartupError(OneiricError):
    """Start-up failed; ``exit_status`` is what oneiricd exits with."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


@dataclass(frozen=True, slots=True)
class Options:
    """oneiricd's command-line flags (None = default of SPEC §5)."""

    config: str | None = None
    socket: str | None = None
    state_dir: str | None = None
    health_file: str | None = None


class ReloadResult(msgspec.Struct, kw_only=True):
    changed: list[str]
    not_live: list[str]
    outcomes: dict[str, str]
    failed: dict[str, str] = {}  # key -> why its swap failed (the previous instance serves)


def candidates_of(config: Config) -> list[Candidate]:
    return [
        Candidate(
            domain=c.domain,
            key=c.key,
            provider=c.provider,
            factory=c.factory,
            priority=c.priority,
            stack_level=c.stack_level,
            settings=dict(c.settings),
            source=c.source,
            every=c.every,
            topics=tuple(c.topics),
            concurrency=c.concurrency,
            queue_size=c.queue_size,
        )
        for c in config.components
    ]


def timeouts_of(config: Config) -> Timeouts:
    d = config.daemon
    return Timeouts(
        activation=d.activation_timeout,
        stop=d.stop_timeout,
        drain=d.drain_timeout,
        health_interval=d.health_interval,
    )


class Daemon:
    """Composes everything. ``await tg.start(daemon.run)`` returns once READY."""

    def __init__(self, options: Options, *, environ: dict[str, str] | None = None) -> None:
        self.options = options
        self.environ = dict(os.environ if environ is None else environ)
        self.notifier = Notifier.from_environ(self.environ)
        self.state = "starting"
        self.started_at = time.time()
        self.config: Config | None = None
        self.config_loaded_at: float | None = None
        self.config_error: str | None = None
        self.boot_daemon: DaemonConfig | None = None
        self.paths: ResolvedPaths | None = None
        self.runtime: Runtime | None = None
        self.remote = RemoteHealth()
        self._sock: socket.socket | None = None
        self._owns_socket_file = False
        self._reload_lock = anyio.Lock()
        self._stop = anyio.Event()
        self._health_written = anyio.Event()
        self._health_ok = False  # a health file was written at least once
        self._signals = 0
        self.config_listeners: list[Callable[[Config], Any]] = []

    # -- start-up --------------------------------------------------------------------------------
    def load(self) -> Config:
        """Load config and resolve paths (blocking). Raises StartupError(78)."""
        path = default_paths(
            config=self.options.config,
            socket=None,
            state_dir=None,
            health_file=None,
            daemon=None,
            environ=self.environ,
        ).config
        try:
            config = load_config(path)
        except ConfigError as exc:
            raise StartupError(str(exc), EXIT_CONFIG) from exc
        self.config = config
        self.config_loaded_at = time.time()
        self.boot_daemon = config.daemon  # what the settings that need a restart still are
        self.paths = default_paths(
            config=path,
            socket=self.options.socket,
            state_dir=self.options.state_dir,
            health_file=self.options.health_file,
            daemon=config.daemon,
            environ=self.environ,
        )
        return config

    def _open_socket(self, config: Config) -> socket.socket:
        assert self.paths is not None
        try:
            opened = open_control_socket(
                self.paths.socket,
                mode=config.daemon.socket_mode,
                group=config.daemon.admin_group,
                environ=self.environ,
            )
        except AlreadyRunning as exc:
            raise StartupError(
                f"another oneiricd already answers on {self.paths.socket}; not starting a second "
                "one (stop it first, or pass --socket)",
                EXIT_ALREADY_RUNNING,
            ) from exc
        except (OneiricError, OSError) as exc:
            raise StartupError(
                f"cannot create the control socket {self.paths.socket}: {exc}", EXIT_CONFIG
            ) from exc
        self._owns_socket_file = opened.owns_file
        return opened.sock

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[Daemon] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        config = (
            self.config if self.config is not None else await anyio.to_thread.run_sync(self.load)
        )
        assert self.paths is not None
        if config.remote is not None:
            log.warning(
                "[remote] is set (%s) but remote manifests are not implemented in this "
                "version: it is validated and ignored",
                config.remote.url,
            )
        self.notifier.status("starting: restoring operator intent")
        os.makedirs(self.paths.state_dir, exist_ok=True)
        store = IntentStore(Path(self.paths.state_dir) / "intent.json")
        try:
            await anyio.to_thread.run_sync(store.load)
        except ConfigError as exc:
            raise StartupError(str(exc), EXIT_CONFIG) from exc
        self._sock = self._open_socket(config)
        try:
            async with Runtime(intent=store, timeouts=timeouts_of(config)) as rt:
                self.runtime = rt
                await self._serve(rt, config, task_status)
        finally:
            self._close_socket()
            await self._write_final_health()

    async def _serve(
        self, rt: Runtime, config: Config, task_status: anyio.abc.TaskStatus[Daemon]
    ) -> None:
        from oneiric.handlers import ControlHandler

        assert self._sock is not None
        async with anyio.create_task_group() as tg:
            await tg.start(self._health_writer, rt)
            await tg.start(watchdog_loop, self.notifier)
            await tg.start(self._signal_loop)
            handler = ControlHandler(self)
            await tg.start(
                lambda task_status: serve(
                    self._sock,  # type: ignore[arg-type]
                    handler,
                    admin_group=config.daemon.admin_group,
                    idle_timeout=config.daemon.idle_timeout,
                    task_status=task_status,
                )
            )
            self.notifier.status("starting: activating components")
            keys = rt.apply_candidates(
                {c.source for c in config.components} | {config.path},
                candidates_of(config),
                config.selections,
            )
            await rt.reconcile_many(keys)
            await self._start_extensions(tg, rt, config)
            self._set_state("running")
            line = self.status_line()
            self.notifier.ready(line)
            log.info("oneiricd %s ready (pid %d): %s", VERSION, os.getpid(), line)
            task_status.started(self)
            await self._stop.wait()
            await self._shutdown(rt, config)
            tg.cancel_scope.cancel()

    async def _start_extensions(self, tg: anyio.abc.TaskGroup, rt: Runtime, config: Config) -> None:
        """Domains and the config watcher; each reports ready through tg.start."""
        from oneiric.domains import start_domains
        from oneiric.watch import watch_config

        await start_domains(tg, rt, self)  # sets self.domains (used by the run/emit ops)

        # Started even with [daemon] watch = false: it stays dormant then and arms when a reload
        # turns watching on, so `watch` really can change live.
        await tg.start(watch_config, self)

    def status_line(self, comps: list[ComponentHealth] | None = None) -> str:
        """One line for systemd's STATUS= (``comps``: a status already built, to reuse)."""
        rt = self.runtime
        if rt is None:
            return self.state
        if comps is None:
            comps = rt.components()
        ready = sum(1 for c in comps if c.lifecycle == "ready")
        paused = sum(1 for c in comps if c.admin != "active")
        bad = sum(1 for c in comps if c.lifecycle in ("failed", "degraded"))
        parts = [f"{self.state}: {ready}/{len(comps)} components ready"]
        if paused:
            parts.append(f"{paused} paused/drained")
        if bad:
            parts.append(f"{bad} failed/degraded")
        if self.config_error:
            parts.append("config error (running the previous config)")
        return ", ".join(parts)

    def _set_state(self, state: str) -> None:
        self.state = state
        if self.runtime is not None:
            self.runtime.touch()

    # -- signals and shutdown --------------------------------------------------------------------
    async def _reload_on_signal(self) -> None:
        try:
            await self.reload(trigger="SIGHUP")
        except OneiricError as exc:
            log.error("reload failed, keeping the running config: %s", exc)

    async def _signal_loop(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            await self._read_signals(tg, task_status)

    async def _read_signals(
        self, tg: anyio.abc.TaskGroup, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            task_status.started()
            async for signum in sigs:
                if signum == signal.SIGHUP:
                    if not self._stop.is_set():
                        log.info("SIGHUP: reloading configuration")
                        # in the background: this loop must keep reading stop signals
                        tg.start_soon(self._reload_on_signal)
                    continue
                self._signals += 1
                if self._signals == 1:
                    log.info("%s: draining and stopping", signal.Signals(signum).name)
                    self.request_stop()
                else:
                    log.warning("second %s: exiting now", signal.Signals(signum).name)
                    self._close_socket()
                    os._exit(1)

    def request_stop(self) -> None:
        self._stop.set()

    async def _shutdown(self, rt: Runtime, config: Config) -> None:
        budget = config.daemon.stop_timeout
        self._set_state("draining")
        self.notifier.stopping(f"stopping: draining (up to {budget:g}s)")
        self.notifier.extend_timeout(budget + config.daemon.stop_timeout + 5)
        left = await rt.shutdown(budget)
        if left:
            log.warning("drain budget of %gs passed; still in flight: %s", budget, left)
        self._set_state("stopping")

    def _close_socket(self) -> None:
        if self._sock is not None:
            if self._owns_socket_file and self.paths is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.paths.socket)
            self._sock.close()
            self._sock = None

    # -- health file -----------------------------------------------------------------------------
    def snapshot(self, domain: str | None = None, key: str | None = None) -> HealthSnapshot:
        rt = self.runtime
        config = self.config
        assert config is not None
        return HealthSnapshot(
            version=VERSION,
            pid=os.getpid(),
            state=self.state,  # type: ignore[arg-type]
            started_at=self.started_at,
            updated_at=time.time(),
            heartbeat_s=config.daemon.health_interval,
            config=ConfigHealth(
                path=config.path,
                loaded_at=self.config_loaded_at,
                last_error=self.config_error,
                files=list(config.files),
            ),
            remote=self.remote,
            components=rt.components(domain, key) if rt is not None else [],
        )

    async def _health_writer(self, rt: Runtime, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        assert self.paths is not None and self.config is not None
        path = self.paths.health_file
        seen = -1
        first = True
        last_status = ""
        failing: str | None = None
        while True:
            snap = self.snapshot()
            seen = rt.version
            try:
                await anyio.to_thread.run_sync(_write_health_file, path, snap)
            except OSError as exc:
                if first:
                    raise StartupError(
                        f"cannot write the health file {path}: {exc} (check --health-file, "
                        "[daemon] health_file or RUNTIME_DIRECTORY)",
                        EXIT_CONFIG,
                    ) from exc
                if failing != str(exc):  # once per distinct problem, not every heartbeat
                    log.error("cannot write the health file %s: %s; will retry", path, exc)
                    failing = str(exc)
            else:
                self._health_ok = True
                if failing is not None:
                    log.info("health file %s is being written again", path)
                    failing = None
            self._health_written.set()
            self._health_written = anyio.Event()
            line = self.status_line(snap.components)  # not a second status build per write
            if line != last_status and self.state == "running":
                self.notifier.status(line)
                last_status = line
            if first:
                task_status.started()
                first = False
            with anyio.move_on_after(self.config.daemon.health_interval):
                await rt.wait_changed(seen)
                # coalesce a burst of changes into one write; the file lags by at most this
                await anyio.sleep(HEALTH_COALESCE)

    async def health_written(self) -> None:
        """Return after the next attempt to write the health file (tests follow the file)."""
        await self._health_written.wait()

    async def _write_final_health(self) -> None:
        if self.paths is None or self.config is None or not self._health_ok:
            return  # never got as far as writing one: nothing to finalise
        self.state = "stopped"
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(
                    write_health, self.paths.health_file, self.snapshot()
                )
            except OSError as exc:
                log.error("cannot write the final health file: %s", exc)

    # -- reload ----------------------------------------------------------------------------------
    async def reload(
        self, *, trigger: str, force: bool = True, notify: bool = True
    ) -> ReloadResult:
        """Re-read the config; apply what changed. A broken config keeps the running one and
        raises ConfigError (also recorded in status and the health file).

        SIGHUP and ``oneiricctl reload`` use the defaults (systemd sees RELOADING=1 … READY=1
        and failed swaps are retried); the file watcher passes ``notify=False``.
        """
        rt = self.runtime
        assert rt is not None and self.config is not None and self.paths is not None
        async with self._reload_lock:
            previous_state = self.state
            notify = notify and not self._stop.is_set()
            if notify:
                self._set_state("reloading")
                self.notifier.reloading()
            try:
                try:
                    new = await anyio.to_thread.run_sync(load_config, self.paths.config)
                except ConfigError as exc:
                    if self.config_error != str(exc):
                        self.config_error = str(exc)
                        rt.touch()
                    log.error(
                        "config reload (%s) failed, keeping the running config: %s", trigger, exc
                    )
                    raise
                # Shielded: a config is applied whole even if the requester goes away (each
                # swap inside is bounded by the activation and stop timeouts).
                with anyio.CancelScope(shield=True):
                    result = await self.apply_config(new, force=force)
                log.info("config reloaded (%s): %d key(s) changed", trigger, len(result.changed))
                return result
            finally:
                if notify and not self._stop.is_set():  # never READY=1 after STOPPING=1
                    self._set_state(previous_state if previous_state != "reloading" else "running")
                    self.notifier.ready(self.status_line())

    async def apply_config(self, new: Config, *, force: bool) -> ReloadResult:
        rt = self.runtime
        old = self.config
        assert rt is not None and old is not None
        boot = self.boot_daemon or old.daemon
        # against what the daemon started with: a setting changed by an earlier reload is
        # still pending a restart, and one changed back is not
        not_live = [
            f"daemon.{f}"
            for f in new.daemon.__struct_fields__
            if f not in LIVE_SETTINGS and getattr(new.daemon, f) != getattr(boot, f)
        ]
        if not_live:
            log.warning("changed settings need a restart to take effect: %s", ", ".join(not_live))
        rt.timeouts = timeouts_of(new)
        if new.daemon.log_level != old.daemon.log_level:
            logging.getLogger().setLevel(new.daemon.log_level.upper())
        sources = {c.source for c in old.components} | {c.source for c in new.components}
        sources |= {old.path, new.path}
        keys = rt.apply_candidates(sources, candidates_of(new), new.selections)
        self.config = new
        self.config_loaded_at = time.time()
        self.config_error = None
        for cb in self.config_listeners:
            cb(new)
        # a forced reload (SIGHUP, `oneiricctl reload`) also retries failed swaps of unchanged keys
        retry = {k for k, st in rt.states.items() if force and st.failed_target is not None}
        outcomes = await rt.reconcile_many(keys | retry, force=force)
        return ReloadResult(
            changed=sorted(f"{d}/{k}" for d, k in keys),
            not_live=not_live,
            outcomes={f"{d}/{k}": v for (d, k), v in outcomes.items()},
            failed={
                f"{d}/{k}": rt.states[(d, k)].last_error or "activation failed"
                for (d, k), v in outcomes.items()
                if v == "failed"
            },
        )
