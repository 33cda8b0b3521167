"""Service domain through the daemon and its control socket: supervised run(), graceful stop on
pause/drain, restart on resume, crash backoff, make-before-break swaps."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import domain_components as dc
from harness import Harness, running_daemon
from oneiric.control.client import RemoteError
from oneiric.domains import service
from oneiric.domains.service import BackoffPolicy

pytestmark = pytest.mark.anyio


def config(*components: str, stop_timeout: str = "5s") -> str:
    head = f"""
[daemon]
drain_timeout = "5s"
stop_timeout = "{stop_timeout}"
watch = false
"""
    return head + "\n".join(components)


def svc(provider: str, cls: str = "CooperativeService", key: str = "s", **settings: Any) -> str:
    extra = "".join(
        f", {k} = {str(v).lower() if isinstance(v, bool) else repr(v)}" for k, v in settings.items()
    )
    return f"""
[[component]]
domain = "service"
key = "{key}"
provider = "{provider}"
factory = "domain_components:{cls}"
settings = {{ name = "{provider}"{extra} }}
""".replace("'", '"')


def status(h: Harness, key: str = "s") -> Any:
    return h.rt.component_health(h.rt.state("service", key))


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "DEFAULT_BACKOFF", BackoffPolicy(initial=0, maximum=0))


async def test_pause_stops_gracefully_and_resume_restarts() -> None:
    async with running_daemon(config(svc("a"))) as h:
        await dc.passed("a.run.1")
        snap = (await h.call("status", domain="service", key="s"))["components"][0]
        assert snap["run_state"] == "running" and snap["in_flight"] == 1
        await h.call("pause", domain="service", key="s", note="maintenance")
        await h.wait_for(lambda: status(h).in_flight == 0 and status(h).run_state == "stopped")
        assert dc.LOG == ["a.run", "a.stop_run", "a.end"]  # asked, returned, not cancelled
        await h.call("resume", domain="service", key="s")
        await dc.passed("a.run.2")
        await h.wait_for(lambda: status(h).run_state == "running")


async def test_drain_cancels_a_service_without_stop_run() -> None:
    async with running_daemon(config(svc("a", cls="Service"))) as h:
        await dc.passed("a.run.1")
        result = await h.call("drain", domain="service", key="s", timeout=5)
        assert result["drained"] is True
        assert dc.LOG == ["a.run", "a.cancelled", "a.end"]
        snap = (await h.call("status", domain="service", key="s"))["components"][0]
        assert snap["admin"] == "drained" and snap["run_state"] == "stopped"


async def test_stop_run_ignored_is_cancelled_after_the_grace() -> None:
    async with running_daemon(config(svc("a", ignore_stop=True), stop_timeout="0")) as h:
        await dc.passed("a.run.1")
        await h.call("pause", domain="service", key="s")
        await h.wait_for(lambda: status(h).in_flight == 0)
        assert dc.LOG == ["a.run", "a.stop_run", "a.cancelled", "a.end"]


async def test_crash_is_counted_and_restarted() -> None:
    async with running_daemon(config(svc("a", crashes=2))) as h:
        await dc.passed("a.run.3")
        await h.wait_for(lambda: status(h).run_state == "running")
        snap = (await h.call("status", domain="service", key="s"))["components"][0]
        assert snap["restarts"] == 2
        assert "RuntimeError: a crash 2" in snap["last_run_error"]
        assert snap["last_error"] is None  # cleared by the healthy attempt
        assert snap["backoff_s"] is None


async def test_backoff_is_visible_capped_and_resume_skips_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "DEFAULT_BACKOFF", BackoffPolicy(initial=1000, maximum=1500))
    async with running_daemon(config(svc("a", crashes=5))) as h:
        await h.wait_for(lambda: status(h).run_state == "backoff")
        snap = (await h.call("status", domain="service", key="s"))["components"][0]
        assert snap["backoff_s"] == 1000 and snap["restarts"] == 1
        assert "run() crashed: RuntimeError: a crash 1" in snap["last_error"]
        await h.call("pause", domain="service", key="s")
        await h.wait_for(lambda: status(h).run_state == "stopped")
        await h.call("resume", domain="service", key="s")  # restarts at once, no 1000 s wait
        await dc.passed("a.run.2")
        await h.wait_for(lambda: status(h).restarts == 2)
        assert status(h).backoff_s == 1500  # 2000, capped at the maximum


async def test_run_returning_on_its_own_is_not_restarted_until_resumed() -> None:
    async with running_daemon(config(svc("a", exits=True))) as h:
        await h.wait_for(lambda: status(h).run_state == "exited")
        assert status(h).in_flight == 0 and dc.COUNTS["a.run"] == 1
        await h.call("pause", domain="service", key="s")
        await h.call("resume", domain="service", key="s")
        await dc.passed("a.run.2")


async def test_swap_starts_the_new_run_before_stopping_the_old() -> None:
    cfg = config(svc("a"), svc("b"), '[selections.service]\ns = "a"\n')
    async with running_daemon(cfg) as h:
        await dc.passed("a.run.1")
        result = await h.call("swap", domain="service", key="s", provider="b")
        assert result["provider"] == "b"
        await dc.passed("b.run.1")
        await h.wait_for(lambda: "a.stop" in dc.LOG)
        order = dc.LOG
        assert order.index("b.run") < order.index("a.stop_run") < order.index("a.end")
        assert order.index("a.end") < order.index("a.stop")  # stopped after its loop ended
        await h.wait_for(lambda: status(h).in_flight == 1 and status(h).provider == "b")
        assert status(h).run_state == "running"


async def test_removal_by_reload_stops_the_loop_then_the_instance() -> None:
    cfg = config(svc("a"), svc("k", key="other"))
    async with running_daemon(cfg) as h:
        await dc.passed("a.run.1")
        h.write_config(config(svc("k", key="other")))
        await h.call("reload")
        await h.wait_for(lambda: "a.stop" in dc.LOG)
        assert dc.LOG.index("a.end") < dc.LOG.index("a.stop")


async def test_daemon_stop_ends_run_loops_before_stopping_instances() -> None:
    async with running_daemon(config(svc("a", cls="Service"))):
        await dc.passed("a.run.1")
    assert dc.LOG == ["a.run", "a.cancelled", "a.end", "a.stop"]


async def test_sync_run_runs_in_a_thread_and_stops_via_stop_run() -> None:
    async with running_daemon(config(svc("t", cls="SyncService"))) as h:
        await h.wait_for(lambda: status(h).run_state == "running")
        await h.call("pause", domain="service", key="s")
        await h.wait_for(lambda: status(h).in_flight == 0)
        assert dc.LOG == ["t.run", "t.end"]


async def test_a_service_without_run_is_just_an_instance() -> None:
    cfg = config(
        '[[component]]\ndomain = "service"\nkey = "s"\nprovider = "x"\n'
        'factory = "domain_components:NoRun"\n'
    )
    async with running_daemon(cfg) as h:
        await h.wait_for(lambda: status(h).lifecycle == "ready")
        assert status(h).run_state is None and status(h).in_flight == 0


def test_backoff_policy_doubles_and_caps() -> None:
    p = BackoffPolicy(initial=0.5, maximum=4)
    assert [p.delay(n) for n in range(6)] == [0, 0.5, 1, 2, 4, 4]
    assert p.delay(10_000) == 4


async def test_plain_run_keeps_its_lease_until_the_thread_returns() -> None:
    from domain_components import BlockingSyncService as svc

    svc.STARTED.clear()
    svc.RELEASE.clear()
    config = """
[daemon]
watch = false
stop_timeout = "1s"
[[component]]
domain = "service"
key = "sync"
provider = "s"
factory = "domain_components:BlockingSyncService"
"""
    async with running_daemon(config) as h:
        assert await anyio.to_thread.run_sync(svc.STARTED.wait, 10)
        first = await h.call("drain", domain="service", key="sync", wait=False)
        assert first["in_flight"] == {"service/sync": 1}
        # the grace period passes but the thread cannot be interrupted: still in flight
        with pytest.raises(RemoteError) as err:
            await h.call("drain", domain="service", key="sync", timeout=1.5)
        assert err.value.detail == {"in_flight": {"service/sync": 1}}
        svc.STARTED.clear()
        svc.RELEASE.set()  # run() returns: the drain completes
        done = await h.call("drain", domain="service", key="sync", timeout=10)
        assert done["drained"] is True
        svc.RELEASE.clear()
        await h.call("resume", domain="service", key="sync")
        assert await anyio.to_thread.run_sync(svc.STARTED.wait, 10)
        assert svc.max_active == 1
        svc.RELEASE.set()


PARKED_BASE = """
[daemon]
watch = false
drain_timeout = "5s"
stop_timeout = "5s"
"""
PARKED_SVC = """
[[component]]
domain = "service"
key = "worker"
provider = "{0}"
factory = "domain_components:CooperativeService"
settings = {{ name = "{0}" }}
"""


async def test_resume_applies_a_parked_swap_without_restarting_the_old_service() -> None:
    dc.reset()
    base = PARKED_BASE + PARKED_SVC.format("old") + PARKED_SVC.format("new")

    def cfg(selected: str) -> str:
        return base + f'[selections.service]\nworker = "{selected}"\n'

    async with running_daemon(cfg("old")) as h:
        st = h.rt.state("service", "worker")
        await dc.passed("old.run.1")
        await h.call("pause", domain="service", key="worker")
        await h.wait_for(lambda: st.slot.in_flight == 0)
        h.write_config(cfg("new"))
        assert (await h.call("reload"))["outcomes"] == {"service/worker": "parked"}
        await h.call("resume", domain="service", key="worker")
        await dc.passed("new.run.1")
        assert dc.COUNTS["old.run"] == 1, "the replaced instance's run() was started again"


async def test_resume_applies_a_parked_removal_without_restarting_the_service() -> None:
    dc.reset()
    async with running_daemon(PARKED_BASE + PARKED_SVC.format("old")) as h:
        st = h.rt.state("service", "worker")
        await dc.passed("old.run.1")
        await h.call("pause", domain="service", key="worker")
        await h.wait_for(lambda: st.slot.in_flight == 0)
        h.write_config(PARKED_BASE)
        await h.call("reload")
        assert st.parked_removal
        await h.call("resume", domain="service", key="worker")
        await h.wait_for(lambda: st.slot.current is None and not st.slot.retiring)
        assert dc.COUNTS["old.run"] == 1
