"""Event domain through the daemon and its control socket: glob matching, delivery to every
matching key, holding while paused (bounded, in order), overflow, concurrency, drain, swap."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import domain_components as dc
from harness import Harness, running_daemon
from oneiric.control.client import RemoteError
from oneiric.domains.event import check_topic
from oneiric.errors import BadRequest

pytestmark = pytest.mark.anyio


def handler(key: str, provider: str, topics: str, cls: str = "Handler", extra: str = "") -> str:
    return f"""
[[component]]
domain = "event"
key = "{key}"
provider = "{provider}"
factory = "domain_components:{cls}"
topics = {topics}
settings = {{ name = "{provider}" }}
{extra}
"""


CONFIG = (
    """
[daemon]
drain_timeout = "5s"
stop_timeout = "5s"
watch = false
"""
    + handler("users", "u", '["user.*"]', extra="queue_size = 2\nconcurrency = 1")
    + handler("users", "u2", '["user.*"]', extra="queue_size = 2\nconcurrency = 1")
    + handler("all", "every", '["*"]')
    + handler("orders", "o", '["order.created", "order.paid"]', cls="SyncHandler")
    + handler("broken", "nh", '["broken.*"]', cls="NoHandle")
    + """
[[component]]
domain = "task"
key = "emitter"
provider = "x"
factory = "domain_components:Emitter"

[selections.event]
users = "u"
"""
)


def status(h: Harness, key: str) -> Any:
    return h.rt.component_health(h.rt.state("event", key))


def received(name: str) -> list[Any]:
    return [data for who, _topic, data, _id in dc.RECEIVED if who == name]


async def emit(h: Harness, topic: str, data: Any = None) -> Any:
    return await h.call("emit", topic=topic, data=data)


async def test_glob_matching_delivers_to_every_matching_key() -> None:
    async with running_daemon(CONFIG) as h:
        reply = await emit(h, "user.created", {"id": 1})
        assert reply == {
            "delivered": ["event/all", "event/users"],
            "held": [],
            "dropped": [],
            "dead": [],
        }
        await h.wait_for(lambda: status(h, "users").delivered == 1 and status(h, "all").delivered)
        assert received("u") == [{"id": 1}] and received("every") == [{"id": 1}]
        reply = await emit(h, "order.paid", 5)
        assert reply["delivered"] == ["event/all", "event/orders"]  # not users
        await h.wait_for(lambda: status(h, "orders").delivered == 1)
        assert received("o") == [5]  # the sync handler ran in a thread
        assert (await emit(h, "order.shipped"))["delivered"] == ["event/all"]


async def test_paused_key_holds_events_in_order_and_counts_overflow() -> None:
    async with running_daemon(CONFIG) as h:
        await h.call("pause", domain="event", key="users")
        assert (await emit(h, "user.a", 1))["held"] == ["event/users"]
        assert (await emit(h, "user.b", 2))["held"] == ["event/users"]
        reply = await emit(h, "user.c", 3)
        assert reply["dropped"] == ["event/users"] and reply["delivered"] == ["event/all"]
        snap = (await h.call("status", domain="event", key="users"))["components"][0]
        assert snap["held_events"] == 2 and snap["dropped_events"] == 1
        assert received("u") == []
        await h.call("resume", domain="event", key="users")
        await h.wait_for(lambda: status(h, "users").delivered == 2)
        assert received("u") == [1, 2]  # in order, the dropped one never
        assert status(h, "users").held_events == 0


async def test_concurrency_limit_makes_deliveries_wait_their_turn() -> None:
    async with running_daemon(CONFIG) as h:
        await emit(h, "user.a", {"gate": "g1"})
        await emit(h, "user.b", {"gate": "g2"})
        await dc.passed("u:g1.started")
        assert status(h, "users").in_flight == 1 and status(h, "users").held_events == 1
        assert "u:g2.started" not in dc.GATES
        dc.gate("u:g1").set()
        await dc.passed("u:g2.started")
        dc.gate("u:g2").set()
        dc.gate("every:g1").set()
        dc.gate("every:g2").set()
        await h.wait_for(lambda: status(h, "users").delivered == 2)


async def test_drain_waits_for_the_delivery_in_flight_and_holds_the_rest() -> None:
    async with running_daemon(CONFIG) as h:
        await emit(h, "user.a", {"gate": "g"})
        await dc.passed("u:g.started")
        dc.gate("every:g").set()
        drained: dict[str, Any] = {}

        async def drain() -> None:
            drained.update(await h.call("drain", domain="event", key="users", timeout=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            await h.wait_for(lambda: status(h, "users").admin == "draining")
            assert (await emit(h, "user.b", 2))["held"] == ["event/users"]
            dc.gate("u:g").set()
        assert drained["drained"] is True
        assert status(h, "users").admin == "drained" and status(h, "users").held_events == 1
        await h.call("resume", domain="event", key="users")
        await h.wait_for(lambda: status(h, "users").delivered == 2)
        assert received("u") == [{"gate": "g"}, 2]


async def test_swap_sends_new_events_to_the_new_instance() -> None:
    async with running_daemon(CONFIG) as h:
        await emit(h, "user.a", {"gate": "g"})
        await dc.passed("u:g.started")
        dc.gate("every:g").set()
        await h.call("swap", domain="event", key="users", provider="u2")
        await emit(h, "user.b", "after")
        # concurrency = 1 is per key: the next delivery waits for the one in flight on "u"
        assert status(h, "users").held_events == 1 and "u.stop" not in dc.LOG
        dc.gate("u:g").set()
        await h.wait_for(lambda: received("u2") == ["after"])
        await h.wait_for(lambda: "u.stop" in dc.LOG)
        assert received("u") == [{"gate": "g"}]


async def test_failed_deliveries_are_counted() -> None:
    async with running_daemon(CONFIG) as h:
        await emit(h, "user.x", {"fail": "nope"})
        await emit(h, "broken.x")
        await h.wait_for(lambda: status(h, "users").failed_deliveries == 1)
        await h.wait_for(lambda: status(h, "broken").failed_deliveries == 1)
        assert "ValueError: nope" in status(h, "users").last_run_error
        assert "no handle(event) method" in status(h, "broken").last_run_error


async def test_components_emit_and_bad_topics_are_refused() -> None:
    async with running_daemon(CONFIG) as h:
        reply = await h.call(
            "run", domain="task", key="emitter", payload={"topic": "user.x", "data": 9}
        )
        assert reply["result"]["delivered"] == ["event/all", "event/users"]
        await h.wait_for(lambda: received("u") == [9])
        with pytest.raises(RemoteError) as err:
            await emit(h, "user.*")
        assert err.value.code == "bad_request" and "invalid topic" in err.value.message


async def test_no_match_and_handler_receives_the_event() -> None:
    cfg = CONFIG.replace('["*"]', '["misc.*"]')
    async with running_daemon(cfg) as h:
        assert await emit(h, "nothing.here") == {
            "delivered": [],
            "held": [],
            "dropped": [],
            "dead": [],
        }
        await emit(h, "user.one", 1)
        await emit(h, "user.two", 2)
        await h.wait_for(lambda: status(h, "users").delivered == 2)
        ids = [i for who, _t, _d, i in dc.RECEIVED if who == "u"]
        assert ids == sorted(ids) and len(set(ids)) == 2
        assert [t for who, t, _d, _i in dc.RECEIVED if who == "u"] == ["user.one", "user.two"]


def test_check_topic() -> None:
    assert check_topic("user.created") == "user.created"
    for bad in ("", "a b", "user.*", ".x", "x?"):
        with pytest.raises(BadRequest):
            check_topic(bad)


async def test_events_held_by_a_removed_key_are_counted_as_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dc.reset()
    base = """
[daemon]
watch = false
drain_timeout = "5s"
stop_timeout = "5s"
"""
    key = """
[[component]]
domain = "event"
key = "hooks"
provider = "h"
factory = "domain_components:Handler"
topics = ["order.*"]
concurrency = 1
settings = { name = "h" }
"""
    async with running_daemon(base + key) as h:
        await h.call("emit", topic="order.paid", data={"gate": "g"})
        await dc.passed("h:g.started")
        for i in range(4):  # queued behind the one in flight (concurrency 1)
            await h.call("emit", topic="order.paid", data={"n": i})
        h.write_config(base)
        await h.call("reload")  # the key is removed
        st = h.rt.state("event", "hooks")
        assert st.extras["dropped_events"] == 4 and st.extras["held_events"] == 0
        assert "removed with 4 undelivered event(s)" in caplog.text
        dc.gate("h:g").set()


async def test_blocking_plain_handlers_cannot_starve_the_daemon_of_threads() -> None:
    from domain_components import BlockingSyncHandler as handler
    from oneiric.domains._base import COMPONENT_THREADS

    handler.RELEASE.clear()
    config = """
[daemon]
watch = false
stop_timeout = "1s"
[[component]]
domain = "event"
key = "slow"
provider = "s"
factory = "domain_components:BlockingSyncHandler"
topics = ["job.*"]
"""
    async with running_daemon(config) as h:
        for _ in range(COMPONENT_THREADS + 8):
            await h.call("emit", topic="job.done")
        own = anyio.CapacityLimiter(1)  # the test's own thread, outside every shared pool
        for _ in range(COMPONENT_THREADS):  # every component thread is now blocked
            assert await anyio.to_thread.run_sync(handler.started.acquire, True, 10, limiter=own)

        # the daemon's own durable work still gets threads: pause commits and answers
        def pause() -> Any:
            with h.client(timeout=5) as c:  # a starved daemon would not answer in time
                return c.call("pause", domain="event", key="slow", note="still works")

        try:
            result = await anyio.to_thread.run_sync(pause, limiter=own)
            assert result["affected"] == ["event/slow"]
        finally:
            handler.RELEASE.set()
