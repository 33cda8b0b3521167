"""Reloads in O(what changed): the chunked config loader (``config/chunks.py``) and the candidate
delta (``runtime/delta.py``) give exactly what the reference paths give, never serve a stale
entry, and do work proportional to the edit, counted in calls (not timed).

The reference paths are the ones the incremental ones replace: one parse of each whole file
with its entries validated in order (``loader._load(chunked=False)``), and
``Registry.replace_sources`` with every candidate of the new config.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import oneiric.config.chunks as chunks_mod
import oneiric.runtime.delta as delta_mod
from oneiric.config import Config, load_config
from oneiric.config.loader import _load
from oneiric.errors import ConfigError
from oneiric.reload import Reloader, candidates_of, timeouts_of
from oneiric.runtime.core import Runtime
from oneiric.runtime.delta import Snapshot, plan
from oneiric.runtime.intent import IntentStore
from oneiric.runtime.registry import Registry
from oneiric.runtime.reporter import HealthReporter, LoadedConfig
from oneiric.systemd import Notifier

pytestmark = pytest.mark.anyio


def entry(i: int, provider: str = "a", *, extra: str = "") -> str:
    return (
        "[[component]]\n"
        'domain = "adapter"\n'
        f'key = "k{i}"\n'
        f'provider = "{provider}"\n'
        'factory = "components:Thing"\n'
        f"priority = {i % 7}\n"
        f"{extra}"
    )


def big(n: int, *, tail: str = "") -> str:
    head = '[daemon]\nstop_timeout = "5s"\nwatch = false\n\n'
    return head + "".join(entry(i) for i in range(n)) + tail


def reference(path: Path) -> Config:
    return _load(str(path.resolve()), (), chunked=False)


def same_as_reference(path: Path) -> Config | str:
    """``load_config``'s outcome, checked against the reference path's: the same Config, or
    the same error (returned as its text)."""
    try:
        want: Config | str = reference(path)
    except ConfigError as exc:
        want = str(exc)
    try:
        got: Config | str = load_config(path)
    except ConfigError as exc:
        got = str(exc)
    assert got == want
    return got


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    chunks_mod.forget()


# -- the chunked loader ----------------------------------------------------------------------


def counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the ``[[component]]`` entries the chunked loader validates."""
    seen: list[str] = []
    real = chunks_mod._component

    def spy(raw: Any, *, file: str, where: str) -> Any:
        seen.append(str(raw.get("key")) if isinstance(raw, dict) else "?")
        return real(raw, file=file, where=where)

    monkeypatch.setattr(chunks_mod, "_component", spy)
    return seen


def test_a_one_entry_edit_validates_that_entry_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "oneiricd.toml"
    path.write_text(big(500))
    seen = counting(monkeypatch)
    first = load_config(path)
    assert len(seen) == 500 and len(first.components) == 500
    seen.clear()
    path.write_text(
        big(500).replace('key = "k250"\nprovider = "a"', 'key = "k250"\nprovider = "z"')
    )
    second = load_config(path)
    assert seen == ["k250"]  # one of 500
    assert second == reference(path)
    # the entries that did not change are the very objects of the last load
    same = [a is b for a, b in zip(first.components, second.components, strict=True)]
    assert same.count(False) == 1 and not same[250]
    assert second.components[250].provider == "z"


def test_an_edit_keeping_every_identity_reuses_the_ident_set(tmp_path: Path) -> None:
    """A one-key change copies no per-entry set: the edited entries keep their (domain, key,
    provider), so the file's ident set is the last load's very object (O(changed)); an edit
    that changes an identity builds a new one."""
    path = tmp_path / "oneiricd.toml"
    path.write_text(big(500))
    load_config(path)
    file = str(path.resolve())
    before = chunks_mod._cache[file][4].idents
    path.write_text(
        big(500, tail='[selections.adapter]\nk0 = "a"\n').replace(
            entry(250), entry(250, extra="priority = 99\n").replace(f"priority = {250 % 7}\n", "")
        )
    )
    assert load_config(path) == reference(path)
    assert chunks_mod._cache[file][4].idents is before  # not a copy of 500 idents
    path.write_text(big(500).replace(entry(250), entry(250, provider="z")))
    assert load_config(path) == reference(path)
    after = chunks_mod._cache[file][4].idents
    assert after is not before and ("adapter", "k250", "z") in after
    assert ("adapter", "k250", "a") not in after and len(after) == 500


def test_the_same_bytes_in_another_file_are_that_files_own_entries(tmp_path: Path) -> None:
    text = big(20)
    a = tmp_path / "a" / "oneiricd.toml"
    b = tmp_path / "b" / "oneiricd.toml"
    for p in (a, b):
        p.parent.mkdir()
        p.write_text(text)
    ca, cb = load_config(a), load_config(b)
    assert {c.source for c in ca.components} == {str(a)}
    assert {c.source for c in cb.components} == {str(b)}
    assert cb == reference(b)


def test_edits_removals_additions_and_an_error_then_its_fix(tmp_path: Path) -> None:
    path = tmp_path / "oneiricd.toml"
    path.write_text(big(50))
    load_config(path)
    # one field of one entry
    path.write_text(big(50).replace("priority = 3\n", "priority = 30\n", 1))
    cfg = same_as_reference(path)
    assert isinstance(cfg, Config) and cfg.components[3].priority == 30
    # an entry removed, another added at the end
    path.write_text(big(50).replace(entry(7), "") + entry(99))
    cfg = same_as_reference(path)
    assert isinstance(cfg, Config)
    assert [c.key for c in cfg.components] == [f"k{i}" for i in range(50) if i != 7] + ["k99"]
    # a mistake in one entry: the error of the reference path, with that entry's index
    broken = big(50).replace('key = "k20"\nprovider = "a"', 'key = "k20"\nprovider = 5')
    path.write_text(broken)
    err = same_as_reference(path)
    assert isinstance(err, str) and "component[20].provider" in err
    # a TOML syntax error: its line and column in the whole file
    path.write_text(big(50).replace("priority = 4\n", "priority = \n", 1))
    err = same_as_reference(path)
    assert isinstance(err, str) and "invalid TOML" in err and "line " in err
    # fixed: the new content, nothing left over from the broken versions
    path.write_text(big(50))
    assert same_as_reference(path) == reference(path)


def test_a_duplicate_across_chunks_is_the_reference_error(tmp_path: Path) -> None:
    path = tmp_path / "oneiricd.toml"
    path.write_text(big(10))
    load_config(path)
    path.write_text(big(10) + entry(3))
    err = same_as_reference(path)
    assert isinstance(err, str) and "duplicate component" in err and "component[10]" in err


def test_edits_between_plain_entries_patch_the_last_load_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common case (one entry edited, added or removed among plain ones) patches the last
    load's lists instead of walking every chunk; the result is still the reference one, and a
    duplicate an edit creates is still the reference error."""
    patched: list[int] = []
    real = chunks_mod._patch

    def spy(*args: Any) -> Any:
        patched.append(1)
        return real(*args)

    monkeypatch.setattr(chunks_mod, "_patch", spy)
    path = tmp_path / "oneiricd.toml"
    flow = (
        '[[component]]\ndomain = "workflow"\nkey = "w"\nprovider = "p"\n'
        'factory = "components:Thing"\n'
        'settings = { nodes = [{ id = "a", task = "t" }] }\n'
        '[[component]]\ndomain = "task"\nkey = "t"\nprovider = "p"\n'
        'factory = "components:Thing"\n'
    )
    items = [entry(i) for i in range(60)]
    versions = [
        items,
        [*items[:10], entry(10, "z"), *items[11:]],  # one field of one entry
        [*items[:10], *items[11:]],  # removed
        [*items[:10], entry(500), *items[10:]],  # added
        [*items[:10], entry(11), *items[11:]],  # k11 twice: the reference error
        items,
        [*items, flow],  # a workflow and its task at the end
        [*items[:5], entry(501), *items[5:], flow],  # added before them: their places move
        [*items[:5], *items[6:], flow],
        [*items[:5], *items[6:], flow.replace('task = "t"', 'task = "nope"')],
    ]
    head = "[daemon]\nwatch = false\n"
    for version in versions:
        path.write_text(head + "".join(version))
        same_as_reference(path)
    # a selection in the preamble names an entry that an edit then renames: the reference
    # error, not a stale name that still looks offered
    head += '[selections.adapter]\nk20 = "a"\n'
    path.write_text(head + "".join(items))
    same_as_reference(path)
    path.write_text(head + "".join([*items[:20], entry(20, "z"), *items[21:]]))
    err = same_as_reference(path)
    assert isinstance(err, str) and "selects provider 'a'" in err
    assert len(patched) >= 4


# Fragments a file is made of: plain entries, and every shape that must not be cut or merged
# naively (sub-tables of an entry, a cut line inside a multi-line string, a header with a
# comment, tables after the entries, a table defined twice across parts, broken ones).
FRAGMENTS = [
    entry,
    lambda i: entry(i, "b"),
    lambda i: entry(i, extra="settings = { max_entries = 5 }\n"),
    lambda i: entry(i) + "[component.settings]\nmax_entries = 7\n",
    lambda i: entry(i, extra="settings = { note = '''\n[[component]]\nx'''}\n"),
    lambda i: entry(i, extra='settings = { note = """\n[[component]]\n""" }\n'),
    lambda i: entry(i).replace("[[component]]\n", "[[component]]  # header with a comment\n"),
    lambda i: entry(i) + '[selections.adapter]\nk0 = "a"\n',
    lambda i: entry(i) + '[selections.adapter]\nk1 = "b"\n',
    lambda i: entry(i) + '[daemon]\nlog_level = "debug"\n',
    lambda i: entry(i) + "[requires.adapter]\nk2 = []\n",
    lambda i: entry(i).replace('factory = "components:Thing"\n', ""),
    lambda i: entry(i, extra="bogus = 1\n"),
    lambda i: entry(i, extra="priority = \n"),
    lambda i: entry(i).replace(f'key = "k{i}"', 'key = "k0"'),
    lambda i: "[[component]]\n",
    lambda i: "x = [\n[[component]]\n]\n",
    lambda i: entry(i).replace("\n", "\r\n"),
]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    versions=st.lists(
        st.lists(st.integers(0, len(FRAGMENTS) - 1), min_size=0, max_size=12),
        min_size=2,
        max_size=6,
    ),
    plain=st.integers(5, 30),
)
def test_any_sequence_of_edits_loads_as_the_reference_path(
    tmp_path: Path, versions: list[list[int]], plain: int
) -> None:
    """Whatever a file becomes from one load to the next, the chunked load is the reference
    load: the same Config or the same error."""
    chunks_mod.forget()
    path = tmp_path / "oneiricd.toml"
    rng = random.Random(len(versions) * 1000 + plain)
    for version in versions:
        parts = [entry(i) for i in range(plain)]
        for n, pick in enumerate(version):
            parts.insert(rng.randrange(len(parts) + 1), FRAGMENTS[pick](100 + n))
        path.write_text("[daemon]\nwatch = false\n" + "".join(parts))
        same_as_reference(path)


def test_a_file_with_crlf_line_ends_loads_whole(tmp_path: Path) -> None:
    path = tmp_path / "oneiricd.toml"
    path.write_bytes(big(5).replace("\n", "\r\n").encode())
    assert same_as_reference(path) == reference(path)


# -- the candidate delta ---------------------------------------------------------------------


def registry_state(reg: Registry) -> dict[Any, Any]:
    return {ck: {i: (r.candidate, r.seq) for i, r in e.items()} for ck, e in reg._by_key.items()}


@settings(max_examples=40, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(["edit", "remove", "add", "move", "plugin"]), st.integers(0, 40)),
        min_size=1,
        max_size=8,
    )
)
def test_a_delta_leaves_the_registry_as_replace_sources_does(
    tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[str, int]]
) -> None:
    """Same candidates, same seqs (registration order), same changed keys, for any edit."""
    chunks_mod.forget()
    path = tmp_path_factory.mktemp("d") / "oneiricd.toml"
    items = [entry(i) for i in range(40)]
    path.write_text("".join(items))
    old = load_config(path)
    sources = {old.path}
    a, b = Registry(), Registry()
    for reg in (a, b):
        reg.replace_sources(sources, candidates_of(old))
    extra_old: list[Any] = []
    for step, (kind, n) in enumerate(edits):
        i = n % max(len(items), 1)
        if kind == "edit" and items:
            items[i] = items[i].replace("priority = ", "priority = 1")
        elif kind == "remove" and items:
            del items[i]
        elif kind == "add":
            items.insert(i, entry(1000 + step, "c"))
        elif kind == "move" and items:
            items.append(items.pop(i))
        path.write_text("".join(items))
        new = load_config(path)
        if kind == "plugin":  # another source's candidates change too
            extra_new = [
                msgspec.structs.replace(c, source="plug") for c in candidates_of(new)[: n % 3]
            ]
        else:
            extra_new = extra_old
        srcs = sources | {"plug"}
        snap = Snapshot(gens={s: b.generation(s) for s in srcs}, selections={}, requires={})
        deltas = []
        for window in (0, 2048):  # the changed entries found by identity sets, or by a window
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(delta_mod, "WINDOW", window)
                deltas.append(
                    plan(
                        snap,
                        srcs,
                        old.components,
                        new.components,
                        old_extra=extra_old,
                        new_extra=extra_new,
                        selections={},
                        requires={},
                    )
                )
        delta = deltas[0]
        assert sorted(delta.drops) == sorted(deltas[1].drops)
        assert delta.stores == deltas[1].stores
        want = a.replace_sources(srcs, [*candidates_of(new), *extra_new])
        got = b.apply_delta(delta.drops, delta.stores)
        assert got == want
        assert registry_state(b) == registry_state(a) and b._seq == a._seq
        old, extra_old = new, extra_new


# -- the reloader: O(changed) on the event loop -----------------------------------------------


@asynccontextmanager
async def reloader(path: Path) -> AsyncIterator[Reloader]:
    config = load_config(path)
    loaded = LoadedConfig(config, loaded_at=time.time())
    store = IntentStore(path.parent / "intent.json")
    store.load()
    async with Runtime(intent=store, timeouts=timeouts_of(config)) as rt:
        health = HealthReporter(
            rt, loaded, path=str(path.parent / "health.json"), started_at=time.time()
        )
        rel = Reloader(
            rt, loaded, config_path=config.path, health=health, notifier=Notifier.from_environ({})
        )
        await rel.activate()
        yield rel


async def test_a_one_key_reload_converts_and_replaces_only_that_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 300
    path = tmp_path / "oneiricd.toml"
    path.write_text(big(n))
    async with reloader(path) as rel:
        rt = rel.rt
        converted: list[str] = []
        real_of = delta_mod.candidate_of

        def spy_of(c: Any, artifact: Any = None) -> Any:
            converted.append(c.key)
            return real_of(c, artifact)

        whole: list[int] = []
        real_replace = Registry.replace_sources

        def spy_replace(self: Registry, sources: Any, candidates: Any) -> Any:
            whole.append(1)
            return real_replace(self, sources, candidates)

        monkeypatch.setattr(delta_mod, "candidate_of", spy_of)
        monkeypatch.setattr(Registry, "replace_sources", spy_replace)
        path.write_text(big(n, tail='[selections.adapter]\nk7 = "a"\n').replace(entry(9), ""))
        result = await rel.reload(trigger="test", force=False, notify=False)
        assert converted == [] and whole == []  # k9's entry dropped; nothing else converted
        assert sorted(result.changed) == ["adapter/k7", "adapter/k9"]
        path.write_text(big(n).replace('key = "k5"\nprovider = "a"', 'key = "k5"\nprovider = "z"'))
        result = await rel.reload(trigger="test", force=False, notify=False)
        assert sorted(converted) == ["k5", "k9"] and whole == []  # k9 is back
        assert sorted(result.changed) == ["adapter/k5", "adapter/k7", "adapter/k9"]
        assert rt.registry.get("adapter", "k5", "z") is not None
        assert rt.registry.get("adapter", "k5", "a") is None
        assert rt.registry.ranked("adapter", "k9") != []
        assert rt.selections == {}


async def test_a_delta_against_a_runtime_that_moved_is_refused_and_the_set_applied_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "oneiricd.toml"
    path.write_text(big(20))
    async with reloader(path) as rel:
        rt = rel.rt
        # someone else writes under the config file's source between two reloads
        rt.registry.register(msgspec.structs.replace(candidates_of(rel.config)[0], provider="x"))
        path.write_text(big(20).replace("priority = 3\n", "priority = 9\n", 1))
        refused: list[bool] = []
        real = Runtime.apply_delta

        def spy(self: Runtime, delta: Any) -> Any:
            out = real(self, delta)
            refused.append(out is None)
            return out

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Runtime, "apply_delta", spy)
            await rel.reload(trigger="test", force=False, notify=False)
        assert refused == [True]
        assert rt.registry.get("adapter", "k0", "x") is None  # the whole set, as loaded
        assert rt.registry.get("adapter", "k3", "a") is not None
        assert rt.registry.get("adapter", "k3", "a").candidate.priority == 9  # type: ignore[union-attr]
        reg = Registry()
        reg.replace_sources({rel.config.path}, candidates_of(rel.config))
        assert {ck: [r.candidate for r in rt.registry.ranked(*ck)] for ck in reg.keys(None)} == {
            ck: [r.candidate for r in reg.ranked(*ck)] for ck in reg.keys(None)
        }


# -- the event loop keeps serving during a reload that swaps every key ------------------------


def two_each(n: int, *, select: str | None = None) -> str:
    text = '[daemon]\nstop_timeout = "5s"\nwatch = false\n'
    for i in range(n):
        for provider, priority in (("a", 10), ("b", 0)):
            text += (
                f'[[component]]\ndomain = "adapter"\nkey = "k{i}"\nprovider = "{provider}"\n'
                f'factory = "components:SyncThing"\npriority = {priority}\n'
            )
    if select is not None:
        text += "[selections.adapter]\n" + "".join(f'k{i} = "{select}"\n' for i in range(n))
    return text


async def test_a_reload_swapping_every_key_lets_other_tasks_run_between_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Components whose start() and health() never suspend: without slicing, one reconcile
    worker took key after key and nothing else ran until the batch was done (issue 12: ping
    stalled 1 s at 20,000 keys). With a zero slice every key ends one, so the probe must run
    between the swaps."""
    n = 300
    path = tmp_path / "oneiricd.toml"
    path.write_text(two_each(n))
    async with reloader(path) as rel:
        rt = rel.rt
        rt.pacer.slice_s = 0.0
        events: list[str] = []
        real = Runtime.reconcile

        async def recording(self: Runtime, domain: str, key: str, **kw: Any) -> Any:
            out = await real(self, domain, key, **kw)
            events.append("swap")
            return out

        monkeypatch.setattr(Runtime, "reconcile", recording)
        done = anyio.Event()

        async def probe() -> None:
            while not done.is_set():
                events.append("probe")
                await anyio.lowlevel.checkpoint()

        path.write_text(two_each(n, select="b"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe)
            result = await rel.reload(trigger="test", force=False, notify=False)
            done.set()
        assert len(result.changed) == n and set(result.outcomes.values()) == {"swapped"}
        first, last = events.index("swap"), len(events) - 1 - events[::-1].index("swap")
        between = events[first:last].count("probe")
        assert between >= n // 2, f"the probe ran {between} times during {n} swaps"
        assert rt.pacer.pauses >= n


async def test_the_ready_line_of_a_reload_is_the_status_line_whichever_way_it_is_counted(
    tmp_path: Path,
) -> None:
    """A reload's READY=1 line is counted without a walk of every key in one go: from the
    writer's last rows when no key changed since, else in slices; both say what
    ``status_line()`` says."""
    path = tmp_path / "oneiricd.toml"
    path.write_text(two_each(30))
    async with reloader(path) as rel:
        health = rel.health
        await rel.rt.pause("adapter", "k3", uid=0, pid=1, note="test")
        assert await health.status_line_now() == health.status_line()  # no rows yet: walked
        async with anyio.create_task_group() as tg:
            await tg.start(health.run)  # returns after its first write: rows gathered
            assert health._rows_cache.get(None) is not None
            line = await health.status_line_now()
            tg.cancel_scope.cancel()
        assert line == health.status_line()
        assert "30/30 components ready" in line and "1 paused/drained" in line
