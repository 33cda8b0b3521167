"""Health fields the old snapshot had (issue 14): a per-domain summary, the config watcher's
state, and per-key swap-duration percentiles — in ``status --json`` and in the health file."""

from __future__ import annotations

from typing import Any

import pytest

from configs import CACHE_A_B, SELECT_CACHE_A, daemon, thing
from harness import make_dir, running_daemon
from oneiric.runtime.health import ComponentHealth, summarize_domains

pytestmark = pytest.mark.anyio


def config(**daemon_settings: object) -> str:
    return (
        daemon(drain_timeout="5s", stop_timeout="5s", **daemon_settings)
        + CACHE_A_B
        + thing("adapter", "broken", "x", fail="start")
        + thing("adapter", "other", "o")
        + SELECT_CACHE_A
    )


def test_summary_counts_each_state_once() -> None:
    rows = [
        ComponentHealth(domain="task", key="a", lifecycle="ready", admin="paused", in_flight=2),
        ComponentHealth(domain="task", key="b", lifecycle="degraded", admin="drained"),
        ComponentHealth(domain="event", key="c", lifecycle="activating"),
        ComponentHealth(domain="task", key="d", lifecycle="failed", in_flight=1),
    ]
    summary = {d: vars_of(s) for d, s in summarize_domains(rows).items()}
    assert summary == {
        "task": {
            "components": 3,
            "ready": 1,
            "degraded": 1,
            "failed": 1,
            "inactive": 0,
            "paused": 1,
            "draining": 1,
            "in_flight": 3,
        },
        "event": {
            "components": 1,
            "ready": 0,
            "degraded": 0,
            "failed": 0,
            "inactive": 1,
            "paused": 0,
            "draining": 0,
            "in_flight": 0,
        },
    }


def vars_of(s: Any) -> dict[str, Any]:
    return {f: getattr(s, f) for f in s.__struct_fields__}


async def test_status_and_health_file_carry_domains_watcher_and_percentiles() -> None:
    async with running_daemon(config(), directory=make_dir()) as h:
        await h.call("pause", domain="adapter", key="other")
        for provider in ("b", "a", "b"):
            await h.call("swap", domain="adapter", key="cache", provider=provider)
        doc = await h.call("status")
        assert doc["domains"] == {
            "adapter": {
                "components": 3,
                "ready": 2,
                "degraded": 0,
                "failed": 1,
                "inactive": 0,
                "paused": 1,
                "draining": 0,
                "in_flight": 0,
            }
        }
        watcher = doc["watcher"]
        assert watcher["state"] == "watching" and watcher["backend"] in ("inotify", "watchfiles")
        assert str(h.dir) in watcher["directories"]
        cache = next(c for c in doc["components"] if c["key"] == "cache")
        samples = sorted(h.rt.state("adapter", "cache").swap_ms)
        assert len(samples) == 3
        assert cache["swap_ms_p50"] == samples[1]  # nearest rank: the 2nd of 3
        assert cache["swap_ms_p95"] == cache["swap_ms_p99"] == samples[2]
        snap = await h.wait_health(
            lambda s: s.domains.get("adapter") and s.domains["adapter"].paused
        )
        assert snap.watcher is not None and snap.watcher.state == "watching"


async def test_watcher_state_says_off_when_watch_is_false() -> None:
    async with running_daemon(config(watch=False), directory=make_dir()) as h:
        watcher = (await h.call("status"))["watcher"]
        assert watcher["state"] == "off" and watcher["directories"] == []
