"""oneiricd's wiring: one root task group owning the runtime, the control server, the health
reporter, the config watcher, the domains and the systemd conversation.

Start-up order is the contract of SPEC §6: load config (exit 78 when broken) → restore intent →
bind the control socket (exit 75 when a live daemon answers) → activate the selected components
→ ``READY=1``. Every long-lived task is started with ``tg.start`` and reports ready only when it
is. Shutdown drains everything (bounded by ``stop_timeout``), stops the components, writes the
final ``stopped`` health file and removes the socket.

The work is done by collaborators this module builds and hands to each other, typed:
:class:`~oneiric.reload.Reloader` (the running config and the one reload path),
:class:`~oneiric.runtime.reporter.HealthReporter` (the daemon's state and the health file),
:class:`~oneiric.handlers.ControlHandler` (control requests),
:class:`~oneiric.watch.ConfigWatcher` (file saves) and the domain manager. None of them imports
this module; what stays here is the order of things, signals and ``sd_notify``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from oneiric._const import EXIT_ALREADY_RUNNING, EXIT_CONFIG, VERSION
from oneiric._files import check_private_dir, make_private_dirs
from oneiric.config import Config, ResolvedPaths, default_paths
from oneiric.control.listen import open_control_socket
from oneiric.control.server import serve
from oneiric.control.session import RequestStats
from oneiric.domains._base import abandon_component_threads
from oneiric.domains.manager import DomainManager, start_domains
from oneiric.errors import AlreadyRunning, ConfigError, OneiricError, StartupError, UnsafePath
from oneiric.handlers import ControlHandler
from oneiric.metrics import Metrics, textfile_loop
from oneiric.plugins import PluginScan, log_scan
from oneiric.reload import Reloader, load_with_plugins, timeouts_of
from oneiric.runtime.core import Runtime
from oneiric.runtime.intent import IntentStore
from oneiric.runtime.reporter import HealthReporter, LoadedConfig, point_beside_socket
from oneiric.systemd import Notifier, watchdog_loop
from oneiric.watch import ConfigWatcher

if TYPE_CHECKING:
    from oneiric.remote.apply import ApplyReport
    from oneiric.remote.sync import RemoteSync
    from oneiric.runtime.candidates import Candidate

__all__ = ["Daemon", "Options"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Options:
    """oneiricd's command-line flags (None = default of SPEC §5)."""

    config: str | None = None
    socket: str | None = None
    state_dir: str | None = None
    health_file: str | None = None


def prepare_dirs(paths: ResolvedPaths) -> None:
    """Create the state and health directories (never writable by others, whatever the
    umask) and refuse to run (78) where another user could replace the daemon's files (a
    forged operator intent; the socket's directory is checked where it is bound). Blocking."""
    try:
        for d in (paths.state_dir, os.path.dirname(paths.health_file) or "."):
            make_private_dirs(d)
            check_private_dir(d)
    except UnsafePath as exc:
        raise StartupError(str(exc.strerror), EXIT_CONFIG) from exc
    except OSError as exc:
        raise StartupError(
            f"cannot create {exc.filename or 'a directory'}: {exc.strerror or exc} (check "
            "--state-dir, --health-file or RUNTIME_DIRECTORY/STATE_DIRECTORY)",
            EXIT_CONFIG,
        ) from exc


#: above this many ``[[component]]`` entries, start-up logs each activation at DEBUG only
ACTIVATION_LINES = 100


def pause_gc_until_ready() -> None:
    """Start-up builds one big, long-lived object graph (the config, the candidates, a state
    and an instance per key) and almost no garbage (~100 unreachable objects at 10,000 keys).
    The cyclic collector would walk that growing graph again and again for nothing: at 10,000
    keys 7 full collections cost ~0.5 s of a 1.3 s start. So it is off until READY."""
    gc.disable()


def resume_gc_after_ready() -> None:
    """READY: collect the cyclic garbage start-up left (a failed activation's exception,
    traceback and frame locals; a component's scratch graph): ``gc.freeze`` takes *every*
    tracked object, garbage included, and frozen objects are never collected again. Then
    move everything alive out of the collector's reach for good (later collections skip the
    start-up graph, so they stay short at 10,000 keys; objects in it are still freed by
    reference counting when they go) and turn the collector back on. The price: one full
    collection at READY (instead of the ~7 start-up would have run), and start-up objects
    that later become *cyclic* garbage are never collected, at most the start-up graph once
    over."""
    gc.collect()
    gc.freeze()
    gc.enable()


class Daemon:
    """Composes everything. ``await tg.start(daemon.run)`` returns once READY.

    While it runs, its collaborators are public for tests and diagnostics: ``runtime``,
    ``reloader``, ``health``, ``domains`` and ``watcher`` (None before they exist).
    """

    def __init__(
        self,
        options: Options,
        *,
        environ: dict[str, str] | None = None,
        own_process: bool = False,
    ) -> None:
        self.options = options
        #: the process is this daemon's alone (oneiricd): it may tune the garbage collector
        self.own_process = own_process
        self.environ = dict(os.environ if environ is None else environ)
        self.notifier = Notifier.from_environ(self.environ)
        self.started_at = time.time()
        self.paths: ResolvedPaths | None = None
        self.plugins = PluginScan()  # entry-point plugins found at start-up (see load)
        self.runtime: Runtime | None = None
        self.reloader: Reloader | None = None
        #: component calls abandoned at stop (still running in threads): exit non-zero
        self.abandoned: list[str] = []
        self.health: HealthReporter | None = None
        self.domains: DomainManager | None = None
        self.watcher: ConfigWatcher | None = None
        self.remote: RemoteSync | None = None
        self._loaded: LoadedConfig | None = None
        self._sock: socket.socket | None = None
        self._owns_socket_file = False
        self._stop = anyio.Event()
        self._signals = 0

    @property
    def config(self) -> Config | None:
        """The running config (None before :meth:`load`)."""
        return self._loaded.config if self._loaded is not None else None

    @property
    def config_error(self) -> str | None:
        """Why the last reload failed; None when the running config is the files' latest."""
        return self._loaded.error if self._loaded is not None else None

    # -- start-up --------------------------------------------------------------------------------
    def load(self) -> Config:
        """Load config and resolve paths (blocking). Raises StartupError(78)."""
        if self.own_process:
            pause_gc_until_ready()
        path = default_paths(
            config=self.options.config,
            socket=None,
            state_dir=None,
            health_file=None,
            daemon=None,
            environ=self.environ,
        ).config
        try:
            config, self.plugins = load_with_plugins(path)
        except ConfigError as exc:
            raise StartupError(str(exc), EXIT_CONFIG) from exc
        for warning in config.warnings:
            log.warning("config: %s", warning)
        log_scan(self.plugins)
        self._loaded = LoadedConfig(config, loaded_at=time.time())
        self.paths = default_paths(
            config=path,
            socket=self.options.socket,
            state_dir=self.options.state_dir,
            health_file=self.options.health_file,
            daemon=config.daemon,
            environ=self.environ,
        )
        return config

    def _open_socket(self, paths: ResolvedPaths, config: Config) -> socket.socket:
        try:
            opened = open_control_socket(
                paths.socket,
                mode=config.daemon.socket_mode,
                group=config.daemon.admin_group,
                environ=self.environ,
            )
        except AlreadyRunning as exc:
            raise StartupError(
                f"another oneiricd already answers on {paths.socket}; not starting a second "
                "one (stop it first, or pass --socket)",
                EXIT_ALREADY_RUNNING,
            ) from exc
        except (OneiricError, OSError) as exc:
            raise StartupError(
                f"cannot create the control socket {paths.socket}: {exc}", EXIT_CONFIG
            ) from exc
        self._owns_socket_file = opened.owns_file
        return opened.sock

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[Daemon] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        if self._loaded is None:
            await anyio.to_thread.run_sync(self.load)
        loaded, paths = self._loaded, self.paths
        assert loaded is not None and paths is not None
        config = loaded.config
        self.notifier.status("starting: restoring operator intent")
        await anyio.to_thread.run_sync(prepare_dirs, paths)
        store = IntentStore(Path(paths.state_dir) / "intent.json")
        try:
            await anyio.to_thread.run_sync(store.load)
        except ConfigError as exc:
            raise StartupError(str(exc), EXIT_CONFIG) from exc
        sock = self._sock = self._open_socket(paths, config)
        try:
            point_beside_socket(paths.socket, paths.health_file)
        except OSError as exc:
            log.warning(
                "cannot point %s/health.json at %s (oneiricctl will not find the health file "
                "when the daemon is down unless told: $ONEIRIC_HEALTH_FILE): %s",
                os.path.dirname(paths.socket),
                paths.health_file,
                exc,
            )
        try:
            async with Runtime(intent=store, timeouts=timeouts_of(config)) as rt:
                self.runtime = rt
                self.health = HealthReporter(
                    rt,
                    loaded,
                    path=paths.health_file,
                    started_at=self.started_at,
                    on_status=self.notifier.status,
                )
                self.reloader = Reloader(
                    rt,
                    loaded,
                    config_path=paths.config,
                    health=self.health,
                    notifier=self.notifier,
                    plugins=self.plugins,
                )
                if self._stop.is_set():
                    self.reloader.close()
                await self._serve(rt, sock, paths, task_status)
        finally:
            self._close_socket()
            if self.health is not None:
                await self.health.write_final()

    async def _serve(
        self,
        rt: Runtime,
        sock: socket.socket,
        paths: ResolvedPaths,
        task_status: anyio.abc.TaskStatus[Daemon],
    ) -> None:
        health, reloader = self.health, self.reloader
        assert health is not None and reloader is not None
        config = reloader.config
        async with anyio.create_task_group() as tg:
            await tg.start(health.run)
            await tg.start(watchdog_loop, self.notifier)
            await tg.start(self._signal_loop)
            requests: RequestStats = Counter()
            metrics = Metrics(health.snapshot, requests)
            rt.history.listeners.append(metrics.observe)
            handler = ControlHandler(rt, reloader, health, metrics=metrics)
            await tg.start(
                partial(
                    serve,
                    sock,
                    handler,
                    admin_group=config.daemon.admin_group,
                    idle_timeout=config.daemon.idle_timeout,
                    stats=requests,
                )
            )
            tg.start_soon(textfile_loop, metrics, reloader)
            self.notifier.status("starting: activating components")
            await self._activate(rt, reloader)
            if config.remote is not None:
                handler.remote = reloader.remote = await self._start_remote(tg, rt, paths)
            # the domains take over the keys just activated; the handler runs and emits on them
            self.domains = handler.domains = await start_domains(
                tg,
                rt,
                state_dir=paths.state_dir,
                dead_letters=config.daemon.dead_letters,
                workflow_history=config.daemon.workflow_history,
            )
            reloader.listeners.append(self.domains.follow_config)
            # Started even with [daemon] watch = false: it stays dormant then and arms when a
            # reload turns watching on, so `watch` really can change live.
            self.watcher = ConfigWatcher(reloader, paths)
            health.watcher = self.watcher.health
            await tg.start(self.watcher.run)
            health.set_state("running")
            line = health.status_line()
            self.notifier.ready(line)
            if self.own_process:
                resume_gc_after_ready()
            log.info("oneiricd %s ready (pid %d): %s", VERSION, os.getpid(), line)
            task_status.started(self)
            await self._stop.wait()
            await self._shutdown(rt, health, reloader.config)
            tg.cancel_scope.cancel()

    async def _activate(self, rt: Runtime, reloader: Reloader) -> None:
        """Activate the config's components, then log one summary line. With more than
        :data:`ACTIVATION_LINES` ``[[component]]`` entries each key's "activated" line is
        DEBUG: at 10,000 components a line each cost ~0.4 s of start-up and buried everything
        else (failures are still logged one by one, as errors)."""
        started = time.monotonic()
        if len(reloader.config.components) > ACTIVATION_LINES:
            rt.activation_log_level = logging.DEBUG
        try:
            await reloader.activate()
        finally:
            rt.activation_log_level = logging.INFO
        lifecycles = Counter(st.lifecycle for st in rt.states.values())
        log.info(
            "activated %d of %d component(s) in %.0f ms%s",
            lifecycles["ready"],
            len(rt.states),
            (time.monotonic() - started) * 1000,
            f"; {lifecycles['failed']} failed (see the errors above)"
            if lifecycles["failed"]
            else "",
        )

    async def _start_remote(
        self, tg: anyio.abc.TaskGroup, rt: Runtime, paths: ResolvedPaths
    ) -> RemoteSync:
        """Fail static first (the last accepted manifest from the state dir, before READY),
        then the refresh loop, whose first check runs at once in the background: READY never
        waits on the network."""
        from oneiric.remote.apply import apply_to_runtime
        from oneiric.remote.sync import RemoteSync

        assert self.reloader is not None and self.health is not None
        remote_config = self.reloader.config.remote
        assert remote_config is not None
        self.notifier.status("starting: applying the last accepted remote manifest")

        async def apply(
            sources: set[str], cands: list[Candidate], sel: dict[str, dict[str, str]]
        ) -> ApplyReport:
            return await apply_to_runtime(rt, sources, cands, sel)

        remote = RemoteSync(
            remote_config,
            Path(paths.state_dir),
            apply,
            on_change=rt.bump,
            record=rt.history.record,
        )
        self.remote = remote
        self.health.remote = remote.health
        await remote.boot()
        await tg.start(remote.run)
        return remote

    # -- signals and shutdown --------------------------------------------------------------------
    async def _reload_on_signal(self) -> None:
        assert self.reloader is not None
        try:
            await self.reloader.reload(trigger="SIGHUP")
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
                    logging.getLogger("oneiricd").warning("oneiricd stopped (exit 1)")
                    logging.shutdown()
                    os._exit(1)

    def request_stop(self) -> None:
        self._stop.set()
        if self.reloader is not None:
            self.reloader.close()  # never READY=1 after STOPPING=1

    async def _shutdown(self, rt: Runtime, health: HealthReporter, config: Config) -> None:
        budget = config.daemon.stop_timeout
        health.set_state("draining")
        self.notifier.stopping(f"stopping: draining (up to {budget:g}s)")
        self.notifier.extend_timeout(budget + config.daemon.stop_timeout + 5)
        left = await rt.shutdown(budget)
        if left:
            log.warning("drain budget of %gs passed; still in flight: %s", budget, left)
        # Component code in worker threads that outlived stop_timeout cannot be interrupted:
        # stop waiting for it, so our own shutdown finishes (and oneiricd exits non-zero).
        abandoned = abandon_component_threads()
        if abandoned:
            log.error(
                "stop_timeout (%gs) passed: abandoning %d component call(s) still running in "
                "worker threads: %s",
                budget,
                len(abandoned),
                ", ".join(abandoned),
            )
            self.abandoned.extend(abandoned)
        health.set_state("stopping")

    def _close_socket(self) -> None:
        if self._sock is not None:
            if self._owns_socket_file and self.paths is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.paths.socket)
            self._sock.close()
            self._sock = None

    async def health_written(self) -> None:
        """Return after the next attempt to write the health file (tests follow the file)."""
        assert self.health is not None, "the daemon is not running"
        await self.health.written()
