"""The host's remote sync: boot from the last accepted manifest, then a refresh loop that never
dies, and ``sync`` on demand (SPEC §9).

Every check runs :class:`~oneiric.remote.client.TufSource` in a worker thread (ngclient is
synchronous; the event loop never blocks on the network) and then, on the event loop, compares
the verified content with what is applied. Only a new digest is applied: the remote candidate
set and selections are replaced in one step through the ``apply`` callable the daemon passes
in (the runtime parks, swaps and rolls back per key), then persisted so the next boot can run
it with the source down. A rejection or an unreachable source changes nothing that runs; it
shows in the health ``remote`` object, the log and ``sync``'s result, and the next check is
backed off exponentially (``refresh`` doubling to ``refresh_max``, ±10 % jitter), visible in
``next_check_at``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc

from oneiric.config.schema import RemoteConfig
from oneiric.control.replies import SyncReply
from oneiric.errors import ManifestError, RemoteRejected, RemoteUnreachable
from oneiric.remote.apply import ApplyReport, plan
from oneiric.remote.artifacts import collect
from oneiric.remote.manifest import merge_manifests, parse_manifest
from oneiric.remote.store import Applied, collect_targets, load_applied, save_applied
from oneiric.runtime.candidates import Candidate, Ident, identity
from oneiric.runtime.health import RemoteHealth

log = logging.getLogger(__name__)

#: (sources to replace, their candidates, remote selections) -> what the runtime did
Apply = Callable[[set[str], list[Candidate], dict[str, dict[str, str]]], Awaitable[ApplyReport]]

JITTER = 0.1


Outcome = Literal["applied", "unchanged", "rejected", "unreachable"]


class RemoteSync:
    """One host's remote source. ``await boot()``, then ``tg.start(run)``; ``sync_now()`` any
    time. ``on_change`` is called whenever the health object changed (the health file)."""

    def __init__(
        self,
        config: RemoteConfig,
        state_dir: Path,
        apply: Apply,
        *,
        on_change: Callable[[], None] = lambda: None,
        record: Callable[..., object] | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        source: Any = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.dir = state_dir / "remote"
        self._apply = apply
        self._on_change = on_change
        self._record = record  # the daemon's event history (SPEC §11): applies and failures
        self._limiter = limiter
        self._source = source  # a TufSource, built lazily in a thread (imports python-tuf)
        self._revalidate = False  # [remote] rules changed by a reload: next check is full
        self._rng = rng or random.Random()
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self.applied: Applied | None = None
        self._candidates: dict[Ident, Candidate] = {}
        self._sources: set[str] = set()
        self.health = RemoteHealth(status="stale", url=config.url, targets=list(config.targets))

    # -- boot: fail static ---------------------------------------------------------------------
    async def boot(self) -> None:
        """Apply the last accepted manifest from the state dir, if any (status ``stale`` until
        a check succeeds). Never raises for a bad file: it is logged and ignored."""
        applied = await anyio.to_thread.run_sync(load_applied, self.dir / "applied.json")
        if applied is None:
            self.health.status = "error"
            self.health.last_error = "no manifest accepted yet; waiting for the first check"
            self._changed()
            return
        if applied.url != self.config.url or applied.targets != list(self.config.targets):
            log.warning(
                "not applying the persisted manifest from %s %s: [remote] now names %s %s",
                applied.url,
                applied.targets,
                self.config.url,
                list(self.config.targets),
            )
            self.health.status = "error"
            self._changed()
            return
        try:
            manifest = merge_manifests(
                parse_manifest(n, t.encode(), allow_factories=self.config.allow_factories)
                for n, t in applied.manifests.items()
            )
        except ManifestError as exc:
            log.error("not applying the persisted manifest: %s", exc)
            self.health.status = "error"
            self.health.last_error = f"persisted manifest invalid under the current config: {exc}"
            self._changed()
            return
        report, restart = await self._install(manifest, applied.artifacts)
        self.applied = applied
        h = self.health
        h.status, h.version, h.applied_at = "stale", applied.version, applied.applied_at
        h.artifacts = len(applied.artifacts)
        self._set_restart(restart)
        log.info(
            "remote: running the persisted manifest version %d (%d component(s)) until %s answers",
            applied.version,
            len(manifest.components),
            self.config.url,
        )
        if report.failed:
            log.error("remote: persisted manifest: swaps failed: %s", report.failed)
        self._history(
            f"running the persisted remote manifest version {applied.version} until "
            f"{self.config.url} answers",
            version=applied.version,
            trigger="boot",
            failed=report.failed or None,
        )
        self._changed()

    # -- the loop ------------------------------------------------------------------------------
    async def run(
        self,
        *,
        first_delay: float = 0.0,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Check, sleep until ``next_check_at`` (or a ``sync_now``), repeat; never dies."""
        self.health.next_check_at = time.time() + first_delay
        task_status.started()
        while True:
            delay = (self.health.next_check_at or 0.0) - time.time()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._wake.wait()
                self._wake = anyio.Event()
                if (self.health.next_check_at or 0.0) > time.time():
                    continue  # a sync_now moved the schedule
            try:
                await self.sync_now(trigger="refresh")
            except Exception:  # the loop never dies; a bug here is logged and retried
                log.exception("remote: check failed unexpectedly")
                self._schedule(failed=True)

    def reconfigure(self, config: RemoteConfig) -> None:
        """A reload changed [remote] settings that apply live (refresh, allow_factories...).
        A new url/root/targets takes a restart (the trust anchor is read at boot)."""
        stricter = (
            config.allow_factories != self.config.allow_factories
            or config.max_bytes != self.config.max_bytes
        )
        self.config = config
        if stricter:
            # the cached verification was judged under the old rules: the next check
            # verifies and validates everything again, even when the repository is unchanged
            self._revalidate = True
        self._wake.set()

    # -- one check -----------------------------------------------------------------------------
    async def sync_now(self, *, trigger: str = "sync") -> SyncReply:
        async with self._lock:
            result = await self._check(trigger)
        self._wake.set()  # the loop re-reads next_check_at
        return result

    async def _check(self, trigger: str) -> SyncReply:
        h = self.health
        h.last_check_at = time.time()
        try:
            fetched = await anyio.to_thread.run_sync(
                self._fetch, limiter=self._limiter, abandon_on_cancel=True
            )
        except RemoteRejected as exc:
            return self._failed("rejected", exc.reason, str(exc), trigger)
        except RemoteUnreachable as exc:
            return self._failed("unreachable", "unreachable", f"unreachable: {exc}", trigger)
        with anyio.CancelScope(shield=True):  # an apply is never half done
            try:
                result = await self._accept(fetched, trigger)
            except RemoteRejected as exc:  # refused by the runtime before anything changed
                result = self._failed("rejected", exc.reason, str(exc), trigger)
        return result

    def _fetch(self) -> Any:
        if self._source is None:
            from oneiric.remote.client import TufSource

            self._source = TufSource(self.config, self.dir)
        self._source.config = self.config
        full, self._revalidate = self._revalidate, False
        return self._source.check(full=full)

    def _succeeded(self, fetched: Any) -> None:
        h = self.health
        h.failures, h.reason, h.last_error = 0, None, None
        h.status = "ok"
        h.expires = fetched.expires

    async def _accept(self, fetched: Any, trigger: str) -> SyncReply:
        h = self.health
        if self.applied is not None and self.applied.digest == fetched.digest:
            self._succeeded(fetched)
            if self.applied.version != fetched.version:  # re-signed, same content
                self.applied.version = fetched.version
                h.version = fetched.version
            self._schedule(failed=False)
            self._changed()
            return self._result(True, "unchanged")
        report, restart = await self._install(fetched.manifest, fetched.artifacts)
        self._succeeded(fetched)
        applied = Applied(
            url=self.config.url,
            targets=list(self.config.targets),
            version=fetched.version,
            digest=fetched.digest,
            applied_at=time.time(),
            manifests={n: d.decode() for n, d in fetched.manifests.items()},
            artifacts=dict(fetched.artifacts),
            hashes=dict(fetched.hashes),
        )
        try:
            await anyio.to_thread.run_sync(self._persist, applied, self.applied)
        except OSError as exc:  # it runs; only the next boot without the source would differ
            log.error("remote: cannot persist the applied manifest: %s", exc)
        self.applied = applied
        h.version, h.applied_at, h.artifacts = (
            applied.version,
            applied.applied_at,
            len(applied.artifacts),
        )
        self._set_restart(restart)
        self._schedule(failed=False)
        log.info(
            "remote: applied manifest version %d from %s (%s): %d key(s) changed%s",
            fetched.version,
            self.config.url,
            trigger,
            len(report.changed),
            f", failed: {report.failed}" if report.failed else "",
        )
        self._history(
            f"remote manifest version {fetched.version} applied ({trigger}): "
            f"{len(report.changed)} key(s) changed",
            version=fetched.version,
            trigger=trigger,
            changed=report.changed or None,
            failed=report.failed or None,
        )
        self._changed()
        return self._result(
            True,
            "applied",
            changed=report.changed,
            outcomes=report.outcomes,
            failed=report.failed,
        )

    def _persist(self, applied: Applied, previous: Applied | None) -> None:
        """In a worker thread: the new manifest durably, then the cache of older versions
        collected -- what the current and the previous accepted manifest name stays (a
        rollback to the previous one needs no download), and an artifact whose code is
        imported (its directory on sys.path) is never removed."""
        save_applied(self.dir / "applied.json", applied)
        old = previous or applied
        collect_targets(self.dir / "targets", {*applied.hashes.values(), *old.hashes.values()})
        collect(self.dir / "artifacts", {*applied.artifacts.values(), *old.artifacts.values()})

    async def _install(
        self, manifest: Any, artifacts: dict[str, str]
    ) -> tuple[ApplyReport, list[str]]:
        p = plan(
            manifest,
            artifacts,
            self.dir / "artifacts",
            targets=list(self.config.targets),
            previous=self._candidates,
        )
        sources = p.sources | self._sources
        report = await self._apply(sources, p.candidates, p.selections)
        self._sources = p.sources
        self._candidates = {identity(c): c for c in p.candidates}
        self.health.components = len(p.candidates)
        return report, p.restart_reasons

    def _failed(self, outcome: Outcome, reason: str, message: str, trigger: str) -> SyncReply:
        h = self.health
        h.failures += 1
        h.reason, h.last_error = reason, message
        # stale: still running a manifest accepted earlier; error: a rejected update (or
        # nothing accepted at all)
        h.status = "stale" if outcome == "unreachable" and self.applied is not None else "error"
        self._schedule(failed=True)
        level = logging.WARNING if outcome == "unreachable" else logging.ERROR
        log.log(
            level,
            "remote: %s (%s); nothing applied, next check in %.0fs",
            message,
            trigger,
            (h.next_check_at or 0) - time.time(),
        )
        self._history(
            f"remote check failed ({trigger}): {message}; nothing applied",
            trigger=trigger,
            reason=reason,
            error=message,
            next_check_at=h.next_check_at,
        )
        self._changed()
        return self._result(False, outcome, reason=reason, error=message)

    # -- helpers -------------------------------------------------------------------------------
    def _schedule(self, *, failed: bool) -> None:
        cfg = self.config
        base = cfg.refresh
        if failed:
            base = min(cfg.refresh * 2 ** min(self.health.failures, 32), cfg.refresh_max)
        delay = base * self._rng.uniform(1 - JITTER, 1 + JITTER)
        if failed:
            delay = min(delay, cfg.refresh_max)
        self.health.next_check_at = time.time() + delay

    def _set_restart(self, reasons: list[str]) -> None:
        if reasons:
            for r in reasons:
                if r not in self.health.restart_reasons:
                    log.warning("remote: %s", r)
            self.health.restart_reasons = sorted(set(self.health.restart_reasons) | set(reasons))
        self.health.restart_needed = bool(self.health.restart_reasons)

    def _result(self, ok: bool, outcome: Outcome, **kw: Any) -> SyncReply:
        h = self.health
        return SyncReply(
            ok=ok,
            outcome=outcome,
            status=h.status,
            version=h.version,
            restart_needed=h.restart_needed,
            restart_reasons=list(h.restart_reasons),
            next_check_at=h.next_check_at,
            **kw,
        )

    def _history(self, message: str, **detail: Any) -> None:
        if self._record is not None:
            self._record("remote_sync", message, **detail)

    def _changed(self) -> None:
        self._on_change()
