"""Live configuration: file saves → validated config → only what changed is applied.

Two tasks, data flowing one way:

* The **watcher** turns filesystem events into a *dirty mark*. It watches directories, not
  files (a rename-save replaces the file's inode, so only a directory watch sees it), each one
  non-recursively, and lets through only the main file, files matching the ``include`` globs
  and the directories on the way to them. When one of those directories appears or vanishes
  (``conf.d`` created after start, ``rm -r conf.d``) it re-arms on the new set and marks the
  config dirty once armed, so a drop-in written into a brand-new directory is never missed.
* The **worker** waits for the mark, clears it, and calls :meth:`Reloader.reload` — the single
  reload path that SIGHUP and ``oneiricctl reload`` use too. Saves landing during a reload set
  the mark again, so any burst costs one reload in flight plus one that reads the latest files.

Diffing, parking a change that hits a paused key, replacing a parked change, per-key swap
serialisation and failed-swap bookkeeping all live in the reloader and the runtime; this module
only decides *when* to reload (what to watch is planned by :mod:`oneiric.watchplan`). No
polling. On Linux the event loop waits on an inotify descriptor itself
(:mod:`oneiric._inotify`): nothing wakes up until a file changes, and a save is seen within a
millisecond. Elsewhere watchfiles watches, with its ``step`` and ``debounce`` set here
deliberately (its defaults add about 1.6 s to every change); its thread wakes every ``step``
even when idle, which is why it is not the first choice where inotify is at hand
(docs/performance.md has the curve of step against latency and idle CPU).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import cast

import anyio
import anyio.abc
import anyio.from_thread

from oneiric import _inotify
from oneiric._changes import ChangeCounter
from oneiric.config import Config, ResolvedPaths, files_digest
from oneiric.control.replies import ReloadResult
from oneiric.errors import ConfigError
from oneiric.reload import Reloader
from oneiric.runtime.health import WatcherHealth
from oneiric.watchplan import WatchPlan, make_plan, paths_of, saves_in_progress

__all__ = ["ConfigWatcher", "WatchPlan", "make_plan"]

log = logging.getLogger(__name__)

#: How often watchfiles' thread checks for news (ms). A save is reported after one quiet step,
#: so it adds 5–10 ms of latency; each step costs the thread one GIL round trip.
STEP_MS = 5
#: Upper bound (ms) on how long watchfiles keeps collecting while events keep arriving, so a
#: long stream of saves is still delivered in batches rather than held back.
DEBOUNCE_MS = 50
#: Which file watcher runs: "inotify" (Linux: the event loop waits on the kernel's descriptor,
#: no wake-ups while idle) or "watchfiles" (everywhere else).
BACKEND = "inotify" if _inotify.available() else "watchfiles"


class _ArmedStop:
    """The ``stop_event`` handed to :func:`watchfiles.awatch`; it also reports when the watch
    is armed. watchfiles creates its Rust watcher (and every inotify watch) on the first
    iteration and then calls ``stop_event.is_set()`` from its thread on every step; the first
    such call therefore proves events are being recorded. Thread-safe, unlike anyio.Event."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._on_armed: Callable[[], object] | None = None
        self._armed = False

    def on_armed(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the event loop at the first check. It runs outside any task
        (so no ``task_status.started()``): setting an ``anyio.Event`` is the intended use."""
        self._on_armed = callback

    @property
    def armed(self) -> bool:
        return self._armed

    def is_set(self) -> bool:
        if not self._armed:
            self._armed = True
            callback, self._on_armed = self._on_armed, None
            try:
                if callback is not None:
                    anyio.from_thread.run_sync(callback)
            except Exception:  # the loop is going away; the stop flag below says the rest
                log.debug("could not report the config watch as armed", exc_info=True)
        return self._stop.is_set()

    def set(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------- the watcher


class ConfigWatcher(ChangeCounter):
    """Watches the config files (``paths.config`` and its drop-ins) and applies each valid
    change through :meth:`Reloader.reload`. Counters and :meth:`wait_changed` make its progress
    observable."""

    def __init__(self, reloader: Reloader, paths: ResolvedPaths) -> None:
        super().__init__()
        self.reloader = reloader
        self.paths = paths
        self.reloads = 0  # reloads started by the worker
        self.failures = 0  # of which the new config did not validate
        self.skipped = 0  # changes held back because a file was empty (a save in progress)
        self.arms = 0  # times the file watch was (re-)armed
        self.watching: tuple[str, ...] = ()  # directories watched now; () while off
        self._dirty = anyio.Event()
        self._paths: set[str] = set()
        self._busy = False
        self._replan = anyio.Event()
        self._plan_key: tuple[tuple[str, ...], bool] | None = None
        self._arm_failed = False
        self._last_error: str | None = None

    # -- observability ---------------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        """A change was marked and the worker has not picked it up yet."""
        return self._dirty.is_set()

    def health(self) -> WatcherHealth:
        """The watcher's state for status and the health file."""
        if self._arm_failed:
            state = "failed"
        elif self.watching:
            state = "watching"
        elif self._plan_key is not None and not self._plan_key[1]:
            state = "off"
        else:
            state = "starting"
        return WatcherHealth(
            state=state,
            backend=BACKEND,
            directories=list(self.watching),
            reloads=self.reloads,
            failures=self.failures,
            skipped=self.skipped,
            arms=self.arms,
            last_error=self._last_error,
        )

    @property
    def settled(self) -> bool:
        """Nothing marked and no reload running."""
        return not self._dirty.is_set() and not self._busy

    # -- marking ---------------------------------------------------------------------------------
    def mark(self, paths: Iterable[str] = ()) -> None:
        """Something changed on disk: have the worker reload (once, however often marked)."""
        self._paths.update(paths)
        if not self._dirty.is_set():
            self._dirty.set()
            self.bump()

    # -- running ---------------------------------------------------------------------------------
    async def run(
        self,
        *,
        changes: AsyncIterator[object] | None = None,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until cancelled. With ``changes`` (a fake watcher for tests) every item is a
        change batch and the filesystem is not watched; otherwise watchfiles is armed before
        ``task_status.started()`` (and stays dormant while ``[daemon] watch = false``)."""
        if changes is None:
            self.reloader.listeners.append(self._on_config)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._worker)
                if changes is None:
                    await tg.start(self._watch_files)
                else:
                    tg.start_soon(self._feed, changes)
                task_status.started()
        finally:
            if self._on_config in self.reloader.listeners:
                self.reloader.listeners.remove(self._on_config)

    async def _feed(self, changes: AsyncIterator[object]) -> None:
        async for item in changes:
            self.mark(paths_of(item))

    def _on_config(self, new: Config) -> None:
        """A config was applied (by any trigger): re-plan if what we watch depends on it."""
        if self._arm_failed or self._plan_key != (new.include, new.daemon.watch):
            self._replan.set()

    # -- the file watch --------------------------------------------------------------------------
    async def _watch_files(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        main = self.paths.config
        ready = False

        def started() -> None:
            nonlocal ready
            if not ready:
                ready = True
                task_status.started()

        vanished = 0  # consecutive arming failures because a directory had just vanished
        while True:
            self._replan = anyio.Event()
            config = self.reloader.config
            self._plan_key = (config.include, config.daemon.watch)
            self._arm_failed = False
            error: Exception | None = None
            if config.daemon.watch:
                plan = await anyio.to_thread.run_sync(make_plan, main, config.include)
                error = await self._arm(plan, first=not ready, started=started)
            elif self.watching or not ready:
                log.info("not watching the config files ([daemon] watch = false)")
                self.watching = ()
                self.bump()
            vanished = vanished + 1 if isinstance(error, FileNotFoundError) else 0
            if 0 < vanished < 10:
                continue  # a directory vanished between planning and arming: plan again
            if error is not None:
                self._arm_failed = True
                self._last_error = f"{type(error).__name__}: {error}"
                log.error(
                    "cannot watch the config files (%s); changes apply on 'oneiricctl reload' "
                    "or SIGHUP until a reload re-arms the watch",
                    error,
                )
            started()
            await self._replan.wait()

    async def _arm(
        self, plan: WatchPlan, *, first: bool, started: Callable[[], None]
    ) -> Exception | None:
        """Watch ``plan`` until a re-plan is asked for (calling ``started`` once armed); None,
        or why arming failed."""
        stop = _ArmedStop()
        ready = anyio.Event()  # set once armed, or once arming failed
        stop.on_armed(ready.set)
        failure: list[Exception] = []
        async with anyio.create_task_group() as tg:
            try:
                tg.start_soon(self._iterate, plan, stop, ready, failure)
                await ready.wait()
                if failure:
                    return failure[0]
                self.arms += 1
                self.watching = plan.dirs
                self.bump()
                log.debug("watching %s for config changes", ", ".join(plan.dirs))
                if first:
                    await self._catch_up(plan.mains[0])
                else:
                    self.mark()  # anything written while we were not watching
                started()
                await self._replan.wait()
            finally:
                stop.set()  # before cancelling: watchfiles' thread only returns on stop
            tg.cancel_scope.cancel()
        return None

    def _on_batch(self, plan: WatchPlan, paths: set[str]) -> None:
        self.mark(paths)
        if any(plan.is_level(p) for p in paths):
            self._replan.set()  # a directory on the way appeared or vanished

    async def _iterate(
        self, plan: WatchPlan, stop: _ArmedStop, ready: anyio.Event, failure: list[Exception]
    ) -> None:
        if BACKEND == "inotify":
            await self._iterate_inotify(plan, ready, failure)
        else:
            await self._iterate_watchfiles(plan, stop, ready, failure)

    async def _iterate_inotify(
        self, plan: WatchPlan, ready: anyio.Event, failure: list[Exception]
    ) -> None:
        try:
            watch = _inotify.DirWatch(plan.dirs)  # every watch is in place when this returns
        except OSError as exc:
            failure.append(exc)
            ready.set()
            return
        with watch:
            ready.set()
            try:
                while True:
                    got = await watch.changes()
                    if "" in got:  # the kernel queue overflowed: events were lost
                        self.mark()
                        self._replan.set()
                    paths = {p for p in got if p and plan.relevant(p)}
                    if paths:
                        self._on_batch(plan, paths)
            except OSError as exc:  # never let the watch take the daemon down
                log.warning("config watch failed (%s); re-arming", exc)
        self._replan.set()

    async def _iterate_watchfiles(
        self, plan: WatchPlan, stop: _ArmedStop, ready: anyio.Event, failure: list[Exception]
    ) -> None:
        from watchfiles import awatch  # lazy: on Linux the inotify reader needs none of it

        try:
            async for batch in awatch(
                *plan.dirs,
                watch_filter=lambda _change, path: plan.relevant(path),
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                # awatch only calls is_set() and set(); its hint names concrete Event classes
                stop_event=cast("anyio.Event", stop),
                rust_timeout=0,  # no periodic wake-ups: the stop event ends the wait
                recursive=False,
            ):
                self._on_batch(plan, paths_of(batch))
        except Exception as exc:  # OSError mostly; never let the watch take the daemon down
            if not stop.armed:
                failure.append(exc)
                ready.set()
                return
            log.warning("config watch failed (%s); re-arming", exc)
        self._replan.set()

    async def _catch_up(self, main: str) -> None:
        """A save between the daemon's start-up load and the watch being armed would be missed:
        hash the files once and reload if they differ from what the running config was parsed
        from. A hash, not a parse: at 10,000 components parsing the files again (and comparing
        the configs) held READY for ~0.27 s."""
        config = self.reloader.config

        def same() -> bool:
            return bool(config.digest) and files_digest(main, config.include) == config.digest

        try:
            unchanged = await anyio.to_thread.run_sync(same)
        except ConfigError:
            unchanged = False  # unreadable now: let the worker record and report it
        if not unchanged:
            self.mark()

    # -- the worker ------------------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = anyio.Event()
            paths, self._paths = self._paths, set()
            self._busy = True
            try:
                await self._apply(paths)
            finally:
                self._busy = False
                self.bump()

    async def _apply(self, paths: set[str]) -> None:
        # Only a file the running config was built from can be "a save in progress"; a new,
        # empty drop-in (a placeholder) is valid TOML and must not hold back its batch.
        known = [*self.reloader.config.files, self.paths.config]
        empty = await anyio.to_thread.run_sync(saves_in_progress, paths, known) if paths else []
        if empty:
            self.skipped += 1
            log.info(
                "%s is empty: taken as a save in progress; applied when it changes again "
                "(or on 'oneiricctl reload')",
                ", ".join(sorted(empty)),
            )
            return
        old = self.reloader.config
        self.reloads += 1
        try:
            result = await self.reloader.reload(trigger="file change", force=False, notify=False)
        except ConfigError:
            self.failures += 1  # reload logged it and shows it in status and the health file
            return
        except Exception:  # a bug must not end live configuration for the daemon's lifetime
            log.exception("applying the config change failed")
            return
        _log_applied(result, old, self.reloader.config)


def _log_applied(result: ReloadResult, old: Config, new: Config) -> None:
    """What the reloader's own summary line does not say: the live ``[daemon]`` settings and
    ``include`` a save changed."""
    parts = [
        f"daemon.{f}"
        for f in new.daemon.__struct_fields__
        if getattr(new.daemon, f) != getattr(old.daemon, f) and f"daemon.{f}" not in result.not_live
    ]
    if new.include != old.include:
        parts.append("include")
    if parts:
        log.info("config change applied live: %s", ", ".join(parts))
