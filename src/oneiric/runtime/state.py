"""The runtime's per-key state, its timeouts, observers, and the "current runtime" lookup.

Kept apart from :mod:`oneiric.runtime.core` so the composition there stays about behaviour.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio

from oneiric.runtime.leases import Binding, Slot
from oneiric.runtime.registry import Candidate

if TYPE_CHECKING:
    from oneiric.runtime.core import Runtime

Lifecycle = Literal["inactive", "activating", "ready", "degraded", "failed", "stopping"]
Outcome = Literal["unchanged", "swapped", "activated", "removed", "parked", "failed", "skipped"]

_current: contextvars.ContextVar[Runtime] = contextvars.ContextVar("oneiric_runtime")
_last: list[Runtime] = []


def current_runtime() -> Runtime:
    """The runtime serving the calling task (components reach each other through it)."""
    rt = _current.get(None)
    if rt is None:
        if not _last:
            raise RuntimeError("no oneiric runtime is running in this process")
        rt = _last[-1]
    return rt


@dataclass(frozen=True, slots=True)
class Timeouts:
    activation: float = 10.0
    stop: float = 30.0
    drain: float = 30.0
    health_interval: float = 5.0


@dataclass(slots=True)
class KeyState:
    """Everything the runtime tracks about one key besides its slot."""

    slot: Slot
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    lifecycle: Lifecycle = "inactive"
    last_error: str | None = None
    swaps: int = 0
    failed_swaps: int = 0
    last_swap_ms: float | None = None
    parked: Candidate | None = None
    parked_removal: bool = False
    failed_target: Candidate | None = None
    pending: bool = False
    health_scope: anyio.CancelScope | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class RuntimeObserver:
    """Domain managers subscribe to bindings and admission changes. Methods may be overridden;
    they run on the event loop and must not block."""

    async def bound(self, state: KeyState, new: Binding | None, old: Binding | None) -> None:
        """``new`` serves the key now (``old``, if any, is retiring and still running)."""

    def admission(self, state: KeyState, admitting: bool) -> None:
        """Admission of the key opened or closed."""
