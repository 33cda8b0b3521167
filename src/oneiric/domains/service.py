"""Service domain: supervise each active, admitted service's ``run()``.

One :class:`_Runner` per bound instance. While the key admits leases and the instance is
current, the runner holds a lease on it and awaits ``run()``; the lease is what makes drain wait
for the loop and what keeps a swapped-out instance from being stopped before its loop ended.

* **crash** (``run()`` raises): logged with its traceback, counted in ``restarts``, restarted
  after an exponential backoff (``backoff_s`` in status, ``run_state = "backoff"``). A run that
  lasted :attr:`BackoffPolicy.reset_after` seconds resets the backoff.
* **graceful stop** (pause, drain, daemon stop, swap, removal): if the instance has
  ``stop_run()``, it is called and ``run()`` gets the daemon's ``stop_timeout`` to return on its
  own; then (or at once, without ``stop_run``) ``run()`` is cancelled — it sees a cancellation
  at its next ``await`` and its ``finally:`` blocks run.
* **resume** starts ``run()`` again at once, even in the middle of a backoff.
* **swap** is make-before-break: the new instance's ``run()`` is started before the old one is
  asked to stop; the runtime stops the old instance only after its loop released its lease.
* ``run()`` returning on its own (not asked to) means the service is done: ``run_state`` says
  ``exited`` and it is not restarted until the key is paused and resumed or swapped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

from oneiric.domains._base import call_component, increment, set_extras, wait_until
from oneiric.errors import OneiricError
from oneiric.logging_setup import fields
from oneiric.runtime.core import ComponentKey, KeyState, Runtime
from oneiric.runtime.leases import Binding
from oneiric.runtime.lifecycle import call_maybe_async, describe

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delay before restarting a crashed ``run()``: ``initial * 2**(n-1)`` for the n-th
    consecutive crash, capped at ``maximum``."""

    initial: float = 0.5
    maximum: float = 60.0
    reset_after: float = 10.0  # a run this long (seconds) was healthy: forget earlier crashes

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return float(min(self.maximum, self.initial * 2 ** min(failures - 1, 62)))


#: The policy new supervisors use; tests replace it (e.g. ``initial=0``) before the daemon
#: starts, so a crash-restart test needs no real time.
DEFAULT_BACKOFF = BackoffPolicy()


class _Runner:
    """Supervises ``run()`` of one binding for as long as the binding serves its key."""

    def __init__(self, sup: ServiceSupervisor, st: KeyState, binding: Binding) -> None:
        self.sup = sup
        self.rt = sup.rt
        self.st = st
        self.binding = binding
        self.retired = False
        self.delay = 0.0  # the backoff before the next attempt, after a crash

    # -- conditions ------------------------------------------------------------------------------
    def may_start(self) -> bool:
        slot, st = self.st.slot, self.st
        # not while a parked swap/removal is about to replace this instance (after a resume)
        parked = st.pending or st.parked is not None or st.parked_removal
        return not self.retired and slot.admitting and slot.current is self.binding and not parked

    def keep_running(self) -> bool:
        # not "slot.current is binding": a swapped-out instance runs until its successor has
        # started and the supervisor retires this runner (make-before-break)
        return not self.retired and self.st.slot.admitting

    def retire(self) -> None:
        self.retired = True
        self.rt.key_changed(self.st)  # wakes this runner's waits

    def _status(self, **values: Any) -> None:
        if self.st.slot.current is self.binding:  # the old runner must not clobber the new one's
            set_extras(self.rt, self.st, **values)

    # -- the loop --------------------------------------------------------------------------------
    async def supervise(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        reported = False

        def report() -> None:
            nonlocal reported
            if not reported:
                reported = True
                task_status.started()

        name = self.st.slot.name
        try:
            while not self.retired:
                if not self.may_start():
                    self._status(run_state="stopped", backoff_s=None)
                    report()
                    await wait_until(self.st, lambda: self.retired or self.may_start())
                    continue
                outcome = await self._attempt(report)
                if outcome == "crashed":
                    await self._backoff()
                elif outcome == "exited":
                    # done on its own: wait for the operator (pause/resume) or a swap
                    await wait_until(self.st, lambda: not self.keep_running())
        except Exception:  # never let a supervisor bug take the daemon's task group down
            log.exception("%s: service supervisor failed", name)
        finally:
            report()

    async def _attempt(self, report: Callable[[], None]) -> str:
        """One ``run()``: 'stopped' (asked to), 'crashed', 'exited' or 'not-admitted'."""
        slot = self.st.slot
        lease = slot.lease(wait=False)
        try:
            instance = await lease.__aenter__()  # fast path: no await point when admitted
        except OneiricError:
            return "not-admitted"
        try:
            if instance is not self.binding.instance:  # pragma: no cover - guarded by may_start
                return "not-admitted"
            return await self._run_once(instance, report)
        finally:
            await lease.__aexit__(None, None, None)

    async def _run_once(self, instance: Any, report: Callable[[], None]) -> str:
        st, name = self.st, self.st.slot.name
        if st.last_error is not None and st.last_error == st.extras.get("last_run_error"):
            st.last_error = None  # our crash report; a fresh attempt clears it
        self._status(run_state="running", backoff_s=None)
        started = anyio.current_time()
        stop_requested = False
        crashed: Exception | None = None
        finished = anyio.Event()
        run_scope = anyio.CancelScope()

        async def watch() -> None:
            nonlocal stop_requested
            await wait_until(self.st, lambda: not self.keep_running())
            stop_requested = True
            self._status(run_state="stopping")
            await self._ask_to_stop(instance, finished)
            run_scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            report()
            try:
                with run_scope:
                    await call_component(instance.run, name=self.st.slot.name)
            except Exception as exc:
                crashed = exc
            finally:
                finished.set()
                tg.cancel_scope.cancel()
        lasted = anyio.current_time() - started
        if stop_requested:
            if crashed is not None:
                log.warning("%s: run() raised while stopping: %s", name, describe(crashed))
            log.info("%s: run() stopped after %.1fs", name, lasted)
            return "stopped"
        if crashed is None:
            log.info(
                "%s: run() returned on its own after %.1fs; not restarting",
                name,
                lasted,
                extra=fields(key=st.ck),
            )
            self._status(run_state="exited")
            return "exited"
        if lasted >= self.sup.backoff.reset_after:
            self.sup.failures[st.ck] = 0
        failures = self.sup.failures.get(st.ck, 0) + 1
        self.sup.failures[st.ck] = failures
        delay = self.sup.backoff.delay(failures)
        text = f"run() crashed: {describe(crashed)}"
        log.error(
            "%s: %s; restart %d in %gs",
            name,
            text,
            int(st.extras.get("restarts", 0)) + 1,
            delay,
            exc_info=crashed,
            extra=fields(key=st.ck),
        )
        self.delay = delay
        if st.slot.current is self.binding:
            st.last_error = text
            self._status(last_run_error=text, run_state="backoff", backoff_s=delay)
            increment(self.rt, st, "restarts")
            self.rt.history.record(
                "restart",
                f"{text}; restart {st.extras.get('restarts', 0)} in {delay:g}s",
                key=st.ck,
                restarts=st.extras.get("restarts", 0),
                backoff_s=delay,
                reason=describe(crashed),
            )
        return "crashed"

    async def _ask_to_stop(self, instance: Any, finished: anyio.Event) -> None:
        stop_run = getattr(instance, "stop_run", None)
        if stop_run is None:
            return
        grace = self.rt.timeouts.stop
        with anyio.move_on_after(grace):
            try:
                await call_maybe_async(stop_run)
            except Exception as exc:
                log.warning("%s: stop_run() raised %s", self.st.slot.name, describe(exc))
            await finished.wait()
        if not finished.is_set():
            log.warning(
                "%s: run() did not return within %gs of stop_run(); cancelling it",
                self.st.slot.name,
                grace,
            )

    async def _backoff(self) -> None:
        """Wait out the backoff; pause/swap interrupt it (resume then restarts at once)."""
        with anyio.move_on_after(self.delay):
            await wait_until(self.st, lambda: not self.keep_running())


class ServiceSupervisor:
    """All service runners of the daemon."""

    def __init__(self, rt: Runtime, tg: anyio.abc.TaskGroup) -> None:
        self.rt = rt
        self.tg = tg
        self.backoff = DEFAULT_BACKOFF
        self.runners: dict[ComponentKey, list[_Runner]] = {}
        self.failures: dict[ComponentKey, int] = {}  # consecutive crashes per key

    async def bound(self, st: KeyState, new: Binding | None, old: Binding | None) -> None:
        key = st.ck
        runners = self.runners.setdefault(key, [])
        if new is not None and getattr(new.instance, "run", None) is not None:
            runner = _Runner(self, st, new)
            runners.append(runner)
            self.failures[key] = 0
            # returns once the new run() was called (or the key is not admitting): only then
            # is the old one asked to stop
            await self.tg.start(self._supervise, runner)
        elif new is not None:
            set_extras(self.rt, st, run_state=None, backoff_s=None)
        for runner in list(runners):
            if runner.binding is not new:
                runner.retire()

    async def _supervise(self, runner: _Runner, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            await runner.supervise(task_status=task_status)
        finally:
            runs = self.runners.get(runner.st.ck, [])
            if runner in runs:
                runs.remove(runner)
