"""The inotify reader on real directories: what it reports, when, and how it fails."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from harness import make_dir
from oneiric._inotify import DirWatch, available

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]


@pytest.fixture
def d() -> Iterator[Path]:
    path = make_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_available_on_linux() -> None:
    assert available()


async def test_rename_save_reports_both_names(d: Path) -> None:
    with DirWatch([str(d)]) as w:
        (d / ".a.tmp").write_text("x")
        os.replace(d / ".a.tmp", d / "a.toml")
        with anyio.fail_after(10):
            got = await w.changes()
        assert str(d / "a.toml") in got


async def test_write_in_place_is_reported_on_close_not_halfway(d: Path) -> None:
    (d / "a.toml").write_text("old")
    with DirWatch([str(d)]) as w:
        with open(d / "a.toml", "w") as fh:  # truncates and writes, still open
            fh.write("half")
            fh.flush()
            assert w.read() == set()  # nothing yet: the writer has not finished
        with anyio.fail_after(10):
            assert await w.changes() == {str(d / "a.toml")}


async def test_a_deleted_directory_reports_itself(d: Path) -> None:
    sub = d / "conf.d"
    sub.mkdir()
    with DirWatch([str(d), str(sub)]) as w:
        sub.rmdir()
        seen: set[str] = set()
        with anyio.fail_after(10):
            while str(sub) not in seen:
                seen |= await w.changes()


def test_a_missing_directory_is_file_not_found(d: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DirWatch([str(d / "absent")])


async def test_waiting_uses_no_thread(d: Path) -> None:
    """Idle means idle: the loop waits on the descriptor; no thread wakes up to poll."""
    before = threading.active_count()
    with DirWatch([str(d)]) as w:
        async with anyio.create_task_group() as tg:
            got: list[set[str]] = []

            async def wait() -> None:
                got.append(await w.changes())

            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()  # it is parked on the descriptor
            assert threading.active_count() == before
            (d / "x").write_text("1")
    assert got == [{str(d / "x")}]
