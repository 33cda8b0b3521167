"""The one way tests wait: until a condition holds, woken by whatever changes it, never by time.

    await wait_until(lambda: provider(h) == "b", h.rt)        # runtime state: Runtime.version
    await wait_until(lambda: w.settled, watcher)              # config watcher progress
    await wait_until(lambda: "x" in caplog.text, h.health_writes)  # a pulse: next health write
    await wait_until(lambda: len(store.state.keys) == 10)     # no event: all tasks parked

``changes`` says what to wait on between two looks at ``predicate``:

- a change counter (``version`` plus ``wait_changed(seen)``, as :class:`oneiric._changes.
  ChangeCounter` and everything built on it: the runtime, the config watcher);
- an async callable that returns at the next change (a pulse such as the daemon's
  ``health_written``). It is awaited right after ``predicate`` returned false, with no
  checkpoint in between, so a change cannot slip through the gap;
- nothing, for a condition that no event announces: the predicate is looked at again each time
  every other task is blocked (:func:`anyio.wait_all_tasks_blocked`, trio's idiom), i.e. once
  the tasks that could make it true have run as far as they can.

``timeout`` only turns a hang into a failure; it is generous because the machine is shared and
no test measures time with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import anyio


@runtime_checkable
class Changes(Protocol):
    @property
    def version(self) -> int: ...

    async def wait_changed(self, seen: int) -> object: ...


Pulse = Callable[[], Awaitable[object]]

DEFAULT_TIMEOUT = 10.0


async def wait_until(
    predicate: Callable[[], bool],
    changes: Changes | Pulse | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Return once ``predicate()`` holds; re-check it after each change (see module doc)."""
    with anyio.fail_after(timeout):
        while True:
            if isinstance(changes, Changes):
                seen = changes.version  # read before looking, so no change is missed
                if predicate():
                    return
                await changes.wait_changed(seen)
            elif predicate():
                return
            elif changes is None:
                await anyio.wait_all_tasks_blocked()
            else:
                await changes()
