"""The per-key reconcile lock (runtime/keys.py KeyLock): free, it is taken at once; contended,
waiters get it in order, and a waiter cancelled at any point never loses or keeps it."""

from __future__ import annotations

import anyio
import pytest

from oneiric.runtime.keys import KeyLock

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]


async def test_waiters_get_the_lock_in_order() -> None:
    lock = KeyLock()
    order: list[int] = []

    async def take(i: int) -> None:
        async with lock:
            order.append(i)

    async with anyio.create_task_group() as tg:
        async with lock:
            for i in range(5):
                tg.start_soon(take, i)
                await anyio.wait_all_tasks_blocked()  # queued in this order
            assert lock.locked() and order == []
    assert order == [0, 1, 2, 3, 4] and not lock.locked()


async def test_a_waiter_cancelled_while_queued_leaves_the_queue() -> None:
    lock = KeyLock()
    got: list[str] = []

    async def take(name: str) -> None:
        async with lock:
            got.append(name)

    async with anyio.create_task_group() as tg:
        async with lock:
            async with anyio.create_task_group() as doomed:
                doomed.start_soon(take, "doomed")
                await anyio.wait_all_tasks_blocked()
                doomed.cancel_scope.cancel()
            tg.start_soon(take, "next")
            await anyio.wait_all_tasks_blocked()
    assert got == ["next"] and not lock.locked()


async def test_a_waiter_cancelled_as_it_is_handed_the_lock_does_not_lose_it() -> None:
    """Whether the handed-over waiter still runs (its wait had already ended) or sees the
    cancellation at its wait (then it passes the lock on), the next one gets the lock."""
    lock = KeyLock()
    got: list[str] = []
    scope_of_first = anyio.CancelScope()

    async def first() -> None:
        with scope_of_first:
            async with lock:
                got.append("first")

    async def second() -> None:
        async with lock:
            got.append("second")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await lock.__aenter__()
            tg.start_soon(first)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            await lock.__aexit__(None, None, None)  # hands it to "first" ...
            scope_of_first.cancel()  # ... which is cancelled before it runs again
    assert got[-1:] == ["second"] and not lock.locked()
