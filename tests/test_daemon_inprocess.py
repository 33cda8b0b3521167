"""The daemon in-process over its real control socket."""

from __future__ import annotations

import pytest

from configs import CACHE_A_B, SELECT_CACHE_A, daemon
from harness import make_dir, running_daemon
from oneiric.control.client import RemoteError
from oneiric.runtime.health import read_health
from waiting import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

CONFIG = daemon(drain_timeout="5s", stop_timeout="5s", watch=False) + CACHE_A_B + SELECT_CACHE_A


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


async def test_reload_refuses_a_selection_no_candidate_offers() -> None:
    """A typo in a selection is a config error: reload fails, status shows it, the running
    config (and provider) stay."""
    async with running_daemon(CONFIG) as h:
        h.write_config(CONFIG.replace('cache = "a"', 'cache = "redis"'))
        with pytest.raises(RemoteError) as err:
            await h.call("reload")
        assert "'redis'" in err.value.message and "selections.adapter.cache" in err.value.message
        status = await h.call("status")
        assert "'redis'" in status["config"]["last_error"]
        assert status["components"][0]["provider"] == "a"


async def test_swap_clear_without_an_override_says_there_is_nothing_to_clear() -> None:
    async with running_daemon(CONFIG) as h:
        reply = await h.call("swap", domain="adapter", key="cache", clear=True)
        assert reply["nothing_to_clear"] is True
        assert (reply["provider"], reply["outcome"]) == ("a", "unchanged")
        await h.call("swap", domain="adapter", key="cache", provider="b")
        reply = await h.call("swap", domain="adapter", key="cache", clear=True)
        assert reply["nothing_to_clear"] is False
        assert (reply["provider"], reply["previous"]) == ("a", "b")


async def test_unknown_key_and_domain_errors() -> None:
    async with running_daemon(CONFIG) as h:
        with pytest.raises(RemoteError) as err:
            await h.call("pause", domain="adapter", key="nope")
        assert err.value.code == "not_found"
        with pytest.raises(RemoteError) as err:
            await h.call("swap", domain="adapter", key="cache", provider="zzz")
        assert err.value.code == "not_found"


async def test_ping_list_and_explain() -> None:
    async with running_daemon(CONFIG) as h:
        ping = await h.call("ping")
        assert ping["state"] == "running" and ping["version"]
        winners = (await h.call("list"))["candidates"]
        assert [(c["provider"], c["winner"], c["active"]) for c in winners] == [("a", True, True)]
        every = (await h.call("list", domain="adapter", shadowed=True))["candidates"]
        assert sorted(c["provider"] for c in every) == ["a", "b"]
        assert (await h.call("list", domain="task"))["candidates"] == []
        explain = await h.call("explain", domain="adapter", key="cache")
        assert explain["via"] == "selection" and explain["active"] == "a"
        assert [c["provider"] for c in explain["candidates"]] == ["a", "b"]


async def test_drain_no_wait_then_watch_sees_it_drained() -> None:
    async with running_daemon(CONFIG) as h:
        async with h.rt.use("adapter", "cache"):
            result = await h.call("drain", domain="adapter", key="cache", wait=False)
            assert result["drained"] is False and result["in_flight"] == {"adapter/cache": 1}
            with pytest.raises(RemoteError) as err:
                await h.call("drain", domain="adapter", key="cache", timeout=0.01)
            assert err.value.code == "timeout"
            assert err.value.detail == {"in_flight": {"adapter/cache": 1}}
        snapshots: list[dict[str, object]] = []

        class Seen(Exception):
            pass

        def on_event(event: dict[str, object]) -> None:
            snapshots.append(event)
            comps = event["snapshot"]["components"]  # type: ignore[index]
            if comps[0]["admin"] == "drained":
                raise Seen

        with pytest.raises(Seen):
            await h.stream("watch", on_event)
        assert snapshots[-1]["type"] == "snapshot"


async def test_sync_is_unavailable_without_remote_support() -> None:
    async with running_daemon(CONFIG) as h:
        with pytest.raises(RemoteError) as err:
            await h.call("sync")
        assert err.value.code == "unavailable" and "remote" in err.value.message


async def test_health_file_trouble_is_logged_and_survived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_daemon(CONFIG) as h:
        while True:  # the writer may recreate the file between our unlink and mkdir: retry
            h.health_file.unlink(missing_ok=True)
            try:
                h.health_file.mkdir()  # the daemon cannot replace a directory with its file
                break
            except FileExistsError:
                continue
        await h.call("pause", domain="adapter", key="cache")
        # the writer pulses after every attempt, failed or not
        await wait_until(lambda: "cannot write the health file" in caplog.text, h.health_writes)
        assert (await h.call("ping"))["state"] == "running"  # still serving
        h.health_file.rmdir()
        await h.call("resume", domain="adapter", key="cache")
        snap = await h.wait_health(lambda s: s.components[0].admin == "active")
        assert snap.state == "running"


async def test_resume_of_a_key_inside_a_paused_domain_says_it_is_still_held() -> None:
    async with running_daemon(CONFIG) as h:
        await h.call("pause", domain="adapter")
        result = await h.call("resume", domain="adapter", key="cache")
        assert result["state"] == "partly active"
        assert result["still_held"] == {"adapter/cache": "paused by domain"}
        assert h.rt.components()[0].admin == "paused"


async def test_status_of_an_unknown_key_is_not_found() -> None:
    async with running_daemon(CONFIG) as h:
        with pytest.raises(RemoteError) as err:
            await h.call("status", domain="adapter", key="nope")
        assert err.value.code == "not_found" and "adapter/nope" in err.value.message
        assert (await h.call("status", domain="task"))["components"] == []


async def test_pause_of_a_key_inside_a_draining_domain_says_the_drain_still_holds() -> None:
    async with running_daemon(CONFIG) as h:
        await h.call("drain", domain="adapter", wait=False)
        result = await h.call("pause", domain="adapter", key="cache")
        assert result["state"] == "partly draining"
        assert result["still_held"] == {"adapter/cache": "draining by domain"}
