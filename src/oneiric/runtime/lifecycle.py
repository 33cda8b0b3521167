"""Activation and retirement of component instances.

``activate`` runs import → construct → ``start()`` → health gate within one budget (a module not
imported yet is imported in a worker thread: :mod:`oneiric.runtime.imports`), and on any
failure stops what it built and raises :class:`ActivationError` naming the stage. ``retire``
waits for the instance's leases to end (bounded by the drain timeout) and then stops it exactly
once. Component methods may be sync or async; sync ones run inline on the loop (they are
expected to be quick — long blocking work belongs in a thread the component starts itself).
The activation timeout's cancel scope is entered only once a step returns an awaitable: an
activation whose steps are all synchronous costs no scope (see :func:`_run_steps`).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from copy import deepcopy
from typing import Any

import anyio

from oneiric.errors import ActivationError, ComponentExit
from oneiric.logging_setup import fields
from oneiric.runtime.candidates import Candidate
from oneiric.runtime.imports import load_factory
from oneiric.runtime.leases import Binding

log = logging.getLogger(__name__)


async def call_maybe_async(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; await the result when it is awaitable. ``SystemExit`` and
    ``KeyboardInterrupt`` from it become :class:`ComponentExit` (an ordinary failure of that
    component): component code must never stop the daemon."""
    try:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
    except (SystemExit, KeyboardInterrupt) as exc:
        raise ComponentExit.from_exit(exc, f"{getattr(fn, '__qualname__', fn)!s}()") from exc
    return result


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def stop_instance(instance: Any, timeout: float, name: str) -> str | None:
    """Call ``stop()`` once, shielded and bounded; return an error text or None."""
    stop = getattr(instance, "stop", None)
    if stop is None:
        return None
    with anyio.move_on_after(timeout, shield=True) as scope:
        try:
            await call_maybe_async(stop)
        except Exception as exc:
            log.warning("%s: stop() raised %s", name, describe(exc))
            return f"stop() raised {describe(exc)}"
    if scope.cancelled_caught:
        log.warning("%s: stop() did not finish within %gs", name, timeout)
        return f"stop() did not finish within {timeout:g}s"
    return None


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call component code; ``SystemExit``/``KeyboardInterrupt`` become :class:`ComponentExit`."""
    try:
        return fn(*args, **kwargs)
    except (SystemExit, KeyboardInterrupt) as exc:
        raise ComponentExit.from_exit(exc, f"{getattr(fn, '__qualname__', fn)!s}()") from exc


#: what an activation step hands its driver when it must wait: the awaitable and who made it
_Wait = tuple[Awaitable[Any], Callable[..., Any]]


class _Progress:
    """How far an activation got, for its error paths."""

    __slots__ = ("built", "instance", "stage")

    def __init__(self) -> None:
        self.instance: Any = None
        self.built = False
        self.stage = "construction"


def _arguments(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The factory's keyword arguments: the settings, with their tables and arrays copied. The
    parsed config is shared by later activations (a swap back, a reload that kept the entry:
    config/chunks.py keeps unchanged entries' objects), so a component that changes a list or
    table it was given in place must not change what the next instance is built from."""
    return {k: deepcopy(v) if isinstance(v, (dict, list)) else v for k, v in settings.items()}


def _steps(
    factory: Callable[..., Any], candidate: Candidate, p: _Progress, name: str
) -> Generator[_Wait, Any, None]:
    """Construct → ``start()`` → health gate. Each step whose call returns an awaitable yields
    it and is resumed with its result; the steps that answer at once run straight through."""
    result = _call(factory, **_arguments(candidate.settings))
    p.instance = (yield result, factory) if inspect.isawaitable(result) else result
    p.built = True
    p.stage = "start()"
    start = getattr(p.instance, "start", None)
    if start is not None:
        result = _call(start)
        if inspect.isawaitable(result):
            yield result, start
    p.stage = "health gate"
    probe = getattr(p.instance, "health", None)
    if probe is not None:
        result = _call(probe)
        ok = (yield result, probe) if inspect.isawaitable(result) else result
        if ok is False:
            raise ActivationError(
                f"{name}: provider {candidate.provider!r} failed its health gate (health() false)"
            )


async def _run_steps(steps: Generator[_Wait, Any, None], budget: float) -> None:
    """Drive :func:`_steps`. Until a step must wait, nothing is awaited and no cancel scope is
    entered: a timeout cannot interrupt synchronous code anyway, and at 10,000 components the
    scope per activation cost ~10 % of start-up. From the first awaitable on, the rest runs
    under what is left of ``budget``."""
    started = time.monotonic()
    try:
        waiting = next(steps)
    except StopIteration:
        return
    with anyio.fail_after(max(0.0, budget - (time.monotonic() - started))):
        while True:
            awaitable, fn = waiting
            try:
                result = await awaitable
            except (SystemExit, KeyboardInterrupt) as exc:
                what = f"{getattr(fn, '__qualname__', fn)!s}()"
                raise ComponentExit.from_exit(exc, what) from exc
            try:
                waiting = steps.send(result)
            except StopIteration:
                return


async def activate(
    candidate: Candidate,
    *,
    name: str,
    activation_timeout: float,
    stop_timeout: float,
    generation: int,
) -> Binding:
    """Build a ready instance for ``candidate`` or raise ActivationError (nothing leaks)."""
    provider = candidate.provider
    # one budget for the whole activation, from the import (off the loop unless the module is
    # imported already) to the health gate
    started = time.monotonic()
    try:
        if candidate.artifact is not None:  # a verified wheel of a remote manifest (SPEC §9)
            from oneiric.remote.artifacts import activate

            activate([candidate.artifact])
        factory = await load_factory(candidate.factory, activation_timeout)
    except Exception as exc:
        raise ActivationError(
            f"{name}: cannot import {candidate.factory!r} for provider {provider!r}: "
            f"{describe(exc)}"
        ) from exc
    p = _Progress()
    try:
        # an async factory that never returns is as stuck as a start() that never returns,
        # and must not hold READY or a reload forever
        await _run_steps(
            _steps(factory, candidate, p, name),
            activation_timeout - (time.monotonic() - started),
        )
    except ActivationError:
        await stop_instance(p.instance, stop_timeout, name)
        raise
    except TimeoutError as exc:
        if p.built:
            await stop_instance(p.instance, stop_timeout, name)
        raise ActivationError(
            f"{name}: provider {provider!r} {p.stage} did not finish within {activation_timeout:g}s"
        ) from exc
    except Exception as exc:
        if p.built:
            await stop_instance(p.instance, stop_timeout, name)
        if not p.built:
            raise ActivationError(
                f"{name}: constructing provider {provider!r} raised {describe(exc)}"
            ) from exc
        raise ActivationError(
            f"{name}: provider {provider!r} {p.stage} raised {describe(exc)}"
        ) from exc
    except BaseException:  # cancelled mid-start: stop what was built, then let it propagate
        if p.built:
            await stop_instance(p.instance, stop_timeout, name)
        raise
    return Binding(p.instance, candidate, provider, generation)


async def retire(binding: Binding, *, drain_timeout: float, stop_timeout: float, name: str) -> str:
    """Wait for ``binding``'s leases to end (bounded), then stop it once. Returns a summary
    line for the log/status: whether the drain completed or timed out with leases in flight."""
    started = time.monotonic()
    outcome = "drained"
    # Not shielded: when the whole runtime shuts down it cancels this wait and stops every
    # binding itself (Runtime.shutdown), so exit is bounded by stop_timeout, not both budgets.
    with anyio.move_on_after(drain_timeout) as scope:
        await binding.wait_idle()
    if scope.cancelled_caught:
        outcome = (
            f"drain timeout ({drain_timeout:g}s) passed with {binding.in_flight} lease(s) "
            f"still in flight on {binding.provider!r}; stopping it anyway"
        )
        log.warning("%s: %s", name, outcome, extra=fields(key=name))
    if not binding.stopped:
        binding.stopped = True
        err = await stop_instance(binding.instance, stop_timeout, name)
        if err:
            outcome = f"{outcome}; {err}"
    log.info(
        "%s: retired provider %r after %.1f ms (%s)",
        name,
        binding.provider,
        (time.monotonic() - started) * 1000,
        outcome,
        extra=fields(key=name),
    )
    return outcome
