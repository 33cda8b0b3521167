"""The status document's rows are gathered once per change and reused (runtime/reporter.py):
every kind of change must show in the very next ``status`` over the real socket, for the whole
runtime and for one domain, and so must a lease that moves ``in_flight`` without a change."""

from __future__ import annotations

from typing import Any

import pytest

from configs import CACHE_A_B, SELECT_CACHE_A, daemon, thing
from harness import Harness, running_daemon

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

CONFIG = (
    daemon(drain_timeout="5s", stop_timeout="5s", health_interval="1h", watch=False)
    + CACHE_A_B
    + thing("adapter", "other", "o")
    + SELECT_CACHE_A
)
EXTRA = thing("adapter", "added", "n")


async def _row(h: Harness, key: str, *, domain: str | None = None) -> dict[str, Any]:
    """The row of ``adapter/<key>`` in the next whole (or one-domain) status."""
    args = {} if domain is None else {"domain": domain}
    doc = await h.call("status", **args)
    rows = {c["key"]: c for c in doc["components"]}
    return rows[key]


async def _both(h: Harness, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return await _row(h, key), await _row(h, key, domain="adapter")


async def test_every_kind_of_change_shows_in_the_next_status() -> None:
    async with running_daemon(CONFIG) as h:
        for row in await _both(h, "cache"):  # gathered once, then served from the cache
            assert row["admin"] == "active" and row["provider"] == "a"
        assert (await _row(h, "cache"))["in_flight"] == 0

        await h.call("pause", domain="adapter", key="cache", note="maintenance")
        for row in await _both(h, "cache"):
            assert row["admin"] == "paused" and row["note"] == "maintenance"

        await h.call("resume", domain="adapter", key="cache")
        for row in await _both(h, "cache"):
            assert row["admin"] == "active" and row["note"] is None

        await h.call("swap", domain="adapter", key="cache", provider="b")
        for row in await _both(h, "cache"):
            assert row["provider"] == "b" and row["swaps"] == 1

        await h.call("drain", domain="adapter", key="other", wait=False)
        for row in await _both(h, "other"):
            assert row["admin"] == "drained"
        await h.call("resume", domain="adapter")
        for row in await _both(h, "other"):
            assert row["admin"] == "active"

        # a reload that adds a key
        h.write_config(CONFIG + EXTRA)
        await h.call("reload")
        doc = await h.call("status")
        assert "added" in {c["key"] for c in doc["components"]}
        assert doc["domains"]["adapter"]["components"] == 3
        assert (await _row(h, "added", domain="adapter"))["provider"] == "n"


async def test_a_failing_health_check_shows_in_the_next_status() -> None:
    """A component's own health check failing (no operator, no control request involved)."""
    async with running_daemon(CONFIG.replace('"1h"', '"50ms"')) as h:
        for row in await _both(h, "other"):
            assert row["lifecycle"] == "ready"
        st = h.rt.state("adapter", "other")
        assert st.slot.current is not None
        st.slot.current.instance.fail = "health"
        await h.wait_for(lambda: st.lifecycle == "degraded")
        for row in await _both(h, "other"):
            assert row["lifecycle"] == "degraded"
        st.slot.current.instance.fail = ""
        await h.wait_for(lambda: st.lifecycle == "ready")
        for row in await _both(h, "other"):
            assert row["lifecycle"] == "ready"


async def test_a_lease_shows_in_the_next_status_and_so_does_its_release() -> None:
    """``in_flight`` moves without a change (leases stay ~1 µs): the rows' fingerprint covers
    it, including a lease given back, which returns the fingerprint to an earlier value."""
    async with running_daemon(CONFIG) as h:
        assert (await _row(h, "cache"))["in_flight"] == 0
        async with h.rt.use("adapter", "cache"):
            assert (await _row(h, "cache"))["in_flight"] == 1
            assert (await _row(h, "cache", domain="adapter"))["in_flight"] == 1
        assert (await _row(h, "cache"))["in_flight"] == 0
        assert (await _row(h, "cache", domain="adapter"))["in_flight"] == 0


async def test_the_small_fields_are_always_fresh() -> None:
    """Only the rows are cached: ``updated_at`` is the time of each reply, not of the rows."""
    async with running_daemon(CONFIG) as h:
        first = await h.call("status")
        second = await h.call("status")
        assert second["components"] == first["components"]
        assert second["updated_at"] > first["updated_at"]


async def test_a_domain_or_global_pause_shows_in_every_row_of_the_next_status() -> None:
    """A pause of a whole domain, or of everything, names no key: every row it covers must
    still show it in the next status (and its resume too)."""
    async with running_daemon(CONFIG) as h:
        for row in await _both(h, "other"):
            assert row["admin"] == "active"
        await h.call("pause", domain="adapter", note="domain-wide")
        for key in ("cache", "other"):
            for row in await _both(h, key):
                assert row["admin"] == "paused" and row["note"] == "domain-wide"
        await h.call("resume", domain="adapter")
        for row in await _both(h, "other"):
            assert row["admin"] == "active"
        await h.call("pause", note="everything")
        for key in ("cache", "other"):
            for row in await _both(h, key):
                assert row["admin"] == "paused" and row["note"] == "everything"
        await h.call("resume")
        for row in await _both(h, "cache"):
            assert row["admin"] == "active"
