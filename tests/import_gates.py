"""Gates for modules that tests import (tests/test_trust_imports.py): a module calls
``enter(__name__)`` at import and blocks until the test opens its gate; the test waits on
``arrived(name)`` to know the import has begun, and reads ``runs`` to count executions."""

from __future__ import annotations

import threading
from collections import Counter

_lock = threading.Lock()
_arrived: dict[str, threading.Event] = {}
_open: dict[str, threading.Event] = {}
runs: Counter[str] = Counter()


def _events(name: str) -> tuple[threading.Event, threading.Event]:
    with _lock:
        return _arrived.setdefault(name, threading.Event()), _open.setdefault(
            name, threading.Event()
        )


def enter(name: str) -> None:
    """Called by the gated module's code: count the run, say so, wait for the gate."""
    arrived, opened = _events(name)
    runs[name] += 1
    arrived.set()
    opened.wait()


def arrived(name: str) -> threading.Event:
    return _events(name)[0]


def open_gate(name: str) -> None:
    _events(name)[1].set()


def open_all() -> None:
    """Let every gated import finish (a test's teardown: no thread may stay blocked)."""
    with _lock:
        for event in _open.values():
            event.set()
