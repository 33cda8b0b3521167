"""SPEC §11 against a real daemon over its real socket: the history (`events`, `--follow`,
`status DOMAIN KEY`'s tail) and the Prometheus metrics (`metrics`, the textfile), parsed back
with prometheus_client's own parser."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from configs import CACHE_A_B, SELECT_CACHE_A, daemon, thing
from harness import make_dir, running_daemon
from waiting import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]  # history: asyncio and trio


def config(extra: str = "") -> str:
    """adapter/cache (a selected, b, and bad, which cannot start) and adapter/other;
    ``extra`` goes after the [daemon] table."""
    return (
        daemon(drain_timeout="5s", stop_timeout="5s", health_interval="1s", watch=False)
        + extra
        + CACHE_A_B
        + thing("adapter", "cache", "bad", fail="start")
        + thing("adapter", "other", "o")
        + SELECT_CACHE_A
    )


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def find(fams: dict[str, Any], name: str, **labels: str) -> float | None:
    family_name = name.removesuffix("_total").removesuffix("_bucket").removesuffix("_count")
    for s in fams[family_name].samples if family_name in fams else ():
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return None


def sample(fams: dict[str, Any], name: str, **labels: str) -> float:
    value = find(fams, name, **labels)
    assert value is not None, f"no sample {name} {labels}"
    return value


class StopFollowing(Exception):
    """The follower stops reading, as Ctrl-C does in oneiricctl."""


async def test_history_records_swaps_rollbacks_intents_and_reloads() -> None:
    async with running_daemon(config(), directory=make_dir()) as h:
        await h.call("pause", domain="adapter", key="cache", note="redis failover")
        await h.call("resume", domain="adapter", key="cache")
        await h.call("swap", domain="adapter", key="cache", provider="b")
        with pytest.raises(Exception, match="cannot start"):
            await h.call("swap", domain="adapter", key="cache", provider="bad")
        await h.call("reload")
        events = (await h.call("events"))["events"]
        kinds = [(e["kind"], e["key"]) for e in events]
        assert ("activate", "adapter/cache") in kinds and ("activate", "adapter/other") in kinds
        cache = [e for e in events if e["key"] == "adapter/cache"]
        # an override's intent entry follows the swap it caused (it carries the outcome)
        assert [e["kind"] for e in cache][-6:] == [
            "intent",
            "intent",
            "swap",
            "intent",
            "rollback",
            "intent",
        ]
        pause = next(e for e in cache if e["kind"] == "intent")
        assert pause["detail"]["note"] == "redis failover" and pause["detail"]["op"] == "pause"
        assert isinstance(pause["detail"]["uid"], int)
        swap = next(e for e in cache if e["kind"] == "swap")
        assert swap["detail"]["provider"] == "b" and swap["detail"]["previous"] == "a"
        assert swap["detail"]["duration_ms"] >= 0
        rollback = cache[-2]
        assert (
            rollback["detail"]["provider"] == "bad"
            and "cannot start" in rollback["detail"]["reason"]
        )
        assert events[-1]["kind"] == "reload" and events[-1]["detail"]["trigger"].startswith(
            "oneiricctl"
        )
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
        # filters: one key, one domain, a time window
        only = (await h.call("events", domain="adapter", key="other"))["events"]
        assert {e["key"] for e in only} == {"adapter/other"}
        assert len((await h.call("events", domain="service"))["events"]) == 0
        assert (await h.call("events", since_s=0))["events"] == []
        # status DOMAIN KEY carries the key's last entries; the health file does not
        status = await h.call("status", domain="adapter", key="cache")
        assert [e["kind"] for e in status["recent_events"]][-2:] == ["rollback", "intent"]
        assert status["recent_events"][-1]["detail"]["outcome"] == "failed"
        assert (await h.call("status"))["recent_events"] is None


def rotating(n: int) -> str:
    """Round ``n``: adapter/kN served, adapter/fN failing to start (the previous round's gone)."""
    return (
        daemon(drain_timeout="5s", stop_timeout="5s", watch=False)
        + thing("adapter", f"k{n}", "a")
        + thing("adapter", f"f{n}", "a", fail="start")
    )


async def test_the_per_key_history_of_removed_keys_is_dropped() -> None:
    """Reloads that add and remove keys (one served, one whose activation fails) keep the
    per-key history bounded: a removed key's tail goes once nothing of it serves or retires;
    its entries stay in the ring (``events``)."""
    rounds = 6
    cfg = rotating(0)
    async with running_daemon(cfg, directory=make_dir()) as h:
        history = h.rt.history
        for n in range(1, rounds):
            h.write_config(rotating(n))
            await h.call("reload")
            # the previous round's served key retires in the background
            await h.wait_for(lambda n=n: not history.of_key(f"adapter/k{n - 1}"))
            assert history.of_key(f"adapter/k{n}"), "a live key keeps its tail"
            assert history.of_key(f"adapter/f{n}"), "so does a failed one"
            assert not history.of_key(f"adapter/f{n - 1}")
            status = await h.call("status", domain="adapter", key=f"k{n}")
            assert [e["kind"] for e in status["recent_events"]] == ["activate"]
        assert history.keys_kept <= 2, history.keys_kept  # k5 and f5, not 12 keys
        removed = (await h.call("events", domain="adapter", key="k0"))["events"]
        assert [e["kind"] for e in removed] == ["activate", "remove"]


async def test_follow_streams_new_entries_as_they_happen() -> None:
    async with running_daemon(config(), directory=make_dir()) as h:
        got: list[dict[str, Any]] = []
        backlog_seen, pause_seen = threading.Event(), threading.Event()

        def on_event(event: Any) -> None:  # in the client's thread
            got.append(event["entry"])
            backlog_seen.set()
            if event["entry"]["detail"].get("op") == "pause":
                pause_seen.set()
                raise StopFollowing

        async def follow() -> None:
            with pytest.raises(StopFollowing):
                await h.stream("events", on_event, follow=True, domain="adapter", key="cache")

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            assert await anyio.to_thread.run_sync(backlog_seen.wait, 20)  # the backlog came
            await h.call("pause", domain="adapter", key="cache")
            assert await anyio.to_thread.run_sync(pause_seen.wait, 20)
        assert got[0]["kind"] == "activate" and got[-1]["detail"]["op"] == "pause"
        assert all(e["key"] == "adapter/cache" for e in got)


async def test_metrics_parse_with_prometheus_client_and_count_what_happened() -> None:
    async with running_daemon(config(), directory=make_dir()) as h:
        await h.call("pause", domain="adapter", key="other")
        await h.call("swap", domain="adapter", key="cache", provider="b")
        with pytest.raises(Exception, match="cannot start"):
            await h.call("swap", domain="adapter", key="cache", provider="bad")
        reply = await h.call("metrics")
        assert reply["content_type"].startswith("text/plain; version=0.0.4")
        fams = families(reply["text"])
        assert sample(fams, "oneiric_daemon_state", state="running") == 1
        assert sample(fams, "oneiric_components", domain="adapter", admin="paused") == 1
        assert sample(fams, "oneiric_components", domain="adapter", admin="active") == 1
        assert sample(fams, "oneiric_swaps_total", key="cache") == 1
        assert sample(fams, "oneiric_failed_swaps_total", key="cache") == 1
        assert sample(fams, "oneiric_intent_since_timestamp_seconds", key="other") > 0
        # histogram: 2 activations + 1 swap ok, 1 rollback
        assert sample(fams, "oneiric_swap_duration_seconds_count", outcome="ok") == 3
        assert sample(fams, "oneiric_swap_duration_seconds_count", outcome="failed") == 1
        assert sample(fams, "oneiric_swap_duration_seconds_bucket", outcome="ok", le="+Inf") == 3
        assert sample(fams, "oneiric_control_requests_total", op="pause", outcome="ok") == 1
        assert sample(fams, "oneiric_control_requests_total", op="swap", outcome="unavailable") == 1
        assert sample(fams, "oneiric_remote_status", status="disabled") == 1
        assert sample(fams, "oneiric_config_error") == 0


async def test_textfile_is_written_for_node_exporter() -> None:
    directory = make_dir()
    textfile = directory / "node" / "oneiric.prom"
    extra = f'\n[metrics]\ntextfile = "{textfile}"\n'
    async with running_daemon(config(extra), directory=directory) as h:

        def written() -> bool:
            try:
                fams = families(textfile.read_text())
            except FileNotFoundError:
                return False
            return "oneiric_components" in fams

        await wait_until(written, h.health_writes, timeout=20)
        await h.call("pause", domain="adapter", key="cache")

        def paused_in_file() -> bool:
            fams = families(textfile.read_text())
            return find(fams, "oneiric_components", admin="paused") == 1

        await wait_until(paused_in_file, h.health_writes, timeout=20)
        leftovers = [p.name for p in textfile.parent.iterdir() if p.name != "oneiric.prom"]
        assert leftovers == []  # written atomically: no temporary file left behind


async def test_follow_never_skips_entries_recorded_while_a_send_waits() -> None:
    """A slow follower: entries recorded while an earlier one is being sent still arrive."""
    from oneiric.control.protocol import EventsRequest
    from oneiric.streams import follow_events

    async with running_daemon(config(), directory=make_dir()) as h:
        history = h.rt.history
        health = h.daemon.health
        assert health is not None
        sent: list[str] = []
        all_sent = anyio.Event()

        async def slow_emit(event: Any) -> None:
            message = event.entry.message
            sent.append(message)
            if message == "a":  # while "a" is on its way, two more happen
                history.record("reload", "b")
                history.record("reload", "c")
                await anyio.lowlevel.checkpoint()
            if message == "d":
                all_sent.set()

        async with anyio.create_task_group() as tg:
            after = history.last_seq

            async def follow() -> None:
                await follow_events(h.rt, health, EventsRequest(id=1, follow=True), slow_emit)

            tg.start_soon(follow)
            await wait_until(lambda: len(sent) >= after)  # the backlog went out
            history.record("reload", "a")
            await wait_until(lambda: "c" in sent)
            history.record("reload", "d")
            with anyio.fail_after(20):
                await all_sent.wait()
            tg.cancel_scope.cancel()
        assert sent[after:] == ["a", "b", "c", "d"]
