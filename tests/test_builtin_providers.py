"""The built-in tasks and event handler, and the demo config of examples/ run end to end the
way docs/walkthrough.md drives it (over the control socket)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

from harness import Harness, make_dir, running_daemon
from oneiric.builtin.events import LogEvents
from oneiric.builtin.heartbeat import Heartbeat
from oneiric.builtin.tasks import Echo, Sleep
from oneiric.control.client import RemoteError
from oneiric.domains import Event

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def test_echo_and_sleep() -> None:
    assert await Echo().run({"a": 1}) == {"a": 1}
    assert (await Sleep(seconds="0s").run())["slept_s"] >= 0
    assert (await Sleep().run({"seconds": 0}))["slept_s"] >= 0
    assert Sleep(seconds="2s").seconds == 2


async def test_log_events_logs_and_keeps_recent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="oneiric.builtin.events")
    h = LogEvents(keep=2)
    for i in range(3):
        await h.handle(Event(topic="user.created", data={"id": i}, id=i + 1))
    await h.handle(Event(topic="odd", data=object(), id=9))
    assert h.handled == 4 and [e.id for e in h.recent] == [3, 9]
    assert 'event #1 user.created: {"id":0}' in caplog.text
    assert "event #9 odd: <object object" in caplog.text
    quiet = LogEvents(level="debug", keep=0)
    await quiet.handle(Event(topic="t"))
    assert not quiet.recent and quiet.handled == 1
    with pytest.raises(ValueError, match="level"):
        LogEvents(level="loud")
    with pytest.raises(ValueError, match="keep"):
        LogEvents(keep=-1)


def status(h: Harness, domain: str, key: str) -> Any:
    return h.rt.component_health(h.rt.state(domain, key))


async def test_the_demo_config_walkthrough(monkeypatch: pytest.MonkeyPatch) -> None:
    d = make_dir()
    monkeypatch.setenv("STATE_DIRECTORY", str(d / "state"))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    text = (EXAMPLES / "oneiricd.toml").read_text()
    async with running_daemon(text, directory=d) as h:
        snap = await h.call("status")
        assert {c["domain"] for c in snap["components"]} == {
            "adapter",
            "service",
            "task",
            "event",
            "workflow",
        }
        assert all(c["lifecycle"] == "ready" for c in snap["components"])
        hb = status(h, "service", "heartbeat")
        assert hb.run_state == "running" and hb.in_flight == 1
        beat = h.rt.state("service", "heartbeat").slot.current.instance  # type: ignore[union-attr]
        assert isinstance(beat, Heartbeat)

        # pause the cache: the heartbeat waits; resume: it goes on
        await h.call("pause", domain="adapter", key="cache", note="demo")
        await h.call("pause", domain="service", key="heartbeat")  # restart: beat right away
        await h.call("resume", domain="service", key="heartbeat")
        with anyio.fail_after(10):
            await beat.wait_until(lambda b: b.waiting)
        await h.call("resume", domain="adapter", key="cache")
        with anyio.fail_after(10):
            await beat.wait_until(lambda b: not b.waiting)

        # drain the tasks while a slow run is in flight
        await h.call("run", domain="task", key="slow", payload={"seconds": 0.2}, wait=False)
        drained = await h.call("drain", domain="task", timeout=10)
        assert drained["drained"] is True
        with pytest.raises(RemoteError):
            await h.call("run", domain="task", key="greet")
        await h.call("resume", domain="task")

        # swap the cache to SQLite and back
        swapped = await h.call("swap", domain="adapter", key="cache", provider="sqlite")
        assert swapped["provider"] == "sqlite"
        stats = await h.call("run", domain="task", key="cache-stats")
        assert stats["result"]["provider"] == "sqlite"
        assert (d / "state" / "cache.sqlite3").exists()
        await h.call("swap", domain="adapter", key="cache", clear=True)

        # emit an event, run the component written for the demo, run the workflow
        emitted = await h.call("emit", topic="user.created", data={"id": 42})
        assert emitted["delivered"] == ["event/audit"]
        greeted = await h.call("run", domain="task", key="greet", payload={"name": "ada"})
        assert greeted["result"] == "hello, ada! (greeting #1)"
        await h.wait_for(lambda: status(h, "event", "audit").delivered == 2)
        report = await h.call(
            "run", domain="workflow", key="nightly", payload={"nap": {"seconds": 0}}
        )
        assert report["ok"] is True
        assert [n["status"] for n in report["nodes"].values()] == ["ok", "ok", "ok"]
        explain = await h.call("explain", domain="adapter", key="cache")
        assert explain["winner"] == "memory"
