"""Event routing (SPEC §10) through a real daemon and its control socket: filters, priority,
fanout, retry with backoff under an enforced concurrency limit, the bounded dead-letter list,
replay, and the list surviving a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import domain_components as dc
from harness import Harness, make_dir, running_daemon
from oneiric.config import load_config
from oneiric.control.client import RemoteError
from oneiric.domains.event import filters_match
from oneiric.errors import ConfigError

pytestmark = pytest.mark.anyio

BASE = """
[daemon]
drain_timeout = "5s"
stop_timeout = "5s"
watch = false
"""


def handler(key: str, *, cls: str = "Handler", topics: str = '["order.*"]', **extra: str) -> str:
    lines = "".join(f"{k} = {v}\n" for k, v in extra.items())
    return f"""
[[component]]
domain = "event"
key = "{key}"
provider = "p"
factory = "domain_components:{cls}"
topics = {topics}
settings = {{ name = "{key}" }}
{lines}"""


def got(name: str) -> list[Any]:
    return [data for who, _t, data, _id in dc.RECEIVED if who == name]


def health(h: Harness, key: str) -> Any:
    return h.rt.component_health(h.rt.state("event", key))


def test_filters_compare_fields_strictly() -> None:
    data = {"kind": "signup", "user": {"tier": "gold", "admin": True, "n": 1}}
    assert filters_match({"kind": "signup", "user.tier": "gold"}, data)
    assert not filters_match({"kind": "refund"}, data)
    assert not filters_match({"user.missing": 1}, data)
    assert not filters_match({"user.n": True}, data)  # true is not 1
    assert not filters_match({"user.admin": 1}, data)
    assert filters_match({"user.n": 1.0}, data)
    assert not filters_match({"kind": "signup"}, "not a table")


@pytest.mark.parametrize(
    ("extra", "path", "detail"),
    [
        ('fanout = "all"', "component[0].fanout", 'expected "broadcast" or "exclusive"'),
        ("retry = { attempts = 0 }", "component[0].retry.attempts", "expected an integer >= 1"),
        ('retry = { attempts = 2, backof = "1s" }', "component[0].retry.backof", "unknown key"),
        ('retry = { backoff = "soon" }', "component[0].retry.backoff", "invalid duration"),
        ("filters = { kind = [1] }", "component[0].filters.kind", "string, number or boolean"),
        ('filters = { "a..b" = 1 }', "component[0].filters", "field name"),
    ],
)
def test_event_field_errors(tmp_path: Path, extra: str, path: str, detail: str) -> None:
    (tmp_path / "c.toml").write_text(handler("k", **dict([extra.split(" = ", 1)])))
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.toml")
    assert info.value.path == path
    assert detail in info.value.detail


def test_event_fields_only_for_event_components(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        '[[component]]\ndomain = "task"\nkey = "t"\nprovider = "p"\nfactory = "m:T"\n'
        "retry = { attempts = 2 }\n"
    )
    with pytest.raises(ConfigError, match="only valid for event components"):
        load_config(tmp_path / "c.toml")


async def test_filters_priority_and_exclusive_fanout() -> None:
    config = (
        BASE
        + handler("audit", priority="-5")
        + handler("gold", filters='{ "customer.tier" = "gold" }', priority="10")
        + handler("billing", fanout='"exclusive"', priority="5")
        + handler("late", priority="1")
    )
    async with running_daemon(config) as h:
        gold = {"customer": {"tier": "gold"}}
        reply = await h.call("emit", topic="order.paid", data=gold)
        # priority order; billing is exclusive, so lower-ranked late and audit never get it
        assert reply["delivered"] == ["event/gold", "event/billing"]
        reply = await h.call("emit", topic="order.paid", data={"customer": {"tier": "basic"}})
        assert reply["delivered"] == ["event/billing"]  # gold's filter does not hold
        await h.wait_for(lambda: len(got("billing")) == 2 and len(got("gold")) == 1)
        assert got("late") == [] and got("audit") == []


async def test_retry_keeps_order_under_concurrency_one_then_delivers() -> None:
    config = BASE + handler(
        "flaky",
        cls="FlakyHandler",
        concurrency="1",
        retry='{ attempts = 3, backoff = "20ms" }',
    )
    async with running_daemon(config) as h:
        first, second = {"n": 1, "fails": 2}, {"n": 2, "fails": 0}
        await h.call("emit", topic="order.a", data=first)
        await h.call("emit", topic="order.b", data=second)
        # the second needs no retry, yet never overtakes the first's retries
        await h.wait_for(lambda: len(got("flaky")) == 2)
        assert got("flaky") == [first, second]
        st = health(h, "flaky")
        assert (st.delivered, st.failed_deliveries, st.retried_deliveries) == (2, 2, 2)
        assert st.dead_letters == 0
        assert (await h.call("dead_letters"))["dead"] == []


async def test_dead_letters_replay_and_restart() -> None:
    config = BASE.replace("watch = false", "watch = false\ndead_letters = 2") + handler(
        "flaky", cls="FlakyHandler", retry='{ attempts = 2, backoff = "1ms" }'
    )
    directory = make_dir()
    dc.FlakyHandler.BROKEN.add("flaky")
    async with running_daemon(config, directory=directory) as h:
        reply = await h.call("emit", topic="order.a", data={"n": 1}, wait=True)
        assert reply["dead"] == ["event/flaky"] and reply["delivered"] == []
        for n in (2, 3):
            await h.call("emit", topic="order.a", data={"n": n}, wait=True)
        listing = await h.call("dead_letters")
        # bounded at 2: the oldest went, and that is counted, not silent
        assert [d["data"] for d in listing["dead"]] == [{"n": 2}, {"n": 3}]
        assert listing["overflow"] == 1 and listing["limit"] == 2
        first = listing["dead"][0]
        assert first["key"] == "flaky" and first["attempts"] == 2
        assert "flaky is broken" in first["error"]
        assert health(h, "flaky").dead_letters == 3
        with pytest.raises(RemoteError) as info:
            await h.call("replay", ids=[999])
        assert info.value.code == "not_found"
        dc.FlakyHandler.BROKEN.clear()  # the handler is fixed
        replayed = await h.call("replay", ids=[first["id"]], wait=True)
        assert replayed == {"replayed": {str(first["id"]): "delivered"}, "failed": {}}
        assert got("flaky") == [{"n": 2}]
        remaining = (await h.call("dead_letters"))["dead"]
        assert [d["data"] for d in remaining] == [{"n": 3}]
    # the list is in the state dir and survives a restart
    saved = json.loads((directory / "state" / "dead-letters.json").read_bytes())
    assert [d["data"] for d in saved["dead"]] == [{"n": 3}]
    async with running_daemon(config, directory=directory) as h:
        listing = await h.call("dead_letters")
        assert [d["data"] for d in listing["dead"]] == [{"n": 3}]
        assert listing["overflow"] == 1
        replayed = await h.call("replay", all=True, wait=True)
        assert list(replayed["replayed"].values()) == ["delivered"]
        assert (await h.call("dead_letters"))["dead"] == []


async def test_replay_to_a_paused_key_is_held_until_resume() -> None:
    config = BASE + handler("flaky", cls="FlakyHandler")
    dc.FlakyHandler.BROKEN.add("flaky")
    async with running_daemon(config) as h:
        await h.call("emit", topic="order.a", data=7, wait=True)
        [dead] = (await h.call("dead_letters"))["dead"]
        dc.FlakyHandler.BROKEN.clear()
        await h.call("pause", domain="event", key="flaky")
        reply = await h.call("replay", ids=[dead["id"]])
        assert reply["replayed"] == {str(dead["id"]): "held"}
        await h.call("resume", domain="event", key="flaky")
        await h.wait_for(lambda: got("flaky") == [7])
        dc.FlakyHandler.BROKEN.add("flaky")
        await h.call("emit", topic="order.a", data=8, wait=True)
        [dead] = (await h.call("dead_letters"))["dead"]
        dc.FlakyHandler.BROKEN.clear()
        reply = await h.call("replay", all=True)  # not waiting: an admitting key queues it
        assert reply["replayed"] == {str(dead["id"]): "queued"}
        await h.wait_for(lambda: got("flaky") == [7, 8])


def _ctl(h: Harness, *args: str) -> Any:
    from click.testing import CliRunner

    from oneiric.cli.oneiricctl import cli

    return CliRunner().invoke(cli, ["--socket", h.socket, *args], env={"COLUMNS": "200"})


async def test_oneiricctl_emit_wait_events_dead_and_replay() -> None:
    import anyio

    config = BASE + handler("flaky", cls="FlakyHandler", retry='{ attempts = 2, backoff = "1ms" }')
    dc.FlakyHandler.BROKEN.add("flaky")
    async with running_daemon(config) as h:
        out = await anyio.to_thread.run_sync(
            lambda: _ctl(h, "emit", "order.paid", "--data", '{"n": 1}', "--wait")
        )
        assert out.exit_code == 1  # dead is never silent
        assert "DEAD at event/flaky" in out.output
        out = await anyio.to_thread.run_sync(lambda: _ctl(h, "events", "--dead"))
        assert out.exit_code == 0, out.output
        lines = out.output.splitlines()
        assert lines[0] == "dead letters: 1 (kept at most 1000)"
        assert lines[2].split()[:5] == ["#1", "event/flaky", "order.paid", "#1", "2"]
        out = await anyio.to_thread.run_sync(lambda: _ctl(h, "--json", "events", "--dead"))
        assert json.loads(out.output)["dead"][0]["data"] == {"n": 1}
        out = await anyio.to_thread.run_sync(lambda: _ctl(h, "events"))  # the history (§11)
        assert out.exit_code == 0 and out.output.splitlines()[0].split() == [
            "TIME",
            "KIND",
            "KEY",
            "WHAT",
        ]
        assert "event/flaky" in out.output
        out = await anyio.to_thread.run_sync(lambda: _ctl(h, "events", "--dead", "--follow"))
        assert out.exit_code == 2 and "takes no filter" in out.output
        out = await anyio.to_thread.run_sync(lambda: _ctl(h, "replay"))
        assert out.exit_code == 2 and "IDs or --all" in out.output
        dc.FlakyHandler.BROKEN.clear()
        out = await anyio.to_thread.run_sync(lambda: _ctl(h, "replay", "1", "--wait"))
        assert out.exit_code == 0, out.output
        assert out.output.strip() == "#1: delivered"
        out = await anyio.to_thread.run_sync(lambda: _ctl(h, "replay", "1"))
        assert out.exit_code == 1 and "no dead letter #1" in out.output


async def test_emit_wait_reports_held_when_the_key_is_paused_before_its_turn() -> None:
    import anyio

    config = BASE + handler("k", concurrency="1")
    async with running_daemon(config) as h:
        await h.call("emit", topic="order.a", data={"gate": "g1"})
        await dc.passed("k:g1.started")  # the first delivery holds the only slot
        replies: list[Any] = []

        async def emit_waiting() -> None:
            replies.append(await h.call("emit", topic="order.b", data=2, wait=True))

        async with anyio.create_task_group() as tg:
            tg.start_soon(emit_waiting)
            await h.wait_for(lambda: health(h, "k").held_events == 1)
            await h.call("pause", domain="event", key="k")
        assert replies == [{"delivered": [], "held": ["event/k"], "dropped": [], "dead": []}]
        dc.gate("k:g1").set()
        await h.call("resume", domain="event", key="k")
        await h.wait_for(lambda: got("k") == [{"gate": "g1"}, 2])
