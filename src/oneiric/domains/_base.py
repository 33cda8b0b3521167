"""Helpers shared by the domain managers: status extras, calling component code, results.

Status counters live in ``KeyState.extras`` (merged into the key's ``ComponentHealth``), so
every key written here must be a ``ComponentHealth`` field. Each change goes through
``rt.key_changed(st)``: it wakes the waiters of that key only (every waiter in this package
waits on its own key), and the followers of the whole runtime (``status --watch``, the health
file) — nothing here polls, and a change to one key wakes nothing that waits on another.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import msgspec

from oneiric.errors import Abandoned, ComponentExit
from oneiric.runtime.core import KeyState, Runtime

log = logging.getLogger(__name__)

_MISSING = object()


def set_extras(rt: Runtime, st: KeyState, **values: Any) -> None:
    """Set status fields of the key; touch the runtime only when something changed (so a
    waiter that updates status on wake-up cannot spin)."""
    changed = False
    for name, value in values.items():
        if st.extras.get(name, _MISSING) != value:
            st.extras[name] = value
            changed = True
    if changed:
        rt.key_changed(st)


def increment(rt: Runtime, st: KeyState, name: str, by: int = 1) -> None:
    """Add ``by`` to the status counter ``name`` of the key (and bump the runtime's version)."""
    st.extras[name] = int(st.extras.get(name, 0)) + by
    rt.key_changed(st)


async def wait_until(st: KeyState, predicate: Callable[[], bool]) -> None:
    """Wait on the key's change events until ``predicate()`` (a condition on this key) holds.
    Every admission change, bind, retire and status update of the key touches it, so this
    never misses a change — and a change to another key never wakes it."""
    seen = st.version
    while not predicate():
        seen = await st.wait_changed(seen)


#: Worker threads for components' plain run()/handle(). Separate from anyio's default pool,
#: which the daemon needs for its own file work (intent commits, the health file, config
#: loads): slow component code can use up these, never those.
COMPONENT_THREADS = 32
_threads: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar(
    "oneiric_component_threads"
)


def component_threads() -> anyio.CapacityLimiter:
    try:
        return _threads.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(COMPONENT_THREADS)
        _threads.set(limiter)
        return limiter


#: Component calls running in worker threads right now (their shield scopes, and what they
#: are), so that shutdown can abandon the ones that never return.
_in_threads: anyio.lowlevel.RunVar[dict[anyio.CancelScope, str]] = anyio.lowlevel.RunVar(
    "oneiric_component_calls_in_threads"
)


def _calls_in_threads() -> dict[anyio.CancelScope, str]:
    try:
        return _in_threads.get()
    except LookupError:
        calls: dict[anyio.CancelScope, str] = {}
        _in_threads.set(calls)
        return calls


def abandon_component_threads() -> list[str]:
    """Stop waiting for every component call still running in a worker thread (daemon
    shutdown, after ``stop_timeout``); return what they were, e.g. ``service/x: X.run()``.
    Their callers see :class:`Abandoned`; the threads themselves cannot be stopped."""
    calls = _calls_in_threads()
    names = sorted(calls.values())
    for scope in list(calls):
        scope.cancel()
    return names


async def call_component(fn: Callable[..., Any], *args: Any, name: str = "") -> Any:
    """Call a component's ``run``/``handle``: coroutine functions run on the event loop; plain
    functions run in a worker thread, because a run is work and may block.

    A thread cannot be interrupted, so cancellation waits for it to return: the caller's lease
    stays held until the work really ended (a drain that says "drained" means it, and a
    resumed service never runs twice on one instance). A plain service ``run()`` therefore
    needs a ``stop_run()`` to be stoppable by pause, drain or a swap. Only the daemon's stop
    gives up on it (:func:`abandon_component_threads`), so a thread can never hold SIGTERM up.
    ``name`` (the key) says whose call it was when it is abandoned."""
    what = f"{getattr(fn, '__qualname__', fn)!s}()"
    try:
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        # shielded: an ordinary cancellation waits for the thread; only abandon() ends the wait
        scope = anyio.CancelScope(shield=True)
        calls = _calls_in_threads()
        calls[scope] = f"{name}: {what}" if name else what
        try:
            with scope:
                result = await anyio.to_thread.run_sync(
                    functools.partial(fn, *args),
                    abandon_on_cancel=True,
                    limiter=component_threads(),
                )
        finally:
            calls.pop(scope, None)
        if scope.cancelled_caught:
            raise Abandoned(f"{what} did not return before the daemon stopped; abandoned")
        if inspect.isawaitable(result):
            result = await result
    except (SystemExit, KeyboardInterrupt) as exc:  # a component's failure, not a daemon stop
        raise ComponentExit.from_exit(exc, what) from exc
    return result


def jsonable(value: Any) -> Any:
    """``value`` when msgspec can encode it for the control protocol, else its ``repr`` (a
    task's odd return value must not turn a successful run into a protocol error)."""
    try:
        msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError):
        return repr(value)
    return value
