"""Long batches of work on the event loop, cut into slices so the loop keeps serving I/O.

A reload that swaps 20,000 keys runs 20,000 reconciles on :data:`RECONCILE_WORKERS` worker
tasks. A reconcile whose component is synchronous never suspends, so one worker took key
after key without ever letting the loop poll: ``ping`` stalled for the whole batch (issue 12:
1 s at 20,000). Yielding after every key is not enough either: every worker is then ready at
once, and the loop runs one step of each (64 swaps, ~13 ms) before it polls again.

A :class:`Pacer` is shared by the workers of one batch. Each asks :meth:`Pacer.due` between
two items; once the batch has run for :data:`SLICE_S` since the loop last polled, it calls
:meth:`Pacer.pause`, which yields. The first worker to resume after a yield starts the next
slice (the loop has polled in between); the others, finding that slice already under way and
spent, yield again at once
(a few µs each), so one slice of work is done between two polls whatever the number of
workers, and a worker suspended on real I/O (an async ``start()``) does not hold anyone up.
"""

from __future__ import annotations

import time

import anyio.lowlevel

__all__ = ["SLICE_S", "Pacer"]

#: how long a batch may hold the event loop between two polls
SLICE_S = 0.002


class Pacer:
    """Cooperative time slices for the workers of one batch (event-loop thread only)::

    if pacer.due():
        await pacer.pause()
    """

    __slots__ = ("_epoch", "_mark", "pauses", "slice_s")

    def __init__(self, slice_s: float = SLICE_S) -> None:
        self.slice_s = slice_s
        self._mark = time.perf_counter()
        self._epoch = 0  # bumped when a slice starts
        self.pauses = 0  # times a worker let the loop poll (for tests)

    def due(self) -> bool:
        """This slice is spent: :meth:`pause` before the next item (cheap: no await)."""
        return time.perf_counter() - self._mark >= self.slice_s

    async def pause(self) -> None:
        """Let the loop poll; return when this worker may go on (a new slice of its own, or
        a slice another worker started and that is not spent yet)."""
        while self.due():
            epoch = self._epoch
            self.pauses += 1
            await anyio.lowlevel.checkpoint()
            if self._epoch == epoch:  # nobody started a slice since: this one is ours
                self._epoch += 1
                self._mark = time.perf_counter()
                return
