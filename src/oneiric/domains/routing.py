"""Which event keys receive an event, and in which order (SPEC §2, §10): pure functions.

``route`` takes the serving candidate of every event key and keeps those whose ``topics``
glob-match the topic and whose ``filters`` hold on the event data; it orders them by
``priority`` (highest first, then by key) and stops after the first ``fanout = "exclusive"``
handler, which consumes the event. Delivery itself (queues, retries, dead letters) is
:mod:`oneiric.domains.event`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from oneiric._const import topic_problem
from oneiric.errors import BadRequest
from oneiric.runtime.keys import ComponentKey, KeyState

__all__ = ["Event", "check_topic", "filters_match", "route"]


@dataclass(frozen=True, slots=True)
class Event:
    """What ``handle(event)`` receives."""

    topic: str
    data: Any = None
    id: int = 0  # daemon-wide sequence number, increasing in emission order
    emitted_at: float = 0.0  # epoch seconds


def check_topic(topic: str) -> str:
    problem = topic_problem(topic)
    if problem is not None:
        raise BadRequest(problem)
    return topic


def filters_match(filters: dict[str, Any], data: Any) -> bool:
    """Every ``field = value`` of ``filters`` holds in ``data`` (a dotted field walks nested
    tables). Equality is strict about booleans: ``true`` never equals ``1``."""
    for name, want in filters.items():
        value = data
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                return False
            value = value[part]
        if isinstance(value, bool) != isinstance(want, bool) or value != want:
            return False
    return True


def route(states: Iterable[tuple[ComponentKey, KeyState]], topic: str, data: Any) -> list[KeyState]:
    """The event keys that receive an event, in delivery order (see the module docs)."""
    found: list[tuple[int, str, KeyState]] = []
    for ck, st in states:
        binding = st.slot.current
        if ck.domain != "event" or binding is None:
            continue
        cand = binding.candidate
        if not any(fnmatchcase(topic, p) for p in cand.topics):
            continue
        if cand.filters and not filters_match(cand.filters, data):
            continue
        found.append((-cand.priority, ck.key, st))
    found.sort(key=lambda item: item[:2])
    out: list[KeyState] = []
    for _, _, st in found:
        out.append(st)
        current = st.slot.current
        if current is not None and current.candidate.fanout == "exclusive":
            break
    return out
