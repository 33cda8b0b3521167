"""oneiric: a host daemon for pluggable async Python components.

The public API for component authors is deliberately small::

    import oneiric

    async with oneiric.use("adapter", "cache") as cache:
        await cache.set("k", "v")
"""

from __future__ import annotations

from oneiric._const import DOMAINS, VERSION

# oneiricctl imports this package on every run: no typing, functools or collections.abc here
# at run time (together ~1× the bare interpreter's start-up).
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from oneiric.domains.event import Event
    from oneiric.runtime.core import Runtime
    from oneiric.runtime.leases import Lease

__version__ = VERSION
__all__ = ["DOMAINS", "Event", "__version__", "emit", "run_task", "use"]


def __getattr__(name: str) -> Any:
    # ``oneiric.Event`` without importing anyio for oneiricctl, which imports this package
    if name == "Event":
        from oneiric.domains.event import Event

        return Event
    raise AttributeError(f"module 'oneiric' has no attribute {name!r}")


def use(
    domain: str,
    key: str,
    *,
    wait: bool = True,
    timeout: float | None = None,
    capabilities: set[str] | frozenset[str] | tuple[str, ...] = (),
) -> Lease:
    """Lease the instance serving ``domain``/``key`` for the ``async with`` block.

    ``capabilities`` (e.g. ``{"persist"}``): the lease is refused with
    :class:`oneiric.errors.MissingCapability` (naming what is missing) when the serving
    provider does not declare them all.

    The lease pins that instance for the whole block, even across a hot swap. While the key is
    paused or draining the lease waits (or raises :class:`oneiric.errors.Paused` with
    ``wait=False``); ``timeout`` bounds the wait (:class:`oneiric.errors.Timeout`).
    """
    runtime = (_current_runtime or _import_current_runtime)()
    if capabilities:
        return runtime.use(domain, key, wait=wait, timeout=timeout, capabilities=capabilities)
    return runtime.use(domain, key, wait=wait, timeout=timeout)


_current_runtime: Callable[[], Runtime] | None = None


def _import_current_runtime() -> Runtime:
    """The running runtime, through ``current_runtime``, imported on the first ``use`` (not at
    import time: oneiricctl imports this package without anyio) and kept in
    ``_current_runtime``: an import statement per lease costs more than the lease."""
    global _current_runtime  # noqa: PLW0603 -- a cache of one import
    from oneiric.runtime.core import current_runtime

    _current_runtime = current_runtime
    return current_runtime()


async def emit(topic: str, data: Any = None) -> dict[str, list[str]]:
    """Publish an event from a component, like ``oneiricctl emit``: every active event key
    whose ``topics`` match receives it (paused keys hold it until resumed). Returns which keys
    it was ``delivered`` to, ``held`` for and ``dropped`` by (a full queue). Raises
    :class:`oneiric.errors.BadRequest` for a malformed topic."""
    from oneiric.domains.manager import current_manager

    return await current_manager().emit(topic, data)


async def run_task(key: str, payload: Any = None) -> Any:
    """Run the task ``key`` with ``payload`` (one lease) and return its result.

    Waits for a free slot when the task is at its ``concurrency`` limit; fails at once with
    :class:`oneiric.errors.Paused` while the task is paused or draining. A run that raises is
    reported as :class:`oneiric.domains.TaskFailed` (its message names the error).
    """
    from oneiric.domains.manager import current_manager

    handle = await current_manager().tasks.start(key, payload, wait_slot=True)
    return await handle.wait()
