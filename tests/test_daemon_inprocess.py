"""The daemon in-process over its real control socket."""

from __future__ import annotations

import pytest

import components as comp
from harness import make_dir, running_daemon
from oneiric.control.client import RemoteError
from oneiric.runtime.health import read_health

pytestmark = pytest.mark.anyio

CONFIG = """
[daemon]
drain_timeout = "5s"
stop_timeout = "5s"
watch = false

[[component]]
domain = "adapter"
key = "cache"
provider = "a"
factory = "components:Thing"
settings = { name = "a" }

[[component]]
domain = "adapter"
key = "cache"
provider = "b"
factory = "components:Thing"
settings = { name = "b" }

[selections.adapter]
cache = "a"
"""


@pytest.fixture(autouse=True)
def _reset() -> None:
    comp.reset()


async def test_status_pause_swap_parked_resume() -> None:
    async with running_daemon(CONFIG, directory=make_dir()) as h:
        status = await h.call("status")
        assert status["state"] == "running"
        assert [c["provider"] for c in status["components"]] == ["a"]
        await h.call("pause", domain="adapter", key="cache", note="redis failover")
        swap = await h.call("swap", domain="adapter", key="cache", provider="b")
        assert swap["parked"] is True
        comp_status = (await h.call("status", domain="adapter", key="cache"))["components"][0]
        assert comp_status["parked_provider"] == "b" and comp_status["admin"] == "paused"
        assert comp_status["note"] == "redis failover"
        await h.call("resume", domain="adapter", key="cache")
        await h.wait_for(lambda: h.rt.components()[0].provider == "b")
        explain = await h.call("explain", domain="adapter", key="cache")
        assert explain["winner"] == "b" and explain["via"] == "override"
        # the health file follows
        await h.wait_health(lambda snap: snap.components[0].provider == "b")
    assert read_health(str(h.health_file)).state == "stopped"


async def test_swap_failure_reports_and_keeps_serving() -> None:
    bad = (
        CONFIG
        + """
[[component]]
domain = "adapter"
key = "cache"
provider = "bad"
factory = "components:Thing"
settings = { name = "bad", fail = "start" }
"""
    )
    async with running_daemon(bad) as h:
        with pytest.raises(RemoteError) as err:
            await h.call("swap", domain="adapter", key="cache", provider="bad")
        assert err.value.code == "unavailable" and "cannot start" in err.value.message
        assert h.rt.components()[0].provider == "a"


async def test_reload_reports_broken_config_and_keeps_running() -> None:
    async with running_daemon(CONFIG) as h:
        h.write_config(CONFIG.replace('cache = "a"', 'cache = "b"'))
        result = await h.call("reload")
        assert result["changed"] == ["adapter/cache"]
        assert h.rt.components()[0].provider == "b"
        h.write_config(CONFIG + "\nbogus = 1\n")
        with pytest.raises(RemoteError) as err:
            await h.call("reload")
        assert "bogus" in err.value.message
        status = await h.call("status")
        assert "bogus" in status["config"]["last_error"]
        assert status["components"][0]["provider"] == "b"


async def test_unknown_key_and_domain_errors() -> None:
    async with running_daemon(CONFIG) as h:
        with pytest.raises(RemoteError) as err:
            await h.call("pause", domain="adapter", key="nope")
        assert err.value.code == "not_found"
        with pytest.raises(RemoteError) as err:
            await h.call("swap", domain="adapter", key="cache", provider="zzz")
        assert err.value.code == "not_found"
