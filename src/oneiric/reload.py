"""The one reload path: re-read the config files, apply what changed, report the outcome.

SIGHUP, ``oneiricctl reload`` and the config watcher all call :meth:`Reloader.reload`. A config
that does not validate keeps the running one (its error is kept in :class:`LoadedConfig` for
status and the health file) and raises :class:`ConfigError`. A valid one is applied whole,
shielded from the caller going away: new timeouts and log level, candidates re-ranked, and only
the keys whose winner changed are reconciled. ``[daemon]`` settings outside
:data:`LIVE_SETTINGS` are reported as needing a restart.

The reloader is handed the runtime, the health reporter (it flips the daemon's state to
``reloading`` and back) and the systemd notifier (``RELOADING=1`` … ``READY=1``); it never
reaches back into the daemon.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from oneiric.config import Config, DaemonConfig, Preread, files_digest, load_config
from oneiric.control.replies import ReloadResult
from oneiric.errors import ConfigError
from oneiric.plugins import PluginScan, discover, log_scan
from oneiric.runtime.candidates import candidate_of
from oneiric.runtime.core import ComponentKey, Runtime, Timeouts
from oneiric.runtime.delta import Delta, Snapshot, plan
from oneiric.runtime.health import PluginHealth
from oneiric.runtime.registry import Candidate, requires_errors
from oneiric.runtime.reporter import HealthReporter, LoadedConfig
from oneiric.systemd import Notifier

if TYPE_CHECKING:
    from oneiric.remote.sync import RemoteSync

__all__ = [
    "LIVE_SETTINGS",
    "Reloader",
    "candidates_of",
    "load_with_plugins",
    "summarize",
    "timeouts_of",
]

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


#: the last config converted and its candidates: the worker thread that loads a config builds
#: them (for the [requires] check), and applying that same config on the event loop reuses
#: them instead of building 20,000 again there (~50 ms at 10,000 keys, loop blocked)
_last: tuple[Config, list[Candidate]] | None = None


def candidates_of(config: Config) -> list[Candidate]:
    global _last  # noqa: PLW0603 - a one-entry memo, replaced whole (atomic between threads)
    last = _last
    if last is not None and last[0] is config:
        return last[1]
    out = [candidate_of(c) for c in config.components]
    _last = (config, out)
    return out


def summarize(result: ReloadResult) -> str:
    """One line that says what a reload did, key by key where something happened: ``adapter/cache
    swapped; task/tick parked`` — keys whose candidates changed but whose provider did not are
    counted, not listed as if something happened to them."""
    by_outcome: dict[str, list[str]] = {}
    for key, outcome in sorted(result.outcomes.items()):
        by_outcome.setdefault(outcome, []).append(key)
    parts = [
        f"{', '.join(keys)} {outcome}"
        for outcome, keys in sorted(by_outcome.items())
        if outcome not in ("unchanged", "skipped")
    ]
    same = len(by_outcome.get("unchanged", [])) + len(by_outcome.get("skipped", []))
    if same:
        parts.append(f"{same} key(s) re-read, provider unchanged")
    if result.not_live:
        parts.append(f"needs a restart: {', '.join(result.not_live)}")
    return "; ".join(parts) or "nothing changed"


def load_with_plugins(path: str, *, preread: Preread | None = None) -> tuple[Config, PluginScan]:
    """Load the config and scan the entry-point plugins (blocking: run it in a thread); raise
    ConfigError when the two together break a ``[requires]`` rule (the check needs both).
    ``preread``: the files as a digest check just read them."""
    plugins = discover()
    config = load_config(
        path,
        providers=[(c.domain, c.key, c.provider) for c in plugins.candidates],
        preread=preread,
    )
    if config.requires:
        errors = requires_errors(
            [*_required_candidates(config), *plugins.candidates],
            config.selections,
            config.requires,
        )
        if errors:
            raise ConfigError("; ".join(errors), file=config.path, path="requires")
    return config, plugins


def _required_candidates(config: Config) -> list[Candidate]:
    """The candidates of the keys a ``[requires]`` rule names (the only ones it reads)."""
    keys = {(d, k) for d, table in config.requires.items() for k in table}
    return [candidate_of(c) for c in config.components if (c.domain, c.key) in keys]


def sources_of(config: Config, plugins: PluginScan) -> set[str]:
    """The candidate sources a config and a plugin scan own: every file read (a file with
    no ``[[component]]`` owns none, harmlessly) and the plugins' distributions."""
    return {config.path, *config.files} | plugins.sources


def plugin_health(scan: PluginScan) -> PluginHealth:
    return PluginHealth(loaded=list(scan.loaded), errors=list(scan.errors))


def timeouts_of(config: Config) -> Timeouts:
    d = config.daemon
    return Timeouts(
        activation=d.activation_timeout,
        stop=d.stop_timeout,
        drain=d.drain_timeout,
        health_interval=d.health_interval,
    )


class Reloader:
    """Owns the running config: applies the boot config, then every reload, one at a time."""

    def __init__(
        self,
        rt: Runtime,
        loaded: LoadedConfig,
        *,
        config_path: str,
        health: HealthReporter,
        notifier: Notifier,
        plugins: PluginScan | None = None,
    ) -> None:
        self.rt = rt
        self.loaded = loaded
        #: the entry-point plugins found with the running config (rescanned on every reload)
        self.plugins = plugins or PluginScan()
        loaded.plugins = plugin_health(self.plugins)
        self.config_path = config_path
        self.health = health
        self.notifier = notifier
        #: what the settings that need a restart still are
        self.boot: DaemonConfig = loaded.config.daemon
        #: called with each applied config, whatever triggered it (the watcher re-plans)
        self.listeners: list[Callable[[Config], object]] = []
        self._lock = anyio.Lock()
        self._closed = False
        #: the remote manifest sync, when [remote] was configured at boot (set by the daemon)
        self.remote: RemoteSync | None = None
        #: what this reloader last put into the runtime (config, plugins) and the runtime's
        #: state right after: the next reload's change is worked out against it, off the loop
        self._applied: tuple[Config, PluginScan, Snapshot] | None = None

    @property
    def config(self) -> Config:
        return self.loaded.config

    @property
    def error(self) -> str | None:
        """Why the last reload failed; None when the running config is the files' latest."""
        return self.loaded.error

    def close(self) -> None:
        """The daemon is stopping: reloads still apply, but never send ``READY=1`` again."""
        self._closed = True

    async def activate(self) -> None:
        """Apply the config the daemon started with (start-up, before ``READY=1``)."""
        config = self.config
        sources = sources_of(config, self.plugins)
        keys = self.rt.apply_candidates(
            sources,
            [*candidates_of(config), *self.plugins.candidates],
            config.selections,
            config.requires,
        )
        self._applied = (config, self.plugins, self.rt.snapshot(sources))
        await self.rt.reconcile_many(keys)

    async def reload(
        self, *, trigger: str, force: bool = True, notify: bool = True
    ) -> ReloadResult:
        """Re-read the config; apply what changed. A broken config keeps the running one and
        raises ConfigError (also recorded in status and the health file).

        SIGHUP and ``oneiricctl reload`` use the defaults (systemd sees RELOADING=1 … READY=1
        and failed swaps are retried); the file watcher passes ``notify=False``.
        """
        health = self.health
        async with self._lock:
            previous_state = health.state
            notify = notify and not self._closed
            if notify:
                health.set_state("reloading")
                self.notifier.reloading()
            try:
                try:
                    new, plugins, delta = await anyio.to_thread.run_sync(self._prepare)
                except ConfigError as exc:
                    self.rt.history.record(
                        "reload",
                        f"reload ({trigger}) failed: {exc}",
                        trigger=trigger,
                        error=str(exc),
                    )
                    if self.loaded.error != str(exc):
                        self.loaded.error = str(exc)
                        self.rt.bump()
                    log.error(
                        "config reload (%s) failed, keeping the running config: %s", trigger, exc
                    )
                    raise
                # Shielded: a config is applied whole even if the requester goes away (each
                # swap inside is bounded by the activation and stop timeouts).
                with anyio.CancelScope(shield=True):
                    result = await self.apply(new, force=force, plugins=plugins, delta=delta)
                summary = summarize(result)
                log.log(
                    logging.WARNING if result.failed else logging.INFO,
                    "config reloaded (%s): %s",
                    trigger,
                    summary,
                )
                self.rt.history.record(
                    "reload",
                    f"config reloaded ({trigger}): {summary}",
                    trigger=trigger,
                    changed=result.changed or None,
                    failed=result.failed or None,
                )
                return result
            finally:
                if notify and not self._closed:  # never READY=1 after STOPPING=1
                    health.set_state(previous_state if previous_state != "reloading" else "running")
                    with anyio.CancelScope(shield=True):  # READY=1 goes out whatever happens
                        line = await health.status_line_now()
                    self.notifier.ready(line)

    def _prepare(self) -> tuple[Config, PluginScan, Delta | None]:
        """The worker thread's part of a reload (blocking): the running config when the files
        are byte for byte what it was read from (no parse at all); else the new config, its
        plugin scan and the change it makes to the runtime's candidates (None when there is
        nothing to compare with: then it is applied whole)."""
        seen = Preread()
        same = self._same_files(seen)
        if same is not None:
            return self.config, same, None
        new, plugins = load_with_plugins(self.config_path, preread=seen if seen.files else None)
        applied = self._applied
        if applied is None:
            return new, plugins, None
        old, old_plugins, base = applied
        delta = plan(
            base,
            sources_of(old, old_plugins) | sources_of(new, plugins),
            old.components,
            new.components,
            old_extra=old_plugins.candidates,
            new_extra=plugins.candidates,
            selections=new.selections,
            requires=new.requires,
        )
        return new, plugins, delta

    def _same_files(self, seen: Preread) -> PluginScan | None:
        """The plugin scan, when the config files hash the same as the running config's and
        the plugins are the same too (blocking); None when anything may have changed, or the
        last reload failed (then the full load says what is wrong, or clears the error).
        ``seen``: filled with the files read, for the load that follows."""
        if self.loaded.error is not None or not self.config.digest:
            return None
        try:
            digest = files_digest(self.config_path, self.config.include, keep=seen)
        except ConfigError:
            return None  # the full load reports it, with the file and the reason
        if digest != self.config.digest:
            return None
        plugins = discover()
        return plugins if plugins == self.plugins else None

    def _remote_not_live(self, new: Config) -> list[str]:
        """[remote] on reload: refresh, refresh_max, allow_factories and max_bytes apply live;
        adding or removing the section, or a new url/root/targets, takes a restart (the trust
        anchor and the persisted state belong to one source)."""
        sync = self.remote
        if sync is None or new.remote is None:
            return [] if sync is None and new.remote is None else ["remote"]
        old = sync.config
        changed = [
            f"remote.{f}"
            for f in ("url", "root", "targets")
            if getattr(new.remote, f) != getattr(old, f)
        ]
        if not changed:
            sync.reconfigure(new.remote)
        return changed

    async def apply(
        self,
        new: Config,
        *,
        force: bool,
        plugins: PluginScan | None = None,
        delta: Delta | None = None,
    ) -> ReloadResult:
        """Make ``new`` the running config (with ``plugins``, the entry-point plugins scanned
        with it) and reconcile the keys it changes; ``delta``, the change worked out in the
        worker thread against what this reloader applied last, makes that O(changed) on the
        event loop (it is re-checked here, and the sources are replaced whole if it is no
        longer valid)."""
        rt = self.rt
        old = self.config
        boot = self.boot
        # against what the daemon started with: a setting changed by an earlier reload is
        # still pending a restart, and one changed back is not
        not_live = [
            f"daemon.{f}"
            for f in new.daemon.__struct_fields__
            if f not in LIVE_SETTINGS and getattr(new.daemon, f) != getattr(boot, f)
        ]
        not_live += self._remote_not_live(new)
        if not_live:
            log.warning("changed settings need a restart to take effect: %s", ", ".join(not_live))
        for warning in new.warnings:
            log.warning("config: %s", warning)
        rt.timeouts = timeouts_of(new)
        if new.daemon.log_level != old.daemon.log_level:
            logging.getLogger().setLevel(new.daemon.log_level.upper())
        if new is old and (plugins is None or plugins == self.plugins):
            keys: set[ComponentKey] = set()  # the same files and plugins: nothing to re-rank
        else:
            sources = sources_of(old, self.plugins)
            if plugins is not None:
                if plugins != self.plugins:
                    log_scan(plugins)
                self.plugins = plugins
                self.loaded.plugins = plugin_health(plugins)
            sources |= sources_of(new, self.plugins)
            delta_keys = rt.apply_delta(delta) if delta is not None else None
            if delta_keys is not None:
                keys = delta_keys
            else:
                if delta is not None:
                    log.debug("reload: the runtime moved since the change was worked out")
                keys = rt.apply_candidates(
                    sources,
                    [*candidates_of(new), *self.plugins.candidates],
                    new.selections,
                    new.requires,
                )
            self._applied = (new, self.plugins, rt.snapshot(sources_of(new, self.plugins)))
        self.loaded.config = new
        self.loaded.loaded_at = time.time()
        self.loaded.error = None
        for cb in self.listeners:
            cb(new)
        # a forced reload (SIGHUP, `oneiricctl reload`) also retries failed swaps of unchanged keys
        retry = (
            {k for k, st in rt.states.items() if st.failed_target is not None} if force else set()
        )
        outcomes = await rt.reconcile_many(keys | retry, force=force)
        return ReloadResult(
            changed=sorted(str(ck) for ck in keys),
            not_live=not_live,
            outcomes={str(ck): v for ck, v in outcomes.items()},
            failed={
                str(ck): rt.states[ck].last_error or "activation failed"
                for ck, v in outcomes.items()
                if v == "failed"
            },
            warnings=list(new.warnings),
        )
