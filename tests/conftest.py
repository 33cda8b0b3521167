"""Shared fixtures: anyio pinned to asyncio."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True, scope="session")
def _remove_short_dirs() -> Iterator[None]:
    """Directories made by harness.make_dir() outlive their test on purpose (tests read the
    final health file after the daemon stopped); they go when the session ends."""
    yield
    from harness import MADE

    for path in MADE:
        shutil.rmtree(path, ignore_errors=True)
