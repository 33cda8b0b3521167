"""Operator intent: transitions, precedence, overrides, durability and group commit."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import anyio
import anyio.to_thread
import msgspec
import pytest

import oneiric.runtime.intent as intent_mod
from clocks import FakeClock
from oneiric.errors import BadRequest, ConfigError, NotDurable
from oneiric.runtime.intent import (
    Effective,
    Intent,
    IntentState,
    IntentStore,
    scope_label,
)
from oneiric.runtime.journal import Journal
from waiting import wait_until

WRITER = Path(__file__).with_name("_intent_writer.py")
SRC = Path(__file__).resolve().parents[1] / "src"

pytestmark = pytest.mark.both_backends  # the async ones: on asyncio and on trio


class Who(TypedDict):
    uid: int
    pid: int


WHO: Who = {"uid": 1000, "pid": 4242}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "intent.json"


@pytest.fixture
def store(path: Path) -> IntentStore:
    s = IntentStore(path)
    s.load()
    return s


def reload(path: Path) -> IntentStore:
    """A fresh store that sees only what reached the disk."""
    s = IntentStore(path)
    s.load()
    return s


class CountingWriter:
    """Wraps the real journal append and counts calls (runs in worker threads)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, journal: Journal, data: bytes) -> None:
        with self._lock:
            self.calls += 1
        journal.append(data, compact=False)  # as journal_append: compaction comes after


class ScriptedWriter:
    """Each call waits for its own gate, then fails or writes for real, as scripted."""

    def __init__(self, outcomes: list[bool]) -> None:
        self.outcomes = outcomes  # True = succeed
        self.entered = [threading.Event() for _ in outcomes]
        self.gates = [threading.Event() for _ in outcomes]
        self.calls = 0

    def __call__(self, journal: Journal, data: bytes) -> None:
        i = self.calls
        self.calls += 1
        self.entered[i].set()
        self.gates[i].wait()
        if not self.outcomes[i]:
            raise OSError(28, "No space left on device")
        journal.append(data, compact=False)  # as journal_append: compaction comes after

    async def wait_entered(self, i: int) -> None:
        await anyio.to_thread.run_sync(self.entered[i].wait)


# --- precedence --------------------------------------------------------------------------

# (global, domain, key) intents -> expected (state, scope, note)
PRECEDENCE = [
    ((None, None, None), ("active", "", None)),
    (("paused", None, None), ("paused", "global", "g")),
    ((None, "paused", None), ("paused", "domain", "d")),
    ((None, None, "paused"), ("paused", "key", "k")),
    (("paused", "paused", None), ("paused", "domain", "d")),
    (("paused", "paused", "paused"), ("paused", "key", "k")),
    (("paused", None, "paused"), ("paused", "key", "k")),
    (("draining", None, "paused"), ("draining", "global", "g")),
    (("paused", "draining", "paused"), ("draining", "domain", "d")),
    (("paused", "paused", "draining"), ("draining", "key", "k")),
    (("draining", "draining", None), ("draining", "domain", "d")),
    (("draining", "draining", "draining"), ("draining", "key", "k")),
    ((None, "draining", "paused"), ("draining", "domain", "d")),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("intents", "expected"), PRECEDENCE)
async def test_effective_precedence(
    store: IntentStore,
    intents: tuple[str | None, str | None, str | None],
    expected: tuple[str, str, str | None],
) -> None:
    g, d, k = intents
    scopes = [((None, None), g, "g"), (("adapter", None), d, "d"), (("adapter", "cache"), k, "k")]
    for (dom, key), state, note in scopes:
        if state == "paused":
            await store.pause(dom, key, note=note, **WHO)
        elif state == "draining":
            await store.drain(dom, key, note=note, **WHO)
    eff = store.effective("adapter", "cache")
    assert (eff.state, eff.scope, eff.intent.note if eff.intent else None) == expected
    # other keys and domains only see the wider scopes
    other = store.effective("adapter", "other")
    assert other.scope != "key"
    assert store.effective("service", "cache").scope in ("global", "")
    # and a fresh store computes the same thing from disk
    assert reload(store.path).effective("adapter", "cache") == eff


@pytest.mark.anyio
async def test_intent_records_who_when_and_note(path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    store = IntentStore(path, clock=clock)
    store.load()
    await store.pause("task", "nightly", uid=7, pid=99, note="disk swap")
    eff = store.effective("task", "nightly")
    assert isinstance(eff, Effective)
    assert eff.intent is not None
    assert (eff.intent.state, eff.intent.uid, eff.intent.pid, eff.intent.note) == (
        "paused",
        7,
        99,
        "disk swap",
    )
    assert eff.intent.at == 1_700_000_000.0  # when it was given, on the store's clock
    clock.advance(60)
    await store.set_override("task", "nightly", "other", uid=7, pid=99)
    meta = store.override_meta("task", "nightly")
    assert meta is not None and meta.at == 1_700_000_060.0
    assert reload(path).effective("task", "nightly").intent == eff.intent  # persisted as given


def test_intent_is_stamped_with_wall_clock_time_by_default(path: Path) -> None:
    assert IntentStore(path)._clock is time.time  # operators read these as dates


@pytest.mark.anyio
async def test_later_intent_at_same_scope_replaces(store: IntentStore) -> None:
    await store.drain("event", "audit", note="first", **WHO)
    await store.pause("event", "audit", note="second", **WHO)
    eff = store.effective("event", "audit")
    assert (eff.state, eff.intent and eff.intent.note) == ("paused", "second")


@pytest.mark.anyio
async def test_domain_intent_applies_to_keys_that_appear_later(store: IntentStore) -> None:
    await store.pause("service", None, **WHO)
    assert store.effective("service", "never-seen-before").state == "paused"
    assert store.effective("adapter", "cache").state == "active"


# --- resume ------------------------------------------------------------------------------


async def _pause_all_levels(store: IntentStore) -> None:
    await store.pause(None, None, note="g", **WHO)
    await store.pause("adapter", None, note="d", **WHO)
    await store.drain("adapter", "cache", note="k", **WHO)
    await store.pause("adapter", "db", **WHO)
    await store.pause("service", None, **WHO)
    await store.pause("service", "beat", **WHO)


@pytest.mark.anyio
async def test_resume_everything_clears_all(store: IntentStore) -> None:
    await _pause_all_levels(store)
    await store.resume(None, None, **WHO)
    s = store.state
    assert (s.everything, s.domains, s.keys) == (None, {}, {})
    assert store.effective("adapter", "cache") == Effective("active", None, "")
    assert reload(store.path).state == s


@pytest.mark.anyio
async def test_resume_domain_clears_domain_and_its_keys_only(store: IntentStore) -> None:
    await _pause_all_levels(store)
    await store.resume("adapter", None, **WHO)
    s = reload(store.path).state
    assert set(s.domains) == {"service"}
    assert set(s.keys) == {"service/beat"}
    assert s.everything is not None
    # the global pause still holds adapter keys
    eff = store.effective("adapter", "cache")
    assert (eff.state, eff.scope) == ("paused", "global")


@pytest.mark.anyio
async def test_resume_key_leaves_wider_scopes_in_force(store: IntentStore) -> None:
    await store.pause("adapter", None, note="domain wide", **WHO)
    await store.drain("adapter", "cache", **WHO)
    await store.pause("adapter", "db", **WHO)
    await store.resume("adapter", "cache", **WHO)
    eff = store.effective("adapter", "cache")
    assert (eff.state, eff.scope, eff.intent and eff.intent.note) == (
        "paused",
        "domain",
        "domain wide",
    )
    assert set(reload(store.path).state.keys) == {"adapter/db"}


@pytest.mark.anyio
async def test_resume_domain_does_not_touch_a_domain_sharing_a_prefix(
    store: IntentStore,
) -> None:
    # "adapter/x" keys must not be matched by a sloppy prefix such as "adapt"
    await store.pause("adapter", "x", **WHO)
    await store.pause("event", "adapter", **WHO)
    await store.resume("event", None, **WHO)
    assert set(store.state.keys) == {"adapter/x"}


# --- overrides ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_override_set_replace_clear_and_persist(store: IntentStore, path: Path) -> None:
    assert store.override("adapter", "cache") is None
    await store.set_override("adapter", "cache", "sqlite", uid=5, pid=6, note="migration")
    await store.set_override("adapter", "db", "pg", **WHO)
    assert store.override("adapter", "cache") == "sqlite"
    meta = store.override_meta("adapter", "cache")
    assert meta is not None
    assert (meta.uid, meta.pid, meta.note) == (5, 6, "migration")

    fresh = reload(path)
    assert fresh.override("adapter", "cache") == "sqlite"
    assert fresh.override_meta("adapter", "cache") == meta

    await store.set_override("adapter", "cache", "memory", **WHO)
    assert reload(path).override("adapter", "cache") == "memory"

    await store.set_override("adapter", "cache", None, **WHO)
    fresh = reload(path)
    assert fresh.override("adapter", "cache") is None
    assert fresh.override_meta("adapter", "cache") is None
    assert fresh.override("adapter", "db") == "pg"  # others untouched
    # overrides are independent of pause/resume
    await store.resume(None, None, **WHO)
    assert reload(path).override("adapter", "db") == "pg"


@pytest.mark.anyio
async def test_override_rejects_empty_provider(store: IntentStore) -> None:
    with pytest.raises(BadRequest, match="empty provider"):
        await store.set_override("adapter", "cache", "", **WHO)


# --- validation and helpers --------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("domain", "key", "match"),
    [
        ("adaptr", None, "unknown domain 'adaptr'"),
        (None, "cache", "without a domain"),
        ("adapter", "", "empty key"),
    ],
)
async def test_bad_scopes_are_rejected_without_side_effects(
    store: IntentStore, path: Path, domain: str | None, key: str | None, match: str
) -> None:
    for call in (store.pause, store.drain):
        with pytest.raises(BadRequest, match=match):
            await call(domain, key, **WHO)
    with pytest.raises(BadRequest, match=match):
        await store.resume(domain, key, **WHO)
    with pytest.raises(BadRequest, match=match):
        store.keys_affected(domain, key, [])
    assert store.version == 1  # only the load
    assert not path.exists()


def test_keys_affected(store: IntentStore) -> None:
    known = [
        ("adapter", "cache"),
        ("service", "beat"),
        ("adapter", "db"),
        ("adapter", "cache"),  # duplicates collapse
        ("event", "audit"),
    ]
    assert store.keys_affected(None, None, known) == [
        ("adapter", "cache"),
        ("service", "beat"),
        ("adapter", "db"),
        ("event", "audit"),
    ]
    assert store.keys_affected("adapter", None, known) == [("adapter", "cache"), ("adapter", "db")]
    assert store.keys_affected("adapter", "db", iter(known)) == [("adapter", "db")]
    assert store.keys_affected("adapter", "nope", known) == []
    assert store.keys_affected("workflow", None, known) == []


def test_scope_label() -> None:
    assert scope_label(None, None) == "*"
    assert scope_label("adapter", None) == "adapter/*"
    assert scope_label("adapter", "cache") == "adapter/cache"


@pytest.mark.anyio
async def test_version_bumps_on_every_mutation(store: IntentStore) -> None:
    v = store.version
    await store.pause("adapter", "cache", **WHO)
    await store.pause("adapter", "cache", **WHO)  # identical state still counts
    await store.resume("adapter", "cache", **WHO)
    await store.set_override("adapter", "cache", "x", **WHO)
    assert store.version == v + 4


@pytest.mark.anyio
async def test_state_view_is_not_edited_in_place(store: IntentStore) -> None:
    before = store.state
    await store.pause("adapter", "cache", **WHO)
    assert before.keys == {}
    assert "adapter/cache" in store.state.keys


# --- load --------------------------------------------------------------------------------


def test_missing_file_is_empty_and_nothing_is_created(path: Path) -> None:
    s = reload(path)
    assert s.state == IntentState()
    assert s.effective("adapter", "cache").state == "active"
    assert not path.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b'{"keys": {"adapter/x": {"state": "sleeping", "at": 1}}}', b"[]"],
)
def test_corrupt_file_is_a_config_error_that_says_what_to_do(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="corrupt") as info:
        reload(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "move it aside" in msg
    assert path.read_bytes() == content  # never silently dropped or rewritten


def test_newer_schema_is_refused(path: Path) -> None:
    path.write_bytes(b'{"schema": 2}')
    with pytest.raises(ConfigError, match="schema 2"):
        reload(path)


def test_unreadable_file_is_a_config_error(path: Path) -> None:
    path.mkdir()  # reading a directory fails with an OSError that is not "missing"
    with pytest.raises(ConfigError, match="cannot read"):
        reload(path)


def test_unknown_fields_are_tolerated_for_forward_compatibility(path: Path) -> None:
    path.write_bytes(
        b'{"schema": 1, "future": [1, 2], "keys": {"adapter/x": '
        b'{"state": "paused", "uid": 0, "pid": 1, "at": 5.0, "who": "ops"}}}'
    )
    eff = reload(path).effective("adapter", "x")
    assert eff.intent == Intent(state="paused", uid=0, pid=1, at=5.0)


@pytest.mark.anyio
async def test_persistence_round_trip(store: IntentStore, path: Path) -> None:
    await _pause_all_levels(store)
    await store.set_override("task", "nightly", "v2", uid=None, pid=None, note="n")
    fresh = reload(path)
    assert fresh.state == store.state
    doc = Journal(path).load()
    assert doc is not None and msgspec.json.decode(doc)["schema"] == 1
    assert oct(Journal(path).path.stat().st_mode & 0o777) == oct(0o644)
    # reload() replaces whatever was in memory
    await store.resume(None, None, **WHO)
    fresh.load()
    assert fresh.state.keys == {}


# --- group commit and failures -----------------------------------------------------------


@pytest.mark.anyio
async def test_group_commit_64_concurrent_pauses(
    store: IntentStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = CountingWriter()
    monkeypatch.setattr(intent_mod, "journal_append", writer)
    async with anyio.create_task_group() as tg:
        for i in range(64):
            tg.start_soon(functools.partial(store.pause, "adapter", f"k{i}", **WHO))
    assert 1 <= writer.calls <= 4, writer.calls
    assert set(reload(path).state.keys) == {f"adapter/k{i}" for i in range(64)}


@pytest.mark.anyio
async def test_every_mutation_is_written_even_if_state_is_identical(
    store: IntentStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.pause("adapter", "cache", **WHO)
    writer = CountingWriter()
    monkeypatch.setattr(intent_mod, "journal_append", writer)
    size = Journal(path).path.stat().st_size
    await store.pause("adapter", "cache", **WHO)
    assert writer.calls == 1
    assert Journal(path).path.stat().st_size > size  # a second record, not skipped
    assert "adapter/cache" in reload(path).state.keys


@pytest.mark.anyio
async def test_write_failure_reaches_every_uncommitted_caller_and_rolls_back(
    store: IntentStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # write 0: k0 alone, succeeds; write 1: k1..k9 together, fails;
    # write 2: k10, which arrived while write 1 was running, succeeds.
    writer = ScriptedWriter([True, False, True])
    monkeypatch.setattr(intent_mod, "journal_append", writer)
    results: dict[str, BaseException | None] = {}

    async def pause(key: str) -> None:
        try:
            await store.pause("adapter", key, **WHO)
        except Exception as exc:
            results[key] = exc
        else:
            results[key] = None

    async with anyio.create_task_group() as tg:
        tg.start_soon(pause, "k0")
        await writer.wait_entered(0)
        for i in range(1, 10):
            tg.start_soon(pause, f"k{i}")
        await wait_until(lambda: len(store.state.keys) == 10)  # k1..k9 queued
        writer.gates[0].set()
        await writer.wait_entered(1)
        assert results == {"k0": None}  # acknowledged only once its own write finished
        tg.start_soon(pause, "k10")
        await wait_until(lambda: len(store.state.keys) == 11)
        version = store.version
        writer.gates[1].set()
        await writer.wait_entered(2)
        # the failed batch is rolled back in memory while k10 stays pending
        assert set(store.state.keys) == {"adapter/k0", "adapter/k10"}
        assert store.version == version + 1
        writer.gates[2].set()

    assert writer.calls == 3
    assert results["k0"] is None
    assert results["k10"] is None
    for i in range(1, 10):
        err = results[f"k{i}"]
        assert isinstance(err, NotDurable), err
        assert isinstance(err.__cause__, OSError)
        assert "No space left" in str(err)
        assert str(path) in str(err)
        assert store.effective("adapter", f"k{i}").state == "active"
    assert set(reload(path).state.keys) == {"adapter/k0", "adapter/k10"}


@pytest.mark.anyio
async def test_failed_identical_mutation_can_be_retried(
    store: IntentStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ScriptedWriter([False, True])
    for g in writer.gates:
        g.set()
    monkeypatch.setattr(intent_mod, "journal_append", writer)
    with pytest.raises(NotDurable):
        await store.pause("adapter", "cache", **WHO)
    assert store.effective("adapter", "cache").state == "active"
    assert not path.exists()
    await store.pause("adapter", "cache", **WHO)
    assert reload(path).effective("adapter", "cache").state == "paused"


@pytest.mark.anyio
async def test_cancelled_caller_still_resolves_its_mutation(
    store: IntentStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ScriptedWriter([True])
    monkeypatch.setattr(intent_mod, "journal_append", writer)
    finished = anyio.Event()

    async def pause_then_note() -> None:
        try:
            await store.pause("adapter", "cache", **WHO)
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(pause_then_note)
        await writer.wait_entered(0)
        tg.cancel_scope.cancel()  # the caller is cancelled mid-write...
        writer.gates[0].set()
        await finished.wait()
    # ...yet the write completed and the mutation is durable, not left dangling in memory
    assert store.effective("adapter", "cache").state == "paused"
    assert reload(path).effective("adapter", "cache").state == "paused"


@pytest.mark.anyio
async def test_a_cancelled_waiter_still_gets_its_mutation_written(
    store: IntentStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller queued behind a running write is cancelled: nobody else is queued to write its
    mutation, so it must write it itself (shielded) before it takes its cancellation."""
    writer = ScriptedWriter([True, True])
    writer.gates[1].set()  # the second write goes through at once
    monkeypatch.setattr(intent_mod, "journal_append", writer)
    finished = anyio.Event()

    async def queued_pause(scope_ready: Callable[[anyio.CancelScope], None]) -> None:
        with anyio.CancelScope() as scope:
            scope_ready(scope)
            try:
                await store.pause("adapter", "queued", **WHO)
            finally:
                finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(store.pause, "adapter", "first", **WHO))
        await writer.wait_entered(0)  # the first write is running (held at its gate)
        scopes: list[anyio.CancelScope] = []
        tg.start_soon(queued_pause, scopes.append)
        await wait_until(lambda: store.effective("adapter", "queued").state == "paused")
        scopes[0].cancel()  # cancelled while it waits for the first write to end
        writer.gates[0].set()
        await finished.wait()
    assert writer.calls == 2  # its own write, after the first
    assert reload(path).effective("adapter", "queued").state == "paused"
    assert reload(path).effective("adapter", "first").state == "paused"


@pytest.mark.anyio
async def test_a_compaction_does_not_hold_the_replies_of_the_commit_that_triggered_it(
    store: IntentStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch that makes the journal due for compaction is durable before the new
    checkpoint is written: its queued callers are answered while the compaction still runs
    (only the caller that wrote the batch waits for it)."""
    from oneiric.runtime import journal as journal_mod

    monkeypatch.setattr(journal_mod.Journal, "compaction_due", lambda self: True)  # each commit
    first = ScriptedWriter([True, True])  # the first write is held: the others queue
    first.gates[1].set()
    monkeypatch.setattr(intent_mod, "journal_append", first)
    compacting, release = threading.Event(), threading.Event()

    def held_compaction(journal: Journal, data: bytes) -> None:
        if first.calls == 2:  # the second batch's compaction: hold it
            compacting.set()
            release.wait(30)
        journal.compact_if_due(data)

    monkeypatch.setattr(intent_mod, "journal_compact", held_compaction)
    answered: list[str] = []

    async def pause(key: str) -> None:
        await store.pause("adapter", key, **WHO)
        answered.append(key)

    async with anyio.create_task_group() as tg:
        tg.start_soon(pause, "a")
        await first.wait_entered(0)
        for key in ("b", "c", "d"):
            tg.start_soon(pause, key)
        await wait_until(lambda: store.effective("adapter", "d").state == "paused")
        first.gates[0].set()  # "a" is written; b, c and d go together in the next batch
        await anyio.to_thread.run_sync(compacting.wait, 30)
        # the next batch's compaction is held: two of b, c, d are answered (the third wrote
        # the batch and waits for its compaction)
        await wait_until(lambda: len(answered) == 3)
        assert answered[0] == "a" and len(set(answered[1:]) & {"b", "c", "d"}) == 2
        release.set()
    assert sorted(answered) == ["a", "b", "c", "d"]
    assert first.calls == 2
    assert reload(path).state.keys.keys() == {f"adapter/{k}" for k in "abcd"}


# --- crash safety ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(4))
def test_sigkill_mid_storm_keeps_every_acknowledged_mutation(tmp_path: Path, round_: int) -> None:
    path = tmp_path / "intent.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), "4"],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    acked: list[str] = []
    try:
        want = 40 + 25 * round_
        while len(acked) < want:
            line = proc.stdout.readline()  # waits on the pipe; EOF means the writer died
            assert line, f"writer exited early with {proc.wait()}"
            acked.append(line.split()[1])
        proc.send_signal(signal.SIGKILL)
        # anything already in the pipe was acknowledged before the kill, so it must be there too
        acked.extend(line.split()[1] for line in proc.stdout.read().splitlines())
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    if path.exists():  # the checkpoint, when a compaction wrote one: never empty, never torn
        assert msgspec.json.decode(path.read_bytes(), type=IntentState) is not None
    state = reload(path).state  # checkpoint + journal, as the next start reads them
    on_disk = set(state.keys)
    missing = [k for k in acked if f"adapter/{k}" not in on_disk]
    assert not missing, f"acknowledged but lost: {missing}"
    assert all(i.state == "paused" for i in state.keys.values())
    # no temp files left behind apart from at most the one the kill interrupted
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]) <= 1


@pytest.mark.anyio
async def test_a_write_whose_flush_failed_is_kept_not_rolled_back(
    store: IntentStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record was written, only fdatasync failed: memory must match what readers see."""
    import errno

    from oneiric.runtime import journal as journal_mod

    def flaky_fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(journal_mod.os, "fdatasync", flaky_fdatasync)
    await store.pause("adapter", "cache", **WHO)  # no NotDurable: it is in the journal
    monkeypatch.undo()
    assert store.effective("adapter", "cache").state == "paused"
    assert reload(path).effective("adapter", "cache").state == "paused"


# --- the journal --------------------------------------------------------------------------


def test_commits_are_appends_and_recovery_keeps_the_newest(path: Path) -> None:
    j = Journal(path)
    for n in (1, 2, 3):
        j.append(b'{"serial":%d,"n":%d}' % (n, n))
    assert not path.exists()  # no checkpoint rewrite per commit: only appends
    assert Journal(path).load() == b'{"serial":3,"n":3}'


def test_a_torn_tail_is_ignored_and_the_next_record_stays_whole(path: Path) -> None:
    j = Journal(path)
    j.append(b'{"serial":1}')
    j.close()
    with open(j.path, "ab") as fh:  # a crash mid-append: half a record, no newline
        fh.write(b'deadbeef {"serial":2,"tr')
    assert Journal(path).load() == b'{"serial":1}'  # never acknowledged: not recovered
    again = Journal(path)
    again.append(b'{"serial":2}')
    assert Journal(path).load() == b'{"serial":2}'


def test_a_damaged_record_is_skipped(path: Path) -> None:
    j = Journal(path)
    j.append(b'{"serial":1}')
    j.append(b'{"serial":2}')
    data = bytearray(j.path.read_bytes())
    data[data.rindex(b"2")] = ord("9")  # flip a byte inside the last record: its CRC fails
    j.path.write_bytes(bytes(data))
    assert Journal(path).load() == b'{"serial":1}'


def test_compaction_writes_a_checkpoint_and_empties_the_journal(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oneiric.runtime import journal as journal_mod

    monkeypatch.setattr(journal_mod, "COMPACT_BYTES", 200)
    j = Journal(path)
    for n in range(1, 40):
        j.append(b'{"serial":%d}' % n)
    assert path.exists()  # compacted at least once
    assert j.path.stat().st_size < 200 + 30
    assert Journal(path).load() == b'{"serial":39}'


def test_a_stale_journal_behind_a_newer_checkpoint_loses(path: Path) -> None:
    """A crash between writing the checkpoint and emptying the journal: serials decide."""
    j = Journal(path)
    j.append(b'{"serial":5}')
    path.write_bytes(b'{"serial":7}')
    assert Journal(path).load() == b'{"serial":7}'


@pytest.mark.anyio
async def test_store_recovers_from_the_journal_across_restarts(path: Path) -> None:
    s = IntentStore(path)
    s.load()
    await s.pause("adapter", "a", **WHO)
    await s.pause("adapter", "b", **WHO)
    await s.resume("adapter", "a", **WHO)
    again = reload(path)
    assert set(again.state.keys) == {"adapter/b"}
    await again.pause("adapter", "c", **WHO)  # serials go on from the recovered one
    assert set(reload(path).state.keys) == {"adapter/b", "adapter/c"}
