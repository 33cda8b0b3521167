"""Live configuration: a real daemon in-process, real files, each real file watcher (the inotify
reader and watchfiles: every test runs on both), and a fake watcher for the cases that must be
deterministic. Every wait is on an event — the runtime's change
events, the health file, the watcher's own progress — never on time."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from itertools import count
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

import components as comp
import watch_components as wc
from harness import Harness, make_dir, running_daemon
from oneiric import _inotify, watch
from oneiric.control.client import RemoteError
from oneiric.daemon import Daemon, Options
from oneiric.watch import ConfigWatcher, make_plan
from oneiric.watchplan import _matches
from waiting import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

_tmp = count()


# --------------------------------------------------------------------------- config text


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def component(provider: str, *, key: str = "cache", priority: int = 0, **settings: Any) -> str:
    settings.setdefault("name", provider)
    inline = ", ".join(f"{k} = {_toml(v)}" for k, v in settings.items())
    return f"""
[[component]]
domain = "adapter"
key = "{key}"
provider = "{provider}"
factory = "watch_components:Tracked"
priority = {priority}
settings = {{ {inline} }}
"""


def config(
    selection: str | None = "a",
    *,
    providers: tuple[str, ...] = ("a", "b", "c"),
    watch: bool = True,
    daemon: str = "",
    extra: str = "",
) -> str:
    text = f"""
[daemon]
drain_timeout = "5s"
stop_timeout = "5s"
watch = {_toml(watch)}
{daemon}
"""
    text += "".join(component(p) for p in providers) + extra
    if selection is not None:
        text += f'\n[selections.adapter]\ncache = "{selection}"\n'
    return text


# --------------------------------------------------------------------------- saving like editors


def save_rename(path: Path, text: str) -> None:
    """Write a temp file beside it, then rename over it (most editors, atomic_write)."""
    tmp = path.with_name(f".{path.name}.{next(_tmp)}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_truncate(path: Path, text: str) -> None:
    """Truncate and write in place (same inode: nano, vim with backupcopy=yes)."""
    with open(path, "w") as fh:
        fh.write(text)


def save_backup(path: Path, text: str) -> None:
    """Move the original to a backup, then write a new file (vim's default)."""
    os.replace(path, path.with_name(path.name + "~"))
    path.write_text(text)


SAVES = {"rename": save_rename, "truncate": save_truncate, "backup": save_backup}


# --------------------------------------------------------------------------- waiting


def provider(h: Harness, key: str = "cache") -> str | None:
    found = h.rt.components("adapter", key)
    return found[0].provider if found else None


def status(h: Harness, key: str = "cache") -> Any:
    return h.rt.components("adapter", key)[0]


async def leased_name(h: Harness) -> str:
    async with h.rt.use("adapter", "cache") as inst:
        return str(inst.name)


def watcher(h: Harness) -> ConfigWatcher:
    w = h.daemon.watcher
    assert w is not None
    return w


async def processed(h: Harness, save: Callable[[], None]) -> None:
    """Run ``save`` and wait until the watcher has reloaded because of it and settled."""
    w = watcher(h)
    before = w.reloads
    save()
    await wait_until(lambda: w.reloads > before and w.settled, w)


@pytest.fixture(autouse=True, params=["inotify", "watchfiles"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each file watcher in turn (inotify is the default on Linux, watchfiles elsewhere)."""
    if request.param == "inotify":
        assert _inotify.available()  # this suite runs on Linux: the default must be real
    monkeypatch.setattr(watch, "BACKEND", request.param)
    return str(request.param)


@pytest.fixture
def d() -> Iterator[Path]:
    """A short temp directory (Unix socket paths are short), removed afterwards."""
    path = make_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- the plan (pure)


def test_matches_follows_glob_rules() -> None:
    assert _matches("/e/conf.d/10-a.toml", "/e/conf.d/*.toml")
    assert not _matches("/e/conf.d/.10-a.toml.swp", "/e/conf.d/*.toml")
    assert not _matches("/e/conf.d/sub/a.toml", "/e/conf.d/*.toml")
    assert _matches("/e/conf.d/x/a.toml", "/e/conf.d/*/a.toml")
    assert not _matches("/e/conf.d/a.toml~", "/e/conf.d/*.toml")


def test_plan_watches_nearest_existing_directory_and_wildcard_levels(d: Path) -> None:
    main = str(d / "oneiricd.toml")
    plan = make_plan(main, ("conf.d/*.toml", "more/*/x.toml"))
    assert plan.dirs == (str(d),)  # neither conf.d nor more exists yet
    assert plan.is_level(str(d / "conf.d")) and plan.is_level(str(d / "more"))
    assert plan.is_config(main) and not plan.relevant(str(d / "unrelated.txt"))
    (d / "conf.d").mkdir()
    (d / "more" / "one").mkdir(parents=True)
    plan = make_plan(main, ("conf.d/*.toml", "more/*/x.toml"))
    assert set(plan.dirs) == {str(d), str(d / "conf.d"), str(d / "more"), str(d / "more/one")}
    assert plan.is_level(str(d / "more" / "two"))  # a new directory there matters
    assert plan.is_config(str(d / "more" / "one" / "x.toml"))


# --------------------------------------------------------------------------- editor save styles


@pytest.mark.parametrize("style", sorted(SAVES))
async def test_each_editor_save_style_is_applied(style: str) -> None:
    async with running_daemon(config("a")) as h:
        assert watcher(h).watching  # armed before the daemon reported ready
        SAVES[style](h.config, config("b"))
        await h.wait_for(lambda: provider(h) == "b")
        assert await leased_name(h) == "b"
        await h.wait_for(lambda: wc.CALLS["a.stop"] == 1)  # a retires after the swap
        assert wc.CALLS["b.init"] == 1
        SAVES[style](h.config, config("c"))
        await h.wait_for(lambda: provider(h) == "c")
        assert await leased_name(h) == "c"


async def test_dropin_in_a_directory_created_after_start() -> None:
    async with running_daemon(config("a")) as h:
        w = watcher(h)
        assert not (h.dir / "conf.d").exists()
        # mkdir and write at once: the file lands before the watch on conf.d exists
        (h.dir / "conf.d").mkdir()
        save_rename(h.dir / "conf.d" / "10-sel.toml", '[selections.adapter]\ncache = "b"\n')
        await h.wait_for(lambda: provider(h) == "b")
        await wait_until(lambda: str(h.dir / "conf.d") in w.watching, w)
        # now watched directly: a later drop-in (lexically later, so it wins) applies too
        (h.dir / "conf.d" / "20-sel.toml").write_text('[selections.adapter]\ncache = "c"\n')
        await h.wait_for(lambda: provider(h) == "c")
        # dropping the directory falls back to the main file's selection
        for f in (h.dir / "conf.d").iterdir():
            f.unlink()
        (h.dir / "conf.d").rmdir()
        await h.wait_for(lambda: provider(h) == "a")
        await wait_until(lambda: str(h.dir / "conf.d") not in w.watching, w)


async def test_main_file_behind_symlinks_configmap_style(d: Path) -> None:
    (d / "..v1").mkdir()
    (d / "..v1" / "oneiricd.toml").write_text(config("a"))
    (d / "..data").symlink_to("..v1")
    (d / "oneiricd.toml").symlink_to("..data/oneiricd.toml")
    async with running_daemon("", directory=d) as h:
        w = watcher(h)
        assert str(d / "..v1") in w.watching
        # an edit of the real file
        save_rename(d / "..v1" / "oneiricd.toml", config("b"))
        await h.wait_for(lambda: provider(h) == "b")
        # a new version published by swapping the ..data link atomically
        (d / "..v2").mkdir()
        (d / "..v2" / "oneiricd.toml").write_text(config("c"))
        (d / "..data_tmp").symlink_to("..v2")
        os.replace(d / "..data_tmp", d / "..data")
        await h.wait_for(lambda: provider(h) == "c")
        await wait_until(lambda: str(d / "..v2") in w.watching, w)
        save_truncate(d / "..v2" / "oneiricd.toml", config("a"))
        await h.wait_for(lambda: provider(h) == "a")


async def test_include_change_moves_the_watch(d: Path) -> None:
    (d / "extra").mkdir()
    (d / "extra" / "x.toml").write_text('[selections.adapter]\ncache = "b"\n')
    async with running_daemon(config("a"), directory=d) as h:
        w = watcher(h)
        save_rename(h.config, 'include = ["extra/*.toml"]\n' + config("a"))
        await h.wait_for(lambda: provider(h) == "b")
        await wait_until(lambda: str(d / "extra") in w.watching, w)
        save_rename(d / "extra" / "x.toml", '[selections.adapter]\ncache = "c"\n')
        await h.wait_for(lambda: provider(h) == "c")


async def test_a_save_between_the_startup_load_and_arming_is_caught_up(d: Path) -> None:
    main = d / "oneiricd.toml"
    main.write_text(config("a"))
    daemon = Daemon(
        Options(
            config=str(main),
            socket=str(d / "s.sock"),
            state_dir=str(d / "state"),
            health_file=str(d / "health.json"),
        ),
        environ={},
    )
    await anyio.to_thread.run_sync(daemon.load)  # the start-up load reads "a" ...
    save_rename(main, config("b"))  # ... and the save lands before any watch exists
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        rt = daemon.runtime
        assert rt is not None
        await wait_until(lambda: rt.components()[0].provider == "b", rt)
        assert wc.CALLS["a.init"] == wc.CALLS["b.init"] == 1
        daemon.request_stop()


# --------------------------------------------------------------------------- invalid → valid


async def test_invalid_config_keeps_the_old_one_until_a_valid_one_appears() -> None:
    async with running_daemon(config("a")) as h:
        save_rename(h.config, config("b") + "\nbogus = 1\n")
        await h.wait_for(lambda: h.daemon.config_error is not None)
        assert "bogus" in str(h.daemon.config_error)
        snap = await h.wait_health(lambda s: s.config.last_error is not None)
        assert "bogus" in snap.config.last_error
        assert "bogus" in (await h.call("status"))["config"]["last_error"]
        with pytest.raises(RemoteError):  # `oneiricctl reload` exits 1 on it
            await h.call("reload")
        assert provider(h) == "a" and await leased_name(h) == "a"
        assert wc.CALLS["b.init"] == 0
        # a second, different mistake replaces the first
        save_truncate(h.config, config("b").replace("[daemon]", "[daemon"))
        await h.wait_for(lambda: "invalid TOML" in str(h.daemon.config_error))
        save_rename(h.config, config("b"))
        await h.wait_for(lambda: provider(h) == "b" and h.daemon.config_error is None)
        await h.wait_health(lambda s: s.config.last_error is None)
        assert await leased_name(h) == "b"


# --------------------------------------------------------------------------- parked while paused


async def test_change_while_paused_is_parked_replaced_and_applied_once_on_resume() -> None:
    async with running_daemon(config("a")) as h:
        await h.call("pause", domain="adapter", key="cache", note="maintenance")
        save_rename(h.config, config("b"))
        await h.wait_for(lambda: status(h).parked_provider == "b")
        save_rename(h.config, config("c"))  # replaces the parked change
        await h.wait_for(lambda: status(h).parked_provider == "c")
        snap = await h.wait_health(lambda s: s.components[0].parked_provider == "c")
        assert snap.components[0].provider == "a" and snap.components[0].admin == "paused"
        assert wc.CALLS["b.init"] == wc.CALLS["c.init"] == 0
        await h.call("resume", domain="adapter", key="cache")
        await h.wait_for(lambda: provider(h) == "c" and status(h).parked_provider is None)
        assert await leased_name(h) == "c"
        # one more (semantically empty) save: the parked change is not applied a second time
        await processed(h, lambda: save_rename(h.config, config("c") + "# note\n"))
        assert wc.CALLS["c.init"] == 1 and wc.CALLS["b.init"] == 0
        assert status(h).swaps == 1


# --------------------------------------------------------------------------- bursts


async def test_burst_of_twenty_saves_ends_in_the_last_state() -> None:
    names = tuple(f"p{i}" for i in range(21))
    body = component("p0") + "".join(component(n, gate="burst") for n in names[1:])

    def text(sel: str) -> str:
        return config(sel, providers=()) + body

    async with running_daemon(text("p0")) as h:
        comp.gate("burst")  # closed: the first swap waits in start()
        save_rename(h.config, text("p1"))
        await wc.started("p1").wait()  # a reload is in flight, stuck activating p1
        for n in names[2:]:
            save_rename(h.config, text(n))  # twenty saves in well under a second
        comp.gate("burst").set()
        await h.wait_for(lambda: provider(h) == "p20")
        assert await leased_name(h) == "p20"
        # the saves made during the stuck swap coalesced into one reload of the last state
        assert [n for n in names[2:20] if wc.CALLS[f"{n}.init"]] == []
        assert wc.CALLS["p1.init"] == wc.CALLS["p20.init"] == 1
        assert wc.MAX_ACTIVE[0] == 1  # never two swaps of the key in flight


async def test_unthrottled_burst_constructs_each_provider_at_most_once() -> None:
    names = tuple(f"p{i}" for i in range(21))

    def text(sel: str) -> str:
        return config(sel, providers=names)

    async with running_daemon(text("p0")) as h:
        for n in names[1:]:
            save_rename(h.config, text(n))
        await h.wait_for(lambda: provider(h) == "p20")
        assert all(wc.CALLS[f"{n}.init"] <= 1 for n in names)
        assert wc.MAX_ACTIVE[0] == 1


# --------------------------------------------------------------------------- what a change does


async def test_removing_the_selection_falls_back_to_the_ranked_winner() -> None:
    ranked = component("a") + component("b", priority=10) + component("c", priority=5)
    async with running_daemon(config("a", providers=()) + ranked) as h:
        assert provider(h) == "a"
        save_rename(h.config, config(None, providers=()) + ranked)
        await h.wait_for(lambda: provider(h) == "b")
        assert await leased_name(h) == "b"


async def test_changed_settings_of_the_active_provider_swap_to_a_fresh_instance() -> None:
    async with running_daemon(config("a", providers=()) + component("a", value=1)) as h:
        async with h.rt.use("adapter", "cache") as first:
            assert first.value == 1
        save_rename(h.config, config("a", providers=()) + component("a", value=2))
        await h.wait_for(lambda: status(h).swaps == 1)
        async with h.rt.use("adapter", "cache") as second:
            assert second.value == 2 and second is not first
        await h.wait_for(lambda: wc.CALLS["a.stop"] == 1)  # the first instance retires
        assert wc.CALLS["a.init"] == 2


async def test_changed_schedule_and_topics_apply_and_other_keys_are_left_alone() -> None:
    def text(every: str, topics: list[str]) -> str:
        return (
            config("a")
            + f"""
[[component]]
domain = "task"
key = "tick"
provider = "t"
factory = "watch_components:Tracked"
every = "{every}"
settings = {{ name = "t" }}

[[component]]
domain = "event"
key = "audit"
provider = "e"
factory = "watch_components:Tracked"
topics = {json.dumps(topics)}
settings = {{ name = "e" }}
"""
        )

    def serving(domain: str, key: str) -> Any:
        cur = h.rt.state(domain, key).slot.current
        return cur.candidate if cur is not None else None

    async with running_daemon(text("1h", ["user.*"])) as h:
        save_rename(h.config, text("2h", ["order.*"]))
        await h.wait_for(lambda: serving("task", "tick").every == 7200)
        await h.wait_for(lambda: serving("event", "audit").topics == ("order.*",))
        assert wc.CALLS["t.init"] == wc.CALLS["e.init"] == 2
        assert wc.CALLS["a.init"] == 1  # the unchanged key was not touched


async def test_failed_swap_is_retried_on_reload_and_real_change_not_on_a_touch() -> None:
    def text(**bad: Any) -> str:
        return config("bad", providers=("a",)) + component("bad", **bad)

    async with running_daemon(config("a", providers=("a",)) + component("bad", fail=True)) as h:
        save_rename(h.config, text(fail=True))
        await h.wait_for(lambda: status(h).failed_swaps == 1)
        assert provider(h) == "a" and "cannot start" in str(status(h).last_error)
        assert wc.CALLS["bad.start"] == 1
        # the same content saved again: not a reason to hammer the failing provider
        await processed(h, lambda: save_rename(h.config, text(fail=True)))
        assert wc.CALLS["bad.start"] == 1 and status(h).failed_swaps == 1
        # nor is a change to the key that leaves the failed candidate as it was (a new, lower
        # ranked candidate): the file watcher retries only a changed target
        await processed(h, lambda: save_rename(h.config, text(fail=True) + component("c")))
        assert wc.CALLS["bad.start"] == 1 and wc.CALLS["c.init"] == 0
        # `oneiricctl reload` retries and reports the outcome
        result = await h.call("reload")
        assert result["outcomes"] == {"adapter/cache": "failed"}
        assert wc.CALLS["bad.start"] == 2
        # a real change to the failing candidate is retried
        save_rename(h.config, text(fail=True, value=2))
        await h.wait_for(lambda: status(h).failed_swaps == 3)
        assert wc.CALLS["bad.start"] == 3 and provider(h) == "a"
        save_rename(h.config, text(fail=False))
        await h.wait_for(lambda: provider(h) == "bad")
        assert status(h).last_error is None


async def test_daemon_settings_live_and_not_live(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running_daemon(config("a")) as h:
        assert h.rt.timeouts.drain == 5
        new = config("a", daemon='socket_mode = "0600"').replace('drain_timeout = "5s"', "")
        save_rename(h.config, new)
        await h.wait_for(lambda: h.rt.timeouts.drain == 30)
        await wait_until(lambda: watcher(h).settled, watcher(h))
        messages = [r.getMessage() for r in caplog.records]
        live = next(m for m in messages if m.startswith("config change applied live:"))
        assert "daemon.drain_timeout" in live and "socket_mode" not in live
        summary = next(m for m in messages if m.startswith("config reloaded (file change):"))
        assert "needs a restart: daemon.socket_mode" in summary


async def test_reload_log_says_what_happened_once(caplog: pytest.LogCaptureFixture) -> None:
    """One summary line per reload that agrees with itself: a swapped key is named as swapped,
    never "N key(s) changed" followed by "unchanged"."""
    caplog.set_level(logging.INFO)
    async with running_daemon(config("a")) as h:
        save_rename(h.config, config("b"))
        await h.wait_for(lambda: h.rt.components()[0].provider == "b")
        await wait_until(lambda: watcher(h).settled, watcher(h))
        summaries = [
            r.getMessage() for r in caplog.records if r.getMessage().startswith("config reloaded")
        ]
        assert summaries == ["config reloaded (file change): adapter/cache swapped"]
        assert not any("unchanged" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- SIGHUP and `watch`


async def test_sighup_reloads_through_the_same_path_and_watch_can_turn_on_live() -> None:
    async with running_daemon(config("a", watch=False)) as h:
        w = watcher(h)
        assert w.watching == () and w.arms == 0  # dormant: nothing watches the files
        save_rename(h.config, config("b", watch=True))
        os.kill(os.getpid(), signal.SIGHUP)
        await h.wait_for(lambda: provider(h) == "b")
        await wait_until(lambda: bool(w.watching), w)  # the reload turned watching on
        save_rename(h.config, config("c", watch=True))
        await h.wait_for(lambda: provider(h) == "c")
        # and off again, through the watcher itself
        save_rename(h.config, config("c", watch=False))
        await wait_until(lambda: w.watching == (), w)


# --------------------------------------------------------------------------- fake watcher


@asynccontextmanager
async def fake_watcher(
    h: Harness,
) -> AsyncIterator[tuple[ConfigWatcher, anyio.abc.ObjectSendStream[object]]]:
    send, receive = anyio.create_memory_object_stream[object](100)
    assert h.daemon.reloader is not None and h.daemon.paths is not None
    w = ConfigWatcher(h.daemon.reloader, h.daemon.paths)
    async with anyio.create_task_group() as tg:
        await tg.start(functools.partial(w.run, changes=receive))
        try:
            yield w, send
        finally:
            tg.cancel_scope.cancel()


async def test_fake_saves_during_a_reload_coalesce_into_one_more() -> None:
    names = ("a", "b", "c", "d", "e")
    body = "".join(component(n, gate="hold" if n == "b" else "") for n in names)

    def text(sel: str) -> str:
        return config(sel, providers=(), watch=False) + body

    async with running_daemon(text("a")) as h, fake_watcher(h) as (w, send):
        save_rename(h.config, text("b"))
        await send.send(str(h.config))
        await wc.started("b").wait()  # reload 1 is stuck activating b
        for sel in ("c", "d", "e"):
            save_rename(h.config, text(sel))
            await send.send(str(h.config))
        await wait_until(lambda: w.dirty, w)
        comp.gate("hold").set()
        await h.wait_for(lambda: provider(h) == "e")
        await wait_until(lambda: w.settled, w)
        assert w.reloads == 2
        assert wc.CALLS["c.init"] == wc.CALLS["d.init"] == 0 and wc.CALLS["e.init"] == 1


async def test_fake_touch_changes_nothing() -> None:
    async with running_daemon(config("a", watch=False)) as h, fake_watcher(h) as (w, send):
        await send.send(str(h.config))
        await wait_until(lambda: w.reloads == 1 and w.settled, w)
        assert wc.CALLS == {"a.init": 1, "a.start": 1}
        assert status(h).swaps == 0


async def test_fake_invalid_then_valid() -> None:
    async with running_daemon(config("a", watch=False)) as h, fake_watcher(h) as (w, send):
        save_rename(h.config, "[[component]]\ndomain = 'nope'\n")
        await send.send(str(h.config))
        await wait_until(lambda: w.failures == 1 and w.settled, w)
        assert "component[0]" in str(h.daemon.config_error) and provider(h) == "a"
        save_rename(h.config, config("b", watch=False))
        await send.send(str(h.config))
        await wait_until(lambda: w.reloads == 2 and w.settled, w)
        assert h.daemon.config_error is None and provider(h) == "b"


async def test_fake_empty_file_is_a_save_in_progress() -> None:
    async with running_daemon(config("a", watch=False)) as h, fake_watcher(h) as (w, send):
        save_truncate(h.config, "")  # the truncate half of truncate-and-write
        await send.send({(2, str(h.config))})
        await wait_until(lambda: w.skipped == 1 and w.settled, w)
        assert w.reloads == 0 and provider(h) == "a"  # not "no components at all"
        save_truncate(h.config, config("b", watch=False))
        await send.send({(2, str(h.config))})
        await h.wait_for(lambda: provider(h) == "b")


async def test_new_empty_dropin_does_not_hold_back_its_batch(d: Path) -> None:
    """Config management deploys a real drop-in and an empty placeholder together."""
    (d / "conf.d").mkdir()
    (d / "oneiricd.toml").write_text(config(None, providers=("a",)))
    async with running_daemon("", directory=d) as h:
        w = watcher(h)
        (d / "conf.d" / "10-b.toml").write_text(component("b", priority=100))
        (d / "conf.d" / "99-local.toml").write_text("")
        await wait_until(lambda: provider(h) == "b", w)
        assert w.skipped == 0
