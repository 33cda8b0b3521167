"""oneiric: a host daemon for pluggable async Python components.

The public API for component authors is deliberately small::

    import oneiric

    async with oneiric.use("adapter", "cache") as cache:
        await cache.set("k", "v")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oneiric._const import DOMAINS, VERSION

if TYPE_CHECKING:
    from oneiric.runtime.leases import Lease

__version__ = VERSION
__all__ = ["DOMAINS", "__version__", "use"]


def use(domain: str, key: str, *, wait: bool = True, timeout: float | None = None) -> Lease:
    """Lease the instance serving ``domain``/``key`` for the ``async with`` block.

    The lease pins that instance for the whole block, even across a hot swap. While the key is
    paused or draining the lease waits (or raises :class:`oneiric.errors.Paused` with
    ``wait=False``); ``timeout`` bounds the wait (:class:`oneiric.errors.Timeout`).
    """
    from oneiric.runtime.core import current_runtime

    return current_runtime().use(domain, key, wait=wait, timeout=timeout)
