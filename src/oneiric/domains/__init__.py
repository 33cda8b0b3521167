"""What differs per domain: service run loops, task runs and schedules, event dispatch,
workflow runs. :func:`start_domains` wires them to a running :class:`~oneiric.runtime.core.
Runtime`; see :mod:`oneiric.domains.manager`."""

from __future__ import annotations

from oneiric.domains.event import Event
from oneiric.domains.manager import DomainManager, current_manager, start_domains
from oneiric.domains.service import BackoffPolicy
from oneiric.errors import RunCancelled, TaskFailed  # public here too (docs/components.md)

__all__ = [
    "BackoffPolicy",
    "DomainManager",
    "Event",
    "RunCancelled",
    "TaskFailed",
    "current_manager",
    "start_domains",
]
