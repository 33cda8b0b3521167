"""Group commit through the real daemon: concurrent pauses over real control connections are
written together, and each reply leaves only after a flush that holds its pause (real journal
files in the state directory, a real Unix socket, one connection per client thread)."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import pytest

import oneiric.runtime.intent as intent_mod
from configs import component, daemon
from harness import make_dir, running_daemon
from oneiric.runtime import intent_doc
from oneiric.runtime.intent import IntentState, IntentStore
from oneiric.runtime.journal import Journal

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

CLIENTS = 16
KEYS = [f"k{i}" for i in range(CLIENTS)]
CONFIG = daemon(watch=False, health_interval="1h") + "".join(
    component("adapter", key, "p", "components:Thing", {"name": key}) for key in KEYS
)


REAL_SET_INTENT = intent_doc.set_intent


class HeldFirstFlush:
    """``journal_append`` that records each document once it is durable (the real append, with
    its ``fdatasync``, returned) and holds the first flush until every client's pause is
    applied in memory, so the others queue behind it: the next flush must take them all."""

    def __init__(self) -> None:
        self.durable: list[IntentState] = []
        self.calls = 0
        self.made = 0  # pause edits made; each is applied in memory in the same loop step
        self.all_made = threading.Event()
        self.all_queued = False

    def set_intent(self, *args: Any) -> intent_doc.Op:
        self.made += 1
        if self.made == CLIENTS:
            self.all_made.set()
        return REAL_SET_INTENT(*args)

    def __call__(self, journal: Journal, data: bytes) -> None:
        self.calls += 1
        if self.calls == 1:
            self.all_queued = self.all_made.wait(timeout=30)
        intent_mod.Journal.append(journal, data)
        self.durable.append(msgspec.json.decode(data, type=IntentState))

    def holds(self, key: str) -> bool:
        """Whether some document already on the device has ``key`` paused."""
        return any(f"adapter/{key}" in doc.keys for doc in list(self.durable))


async def test_concurrent_pauses_are_each_durable_before_their_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running_daemon(CONFIG, directory=make_dir()) as h:  # kept after the stop
        flushes = HeldFirstFlush()
        monkeypatch.setattr(intent_mod, "journal_append", flushes)
        monkeypatch.setattr(intent_doc, "set_intent", flushes.set_intent)
        durable_at_reply: dict[str, bool] = {}

        def pause(key: str) -> None:
            with h.client(timeout=60) as client:
                result: Any = client.call("pause", domain="adapter", key=key, note="gc")
                # checked the moment the reply is read, before anything else can flush
                durable_at_reply[key] = flushes.holds(key)
            assert result["affected"] == [f"adapter/{key}"]

        async with anyio.create_task_group() as tg:
            for key in KEYS:
                tg.start_soon(anyio.to_thread.run_sync, pause, key)

        assert flushes.all_queued, "the first flush was not held until every pause was queued"
        assert durable_at_reply == dict.fromkeys(KEYS, True)
        # one flush held the first pause; everything that arrived meanwhile went in one more
        assert flushes.calls == 2, flushes.calls
        state_dir = h.state_dir
    # what a restart recovers from the files: every pause
    fresh = IntentStore(state_dir / "intent.json")
    fresh.load()
    assert {k: fresh.effective("adapter", k).state for k in KEYS} == dict.fromkeys(KEYS, "paused")
