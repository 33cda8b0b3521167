"""The daemon's face to the outside: its state, the health file and the STATUS= line.

:class:`HealthReporter` owns what a reader of the health file or of ``oneiricctl status`` sees of
the daemon as a whole: its state (``starting → running ⇄ reloading → draining → stopping →
stopped``), when it started, and a snapshot of every component. It writes the snapshot on every
runtime change (a burst of changes coalesced into one write) and at least every heartbeat;
while the daemon is ``starting`` (every key activating), only on each heartbeat and when the
state changes.

It is handed to the reloader (which flips ``reloading``) and to the control handler (``ping``,
``status``, ``health`` and ``watch`` read it); it knows nothing of either. The config it reports
comes from a :class:`LoadedConfig` record that the reloader keeps current.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Final, cast

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from oneiric._const import EXIT_CONFIG, VERSION
from oneiric._files import make_private_dirs
from oneiric.config import Config
from oneiric.errors import StartupError
from oneiric.runtime.core import Runtime
from oneiric.runtime.health import (
    ComponentHealth,
    ConfigHealth,
    DaemonState,
    DomainSummary,
    HealthSnapshot,
    PluginHealth,
    RemoteHealth,
    WatcherHealth,
    summarize_domains,
    tally,
    write_health,
)

__all__ = [
    "HEALTH_BURST",
    "HEALTH_COALESCE",
    "HEALTH_MIN_INTERVAL",
    "HealthReporter",
    "LoadedConfig",
]

log = logging.getLogger(__name__)

#: After a change, wait this long for more before rewriting the health file: a burst of 64
#: concurrent pauses costs one write instead of dozens (measured: +25 % durable requests/s).
HEALTH_COALESCE = 0.005
#: ... and under a steady stream of changes (thousands of pauses a second) rewrite it at most
#: this often on average: each rewrite is a walk of the rows, a worker-thread hop, a temp file
#: and a rename (6 MB at 10,000 keys) that compete with the intent journal's flushes for the
#: same two cores and disk. A few rewrites in a row (:data:`HEALTH_BURST`: start-up, an
#: operator's pause then resume) still go out after :data:`HEALTH_COALESCE` only. Either way
#: the file shows every change, at most this much later.
HEALTH_MIN_INTERVAL = 0.05
HEALTH_BURST = 4


@dataclass(slots=True)
class LoadedConfig:
    """The config the daemon runs, when it was loaded, and why the last reload failed (None
    when it did not). The reloader writes it; the reporter reads it."""

    config: Config
    loaded_at: float
    error: str | None = None
    #: entry-point plugins found with this config (SPEC §10), for status and the health file
    plugins: PluginHealth = field(default_factory=PluginHealth)


#: a key's part of the rows' fingerprint: (its change counter, its leases in flight)
_FINGERPRINT: Final = attrgetter("version", "slot.in_flight")


@dataclass(slots=True, frozen=True)
class _Rows:
    """Status rows gathered at one fingerprint (see :meth:`HealthReporter._fingerprint`): the
    rows, their cached JSON (the same objects the runtime caches per key: no copy), and the
    per-domain summary of them."""

    fingerprint: list[tuple[int, int]]
    components: list[ComponentHealth]
    json: list[msgspec.Raw]
    domains: dict[str, DomainSummary]


def _write_health_file(path: str, snap: HealthSnapshot) -> None:
    """Write the snapshot, recreating the directory if something removed it."""
    make_private_dirs(os.path.dirname(path) or ".")
    write_health(path, snap)


def point_beside_socket(socket_path: str, health_path: str) -> str | None:
    """Make ``health.json`` beside the socket lead to the health file when it lives elsewhere
    (``--health-file``, ``[daemon] health_file``), so ``oneiricctl status``/``health`` find the
    last snapshot of a daemon that is down without being told where it is. A symlink, made
    under a temporary name and renamed over the old one (atomic). Returns the link's path, or
    None when none is needed; an OSError is the caller's to log: it costs only the pointer."""
    beside = os.path.join(os.path.dirname(socket_path), "health.json")
    if os.path.abspath(beside) == os.path.abspath(health_path):
        return None
    tmp = f"{beside}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(os.path.abspath(health_path), tmp)
    try:
        os.replace(tmp, beside)
    except OSError:
        os.unlink(tmp)
        raise
    return beside


class HealthReporter:
    """State, snapshot and health file of one daemon. ``await tg.start(reporter.run)`` returns
    after the first write; a first write that fails raises :class:`StartupError` (78)."""

    def __init__(
        self,
        rt: Runtime,
        loaded: LoadedConfig,
        *,
        path: str,
        started_at: float,
        on_status: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.rt = rt
        self.loaded = loaded
        self.path = path
        self.started_at = started_at
        self.state: DaemonState = "starting"
        self.remote = RemoteHealth()
        #: the config watcher's state, once it runs (the daemon hands it over)
        self.watcher: Callable[[], WatcherHealth] | None = None
        self._on_status = on_status  # STATUS= for the service manager, while running
        self._written = anyio.Event()
        self._ok = False  # a health file was written at least once
        self._started = anyio.Event()  # set when the state leaves "starting"
        #: the rows of the last status, per domain filter (None: all), with their fingerprint
        self._rows_cache: dict[str | None, _Rows] = {}

    # -- state -----------------------------------------------------------------------------------
    def set_state(self, state: DaemonState) -> None:
        self.state = state
        if state != "starting":
            self._started.set()
        self.rt.bump()  # the writer follows the runtime's changes

    # -- what is reported ------------------------------------------------------------------------
    def snapshot(
        self, domain: str | None = None, key: str | None = None, *, encoded: bool = False
    ) -> HealthSnapshot:
        """The status document. ``encoded``: its component rows are the runtime's cached JSON
        (``msgspec.Raw``, encoded once per change of each key), for a reply or the file — then
        encoding the document copies them instead of encoding every row again.

        The rows of the whole runtime (or of one domain) are gathered once per change and
        reused until a key changes (:meth:`_rows`); the rest of the document (state, times,
        config, remote, watcher) is small and built fresh every time, so it is never stale."""
        if key is not None:  # one key: nothing worth caching
            states = self.rt.selected(domain, key)
            components = [self.rt.component_health(st) for st in states]
            json_rows = [self.rt.component_json(st) for st in states] if encoded else None
            return self._document(components, json_rows, summarize_domains(components))
        rows = self._rows(domain)
        return self._document(list(rows.components), rows.json if encoded else None, rows.domains)

    def _fingerprint(self) -> list[tuple[int, int]]:
        """What every status row depends on, for all keys: each key's change counter and its
        leases in flight (these move without a change, to keep leases cheap). A row is rebuilt
        exactly when its entry here differs, so rows gathered at an equal fingerprint are
        still the rows. O(keys) but a C-level walk: ~1.5 ms at 10,000 keys."""
        return list(map(_FINGERPRINT, self.rt.states.values()))

    def _rows(self, domain: str | None) -> _Rows:
        """The rows of ``domain`` (all when None), gathered again only if a key changed."""
        fp = self._fingerprint()
        cached = self._rows_cache.get(domain)
        if cached is not None and cached.fingerprint == fp:
            return cached
        rt = self.rt
        states = rt.selected(domain)
        components = [rt.component_health(st) for st in states]  # per-key cached rows
        rows = _Rows(
            fp, components, [rt.component_json(st) for st in states], summarize_domains(components)
        )
        self._rows_cache[domain] = rows
        return rows

    async def _snapshot_for_file(self) -> tuple[HealthSnapshot, list[ComponentHealth]]:
        """:meth:`snapshot` (encoded) for the writer. When the rows changed since they were
        last gathered, it gathers them in time slices shared with the other long walks on the
        loop (``runtime/pace.py``: the loop polls at least every couple of ms): at 20,000 keys
        whose rows all changed (a reload that swapped them all) the walk takes tens of ms, and
        pings and leases keep being served meanwhile. Each row is one key's consistent
        state; the document may mix rows a few ms apart, as any file rewritten while things
        change does. ``status`` reuses these rows only when nothing moved during the walk (a
        lease taken and given back mid-walk could otherwise leave a row that matches the
        fingerprint again but still shows the lease)."""
        rt = self.rt
        fp = self._fingerprint()
        cached = self._rows_cache.get(None)
        if cached is None or cached.fingerprint != fp:
            components: list[ComponentHealth] = []
            json_rows: list[msgspec.Raw] = []
            domains: dict[str, DomainSummary] = {}
            pacer = rt.pacer
            for st in rt.selected():
                row = rt.component_health(st)
                components.append(row)
                json_rows.append(rt.component_json(st))
                tally(domains, row)  # counted in the same walk, not in a second one after
                if pacer.due():
                    await pacer.pause()
            cached = _Rows(fp, components, json_rows, domains)
            if self._fingerprint() == fp:  # nothing moved during the walk: the rows are exact
                self._rows_cache[None] = cached
        doc = self._document(list(cached.components), cached.json, cached.domains)
        return doc, cached.components

    def _document(
        self,
        components: list[ComponentHealth],
        json_rows: list[msgspec.Raw] | None,
        domains: dict[str, DomainSummary],
    ) -> HealthSnapshot:
        """The document around the rows: ``json_rows`` (the rows' cached JSON) when given,
        else ``components``."""
        config = self.loaded.config
        return HealthSnapshot(
            version=VERSION,
            pid=os.getpid(),
            state=self.state,
            started_at=self.started_at,
            updated_at=time.time(),
            heartbeat_s=config.daemon.health_interval,
            config=ConfigHealth(
                path=config.path,
                loaded_at=self.loaded.loaded_at,
                last_error=self.loaded.error,
                files=list(config.files),
            ),
            remote=self.remote,
            components=components
            if json_rows is None
            else cast("list[ComponentHealth]", json_rows),
            plugins=self.loaded.plugins,
            domains=domains,
            watcher=self.watcher() if self.watcher is not None else None,
        )

    def status_line(self, comps: list[ComponentHealth] | None = None) -> str:
        """One line for systemd's STATUS= (``comps``: a status already built, to reuse; else
        counted from the keys' state without building their rows: at 10,000 keys building
        them held READY for ~0.1 s)."""
        if comps is not None:
            lifecycles = [c.lifecycle for c in comps]
            paused = sum(1 for c in comps if c.admin != "active")
        else:
            rt = self.rt
            states = rt.selected()
            lifecycles = [st.lifecycle for st in states]
            paused = sum(1 for st in states if rt.admin_state(st) != "active")
        ready = lifecycles.count("ready")
        bad = lifecycles.count("failed") + lifecycles.count("degraded")
        return self._line(ready, len(lifecycles), paused, bad)

    async def status_line_now(self) -> str:
        """:meth:`status_line` of the runtime as it is now, without holding the loop for a
        walk of every key (a reload's ``READY=1``: ~30 ms at 10,000 keys in one go): from the
        rows gathered last when no key changed since, else counted in time slices."""
        cached = self._rows_cache.get(None)
        if cached is not None and cached.fingerprint == self._fingerprint():
            ds = cached.domains.values()
            return self._line(
                sum(d.ready for d in ds),
                sum(d.components for d in ds),
                sum(d.paused + d.draining for d in ds),
                sum(d.failed + d.degraded for d in ds),
            )
        rt = self.rt
        pacer = rt.pacer
        ready = total = paused = bad = 0
        for st in rt.selected():
            lifecycle = st.lifecycle
            total += 1
            ready += lifecycle == "ready"
            bad += lifecycle in ("failed", "degraded")
            paused += rt.admin_state(st) != "active"
            if pacer.due():
                await pacer.pause()
        return self._line(ready, total, paused, bad)

    def _line(self, ready: int, total: int, paused: int, bad: int) -> str:
        parts = [f"{self.state}: {ready}/{total} components ready"]
        if paused:
            parts.append(f"{paused} paused/drained")
        if bad:
            parts.append(f"{bad} failed/degraded")
        if self.loaded.error:
            parts.append("config error (running the previous config)")
        return ", ".join(parts)

    # -- the writer ------------------------------------------------------------------------------
    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Write on every change (coalesced) and every heartbeat, until cancelled."""
        rt = self.rt
        path = self.path
        first = True
        last_status = ""
        failing: str | None = None
        # rewrites that may follow a change at once: spent one per rewrite, earned back one
        # per HEALTH_MIN_INTERVAL, at most HEALTH_BURST (a token bucket)
        credit, last = float(HEALTH_BURST), anyio.current_time()
        while True:
            seen = rt.version
            now = anyio.current_time()
            credit = min(float(HEALTH_BURST), credit + (now - last) / HEALTH_MIN_INTERVAL) - 1
            last = now
            snap, comps = await self._snapshot_for_file()
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
                self._ok = True
                if failing is not None:
                    log.info("health file %s is being written again", path)
                    failing = None
            self._written.set()
            self._written = anyio.Event()
            line = self.status_line(comps)  # the rows just gathered, not a second walk
            if line != last_status and self.state == "running":
                self._on_status(line)
                last_status = line
            if first:
                task_status.started()
                first = False
            with anyio.move_on_after(self.loaded.config.daemon.health_interval):
                if self.state == "starting":
                    # Start-up changes every key, one after the other: following them would
                    # rewrite the whole file again and again (at 10,000 keys each rewrite is a
                    # 5 MB file and ~0.1 s of the loop, and they delayed READY by ~0.5 s).
                    # Until READY the file says "starting" and is rewritten every heartbeat.
                    await self._started.wait()
                    continue
                await rt.wait_changed(seen)
                # coalesce a burst of changes into one write; the file lags by at most this
                # (or, once the burst credit is spent, until one rewrite's worth came back)
                earned = credit + (anyio.current_time() - last) / HEALTH_MIN_INTERVAL
                wait = (1 - earned) * HEALTH_MIN_INTERVAL if earned < 1 else 0.0
                await anyio.sleep(max(HEALTH_COALESCE, wait))

    async def written(self) -> None:
        """Return after the next attempt to write the health file (tests follow the file)."""
        await self._written.wait()

    async def write_final(self) -> None:
        """The ``stopped`` file, the daemon's last word (only if one was ever written)."""
        if not self._ok:
            return  # never got as far as writing one: nothing to finalise
        self.state = "stopped"
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(write_health, self.path, self.snapshot())
            except OSError as exc:
                log.error("cannot write the final health file: %s", exc)
