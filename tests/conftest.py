"""Shared fixtures: anyio on asyncio, and on trio too where a module asks for both.

A module marked ``pytest.mark.both_backends`` runs each of its async tests on asyncio and on
trio (ids ``[asyncio]``/``[trio]``), so the runtime, the control protocol and the daemon's
wiring cannot come to depend on asyncio by accident: trio refuses what asyncio lets slide (an
asyncio-only API, a missing checkpoint), and its scheduler randomly runs a batch of ready
tasks in reverse, which flushes out tests that lean on asyncio's first-woken-first-run
order. The rest of the suite stays on asyncio, which is what oneiricd runs on."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

BACKENDS = ("asyncio", "trio")
# the backend of every other async test; ONEIRIC_TEST_BACKEND=trio runs the whole suite on trio
DEFAULT_BACKEND = os.environ.get("ONEIRIC_TEST_BACKEND", "asyncio")
if DEFAULT_BACKEND not in BACKENDS:
    raise pytest.UsageError(
        f"ONEIRIC_TEST_BACKEND must be one of {BACKENDS}, not {DEFAULT_BACKEND!r}"
    )


@pytest.fixture
def anyio_backend() -> str:
    return DEFAULT_BACKEND


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "anyio_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_backends"
    ):
        metafunc.parametrize("anyio_backend", BACKENDS)


@pytest.fixture(autouse=True)
def _fresh_fake_components() -> None:
    """Every test starts with the fake components' shared state empty (the gates, calls and
    counters of tests/components.py, domain_components.py and watch_components.py)."""
    import components
    import domain_components
    import watch_components

    components.reset()
    domain_components.reset()
    watch_components.reset()


@pytest.fixture(autouse=True, scope="session")
def _remove_short_dirs() -> Iterator[None]:
    """Directories made by harness.make_dir() outlive their test on purpose (tests read the
    final health file after the daemon stopped); they go when the session ends."""
    yield
    from harness import MADE

    for path in MADE:
        shutil.rmtree(path, ignore_errors=True)
