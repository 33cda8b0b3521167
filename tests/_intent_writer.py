"""Crash-safety helper for tests/test_intent.py: a never-ending storm of intent mutations.

Usage: ``python tests/_intent_writer.py PATH [WORKERS]``. Each worker pauses its own keys
``w<worker>k<n>`` one after the other (so the workers' writes are group-committed together) and
prints ``ack <key>`` (flushed) only after the store said the pause is durable. The test SIGKILLs
this process mid-storm and checks that every acknowledged key survived.
"""

from __future__ import annotations

import os
import sys

import anyio

from oneiric.runtime.intent import IntentStore


async def _worker(store: IntentStore, worker: int) -> None:
    n = 0
    while True:
        key = f"w{worker}k{n}"
        await store.pause("adapter", key, uid=os.getuid(), pid=os.getpid(), note=f"storm {n}")
        sys.stdout.write(f"ack {key}\n")
        sys.stdout.flush()
        n += 1


async def main(path: str, workers: int) -> None:
    store = IntentStore(path)
    store.load()
    async with anyio.create_task_group() as tg:
        for w in range(workers):
            tg.start_soon(_worker, store, w)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4)
