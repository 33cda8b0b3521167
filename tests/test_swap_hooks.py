"""Swap hooks (SPEC §10) through the daemon's socket: before_swap(new) on the outgoing
instance may veto (rolled back, the reason in the swap reply, status and explain),
after_swap(old) on the incoming one runs while the old one is still alive; both are bounded.
And the swap-duration percentiles a key reports."""

from __future__ import annotations

import pytest

import components as comp
from harness import Harness, make_dir, running_daemon
from oneiric.control.client import RemoteError

pytestmark = pytest.mark.anyio


def config(a_settings: str, b_settings: str = "", activation: str = "10s") -> str:
    return f"""
[daemon]
drain_timeout = "5s"
stop_timeout = "5s"
activation_timeout = "{activation}"
watch = false

[[component]]
domain = "adapter"
key = "cache"
provider = "a"
factory = "components:Hooked"
settings = {{ name = "a"{a_settings} }}

[[component]]
domain = "adapter"
key = "cache"
provider = "b"
factory = "components:Hooked"
settings = {{ name = "b"{b_settings} }}

[selections.adapter]
cache = "a"
"""


def row(h: Harness) -> dict[str, object]:
    [c] = h.rt.components("adapter", "cache")
    return {f: getattr(c, f) for f in ("provider", "last_error", "failed_swaps", "swaps")}


@pytest.mark.parametrize(
    ("veto", "reason"),
    [
        ("raise", "before_swap() raised RuntimeError: a is mid-transaction"),
        ("false", "before_swap() returned false"),
        ("block", "before_swap() did not finish within 0.3s"),
    ],
)
async def test_before_swap_veto_rolls_back_and_says_why(veto: str, reason: str) -> None:
    async with running_daemon(
        config(f', veto = "{veto}"', activation="300ms"), directory=make_dir()
    ) as h:
        with pytest.raises(RemoteError) as info:
            await h.call("swap", domain="adapter", key="cache", provider="b")
        assert info.value.code == "unavailable"
        assert "vetoed by 'a'" in info.value.message and reason in info.value.message
        status = row(h)
        assert status["provider"] == "a" and status["failed_swaps"] == 1
        assert reason in str(status["last_error"])
        explain = await h.call("explain", domain="adapter", key="cache")
        assert explain["active"] == "a" and reason in explain["last_error"]
        assert explain["override"] is None  # the override was rolled back with the swap
        assert "b" not in comp.LIVE and comp.CALLS["b.stop"] == 1  # the new one was stopped
        assert comp.CALLS["a.stop"] == 0 and comp.HANDOFFS == []


async def test_after_swap_sees_the_old_instance_still_alive() -> None:
    async with running_daemon(config(""), directory=make_dir()) as h:
        reply = await h.call("swap", domain="adapter", key="cache", provider="b")
        assert reply["outcome"] == "swapped"
        assert comp.HANDOFFS == [("b", "a", 0)]  # a was not stopped yet: b could copy from it
        assert comp.CALLS["a.before_swap"] == 1
        await h.wait_for(lambda: comp.CALLS["a.stop"] == 1)
        await h.call("swap", domain="adapter", key="cache", provider="a")
        assert comp.HANDOFFS[-1] == ("a", "b", 0)
        [c] = (await h.call("status", domain="adapter", key="cache"))["components"]
        assert c["swaps"] == 2
        p50, p95, p99 = c["swap_ms_p50"], c["swap_ms_p95"], c["swap_ms_p99"]
        assert 0 < p50 <= p95 <= p99
        assert p99 == max(h.rt.state("adapter", "cache").swap_ms)


async def test_a_failing_after_swap_is_reported_but_the_swap_stands() -> None:
    async with running_daemon(config("", ', after = "raise"'), directory=make_dir()) as h:
        reply = await h.call("swap", domain="adapter", key="cache", provider="b")
        assert reply["outcome"] == "swapped" and reply["provider"] == "b"
        status = row(h)
        assert status["provider"] == "b"
        assert "after_swap() of 'b': after_swap() raised RuntimeError" in str(status["last_error"])
