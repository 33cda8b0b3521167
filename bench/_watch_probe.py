"""A file watcher alone in its own process, for the idle-vs-latency curve of bench_watch.

    python _watch_probe.py DIR watchfiles STEP_MS DEBOUNCE_MS
    python _watch_probe.py DIR inotify

Prints ``armed`` once watching, then one line per change batch; exits when stdin closes.
"""

from __future__ import annotations

import sys
import threading

import anyio


async def _watchfiles(path: str, step: int, debounce: int) -> None:
    from watchfiles import awatch

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print("armed", flush=True)  # watchfiles arms on the first iteration, before any sleep
    async for _batch in awatch(
        path, step=step, debounce=debounce, stop_event=stop, rust_timeout=0, recursive=False
    ):
        print("change", flush=True)


async def _inotify(path: str) -> None:
    from oneiric._inotify import DirWatch

    async with anyio.create_task_group() as tg:

        async def eof() -> None:
            await anyio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            tg.cancel_scope.cancel()

        tg.start_soon(eof)
        with DirWatch([path]) as w:
            print("armed", flush=True)
            while True:
                await w.changes()
                print("change", flush=True)


def main() -> None:
    path, backend = sys.argv[1], sys.argv[2]
    if backend == "watchfiles":
        anyio.run(_watchfiles, path, int(sys.argv[3]), int(sys.argv[4]))
    else:
        anyio.run(_inotify, path)


if __name__ == "__main__":
    main()
