"""Importing component modules off the event loop.

A component's module runs arbitrary code when it is first imported: it may be slow (a heavy
dependency) or hang (a network mount, a lock, a fifo). On the event loop that would stop
everything: the control socket, the watchdog, every other key. So:

- a module already imported, and done initialising, is taken from ``sys.modules`` on the loop
  at once, with no thread hop (activating 10,000 components of a few modules stays cheap);
- any other import runs in a worker thread, and the caller waits for it until its deadline
  (the activation timeout). Past that it gets a ``TimeoutError`` naming the module, and the
  thread is abandoned: Python cannot interrupt an import. While it hangs, the thread is named
  ``oneiric import MODULE`` (oneiricd names threads it cannot join when it exits).

An abandoned import still holds the module's import lock: importing that module again, on any
thread, blocks until the first import ends (importlib waits for a module another thread is
initialising). So a module that is still initialising never takes the fast path, and at most
one import of a module is in flight: whoever asks for it meanwhile waits for that import's
outcome (on an event, without a thread of its own) within their own deadline. Once it ends,
the module is in ``sys.modules`` or, if it failed, is imported afresh by the next caller, as
Python itself would.

``sys.exit()`` or ``KeyboardInterrupt`` from module code is a ``ComponentExit``, as on the
blocking path (:func:`oneiric.config.import_factory_module`).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from oneiric.config import factory_of, import_factory_module, split_factory


class _Import:
    """One import of one module in a worker thread, and whoever waits for its outcome."""

    __slots__ = ("error", "module", "name", "started", "waiters")

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.module: ModuleType | None = None
        self.error: Exception | None = None
        #: callers that joined this import: each is woken on its own event loop
        self.waiters: list[tuple[anyio.lowlevel.EventLoopToken, anyio.Event]] = []

    def run(self) -> None:
        """In a worker thread: import, keep the outcome, wake the waiters (on their loops)."""
        thread = threading.current_thread()
        name = thread.name
        thread.name = f"oneiric import {self.name}"
        try:
            self.module = import_factory_module(self.name)
        except Exception as exc:  # the outcome, for every caller
            self.error = exc
        finally:
            thread.name = name
            with _lock:
                if _pending.get(self.name) is self:
                    del _pending[self.name]
                waiters, self.waiters = self.waiters, []
            for token, event in waiters:
                # RunFinishedError: that caller's loop has ended, there is no one to wake
                with contextlib.suppress(Exception):
                    anyio.from_thread.run_sync(event.set, token=token)


#: Imports in flight (possibly abandoned), by module name; process-wide like sys.modules.
_pending: dict[str, _Import] = {}
_lock = threading.Lock()


def _initialised(module: ModuleType) -> bool:
    # importlib marks a module's spec while its code runs (the module is in sys.modules then)
    return not getattr(getattr(module, "__spec__", None), "_initializing", False)


async def load_factory(spec: str, timeout: float) -> Callable[..., Any]:
    """The factory named by ``package.module:attr``, its module imported off the loop (within
    ``timeout`` seconds) unless it is already imported. Raises what
    :func:`oneiric.config.resolve_factory` raises, or ``TimeoutError`` naming the module."""
    module_name, attr = split_factory(spec)
    module = sys.modules.get(module_name)
    if module is None or not _initialised(module):
        module = await import_module(module_name, timeout)
    return factory_of(module, spec, attr)


async def import_module(name: str, timeout: float) -> ModuleType:
    """Import ``name`` in a worker thread (or wait for the import of it in flight), for at most
    ``timeout`` seconds; see the module docstring."""
    event: anyio.Event | None = None
    waiter: tuple[anyio.lowlevel.EventLoopToken, anyio.Event] | None = None
    with _lock:
        job = _pending.get(name)
        if job is None:
            job = _pending[name] = _Import(name)
        else:
            event = anyio.Event()
            waiter = (anyio.lowlevel.current_token(), event)
            job.waiters.append(waiter)
    try:
        with anyio.fail_after(timeout):
            if event is None:
                await anyio.to_thread.run_sync(job.run, abandon_on_cancel=True)
            else:
                await event.wait()
    except TimeoutError:
        raise TimeoutError(_timeout_message(job, timeout, joined=event is not None)) from None
    finally:
        if waiter is not None:
            with _lock, contextlib.suppress(ValueError):
                job.waiters.remove(waiter)
    if job.error is not None:
        raise job.error
    if job.module is None:  # pragma: no cover - run() ended by a BaseException of its own
        raise ImportError(f"importing module {name!r} did not complete")
    return job.module


def _timeout_message(job: _Import, timeout: float, *, joined: bool) -> str:
    text = f"importing module {job.name!r} did not finish within {timeout:g}s"
    if joined:
        text += f" (an import of it started {time.monotonic() - job.started:.0f}s ago still runs)"
    return (
        text + "; the import goes on in an abandoned worker thread: a module that blocks or is "
        "slow at import needs fixing (or a larger activation_timeout)"
    )
