"""Remote manifests end to end (SPEC §9): a real oneiricd in-process, a real HTTP server on
loopback serving a TUF repository made with the publisher library, ``sync`` over the real
control socket, the real health file."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import Harness, make_dir, running_daemon
from oneiric.remote import publish
from remote_repo import (
    StaticServer,
    duplicate_signatures,
    make_wheel,
    manifest,
    new_repo,
    publish_signed_by,
    remote_config,
    repair,
    snapshot_repo,
    thing,
)

pytestmark = pytest.mark.anyio

ALLOW = '["oneiric.builtin.", "components."]'
V1 = manifest(thing("cache", "a"), thing("cache", "b"), select={"cache": "a"})
V2 = manifest(thing("cache", "a"), thing("cache", "b"), select={"cache": "b"})


@dataclass
class Fleet:
    dir: Path
    repo: Path
    root: Path
    server: StaticServer

    def publish(self, data: bytes, **kw: Any) -> None:
        publish.publish(self.repo, {"fleet.toml": data}, {}, **kw)

    def config(self, extra: str = "", **remote: str) -> str:
        remote.setdefault("allow_factories", ALLOW)
        return (
            '[daemon]\nwatch = false\nstop_timeout = "5s"\n'
            + extra
            + remote_config(self.server.url, self.root, **remote)
        )


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    d = make_dir()
    repo = d / "repo"
    root = new_repo(repo, keys=2, threshold=2)
    server = StaticServer(repo)
    server.start()
    try:
        yield Fleet(d, repo, root, server)
    finally:
        server.stop()


def serving(h: Harness, key: str = "cache") -> str | None:
    cur = h.rt.state("adapter", key).slot.current
    return None if cur is None else cur.candidate.provider


def remote_candidates(h: Harness) -> list[tuple[str, str, str]]:
    rt = h.rt
    return sorted(
        (r.candidate.key, r.candidate.provider, r.candidate.source)
        for src in rt.registry.sources()
        if src.startswith("remote:")
        for r in rt.registry.from_source(src)
    )


async def test_valid_manifest_applied_then_replaced(fleet: Fleet) -> None:
    fleet.publish(V1)
    async with running_daemon(fleet.config(), directory=make_dir()) as h:
        first = await h.call("sync")
        assert first["ok"] and first["outcome"] in ("applied", "unchanged")
        assert serving(h) == "a"
        snap = await h.wait_health(lambda s: s.remote.version == 2 and s.remote.status == "ok")
        r = snap.remote
        assert (r.url, r.targets, r.last_error, r.artifacts, r.restart_needed) == (
            fleet.server.url,
            ["fleet.toml"],
            None,
            0,
            False,
        )
        assert r.applied_at is not None and r.last_check_at is not None
        assert r.next_check_at is not None and r.next_check_at > r.last_check_at

        fleet.publish(V2)
        result = await h.call("sync")
        assert result["ok"] and result["outcome"] == "applied"
        assert result["version"] == 3
        assert result["changed"] == ["adapter/cache"]
        assert result["outcomes"] == {"adapter/cache": "swapped"}
        assert serving(h) == "b"
        explained = await h.call("explain", domain="adapter", key="cache")
        assert explained["via"] == "remote"
        assert remote_candidates(h) == [
            ("cache", "a", "remote:fleet.toml"),
            ("cache", "b", "remote:fleet.toml"),
        ]


async def test_narrower_allow_factories_on_reload_rejects_the_unchanged_manifest(
    fleet: Fleet,
) -> None:
    """A reload that tightens [remote] allow_factories applies at the next check even when the
    repository is unchanged (no new timestamp): the manifest is judged again, not reported as
    "unchanged" from the verification made under the old rules."""
    fleet.publish(V1)
    async with running_daemon(fleet.config(), directory=make_dir()) as h:
        assert (await h.call("sync"))["ok"]
        assert (await h.call("sync"))["outcome"] == "unchanged"
        h.write_config(fleet.config(allow_factories='["oneiric.builtin."]'))
        await h.call("reload")
        result = await h.call("sync")
        assert (result["ok"], result["outcome"], result["reason"]) == (
            False,
            "rejected",
            "disallowed_factory",
        )


async def test_nothing_new_costs_one_request(fleet: Fleet) -> None:
    fleet.publish(V1)
    async with running_daemon(fleet.config(), directory=make_dir()) as h:
        await h.call("sync")
        for _ in range(3):  # on one kept-alive connection: each 304 is read out, never left
            before = len(fleet.server.requests)
            result = await h.call("sync")
            assert result["outcome"] == "unchanged"
            assert fleet.server.requests[before:] == ["/metadata/timestamp.json"]


# -- the rejection matrix ---------------------------------------------------------------------


def _unsigned(f: Fleet) -> None:
    publish_signed_by(f.repo, {"fleet.toml": V2}, [])


def _under_threshold(f: Fleet) -> None:
    publish_signed_by(f.repo, {"fleet.toml": V2}, [publish.load_signer(_key(f, "targets", 1))])


def _one_key_repeated(f: Fleet) -> None:
    publish_signed_by(
        f.repo,
        {"fleet.toml": V2},
        [publish.load_signer(_key(f, "targets", 1))],
        mutate=duplicate_signatures,
    )


def _wrong_keys(f: Fleet) -> None:
    strangers = [publish.keygen(f.dir / f"stranger{n}.key") for n in (1, 2)]
    publish_signed_by(f.repo, {"fleet.toml": V2}, strangers)


def _tampered(f: Fleet) -> None:
    f.publish(V2)
    sha = publish.Repo.load(f.repo).targets.signed.targets["fleet.toml"].hashes["sha256"]
    path = f.repo / "targets" / f"{sha}.fleet.toml"
    path.write_bytes(V2.replace(b'cache = "b"', b'cache = "a"'))


def _expired(f: Fleet) -> None:
    f.publish(V2, expires=-60)


def _oversized(f: Fleet) -> None:
    f.publish(V2 + b"#" * 5000 + b"\n")


def _malformed(f: Fleet) -> None:
    f.publish(b"[[component]\nthis is not toml")


def _disallowed(f: Fleet) -> None:
    f.publish(
        manifest(
            {"key": "cache", "provider": "evil", "factory": "os:system"}, select={"cache": "evil"}
        )
    )


def _key(f: Fleet, role: str, n: int) -> Path:
    return f.repo / "keys" / f"{role}.{n}.key"


@pytest.mark.parametrize(
    ("attack", "reason", "words"),
    [
        (_unsigned, "unsigned", "targets"),
        (_under_threshold, "unsigned", "1/2"),
        (_one_key_repeated, "invalid", "signature"),
        (_wrong_keys, "unsigned", "0/2"),
        (_tampered, "tampered", "fleet.toml"),
        (_expired, "expired", "expired"),
        (_oversized, "oversized", "max_bytes"),
        (_malformed, "malformed", "invalid TOML"),
        (_disallowed, "disallowed_factory", "'os:system'"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
async def test_rejected_update_applies_nothing(
    fleet: Fleet,
    attack: Callable[[Fleet], None],
    reason: str,
    words: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet.publish(V1)
    async with running_daemon(fleet.config(max_bytes='"4KiB"'), directory=make_dir()) as h:
        await h.call("sync")
        assert serving(h) == "a"
        before = remote_candidates(h)
        attack(fleet)
        with caplog.at_level(logging.ERROR, logger="oneiric.remote.sync"):
            result = await h.call("sync")
        assert not result["ok"] and result["outcome"] == "rejected"
        assert result["reason"] == reason, result["error"]
        assert words in result["error"]
        assert result["version"] == 2  # still the applied one
        assert serving(h) == "a"
        assert remote_candidates(h) == before
        snap = await h.wait_health(lambda s: s.remote.last_error is not None)
        assert snap.remote.status == "error" and snap.remote.reason == reason
        assert f"rejected ({reason})" in snap.remote.last_error
        assert any(f"rejected ({reason})" in r.getMessage() for r in caplog.records)
        # the loop lives on: a good update afterwards is applied
        repair(fleet.repo)
        fleet.publish(manifest(thing("cache", "a"), thing("cache", "c"), select={"cache": "c"}))
        good = await h.call("sync")
        assert good["ok"] and good["outcome"] == "applied", good
        assert serving(h) == "c"


async def test_rollback_to_an_older_signed_repository_is_rejected(fleet: Fleet) -> None:
    fleet.publish(V1)
    old = snapshot_repo(fleet.repo)
    fleet.publish(V2)
    async with running_daemon(fleet.config(), directory=make_dir()) as h:
        assert (await h.call("sync"))["version"] == 3
        assert serving(h) == "b"
        fleet.server.directory = old  # an attacker (or a stale mirror) serves version 2 again
        fleet.server.stop()
        fleet.server.start()
        result = await h.call("sync")
        assert not result["ok"] and result["reason"] == "rollback", result
        assert serving(h) == "b"


async def test_sync_exit_status_and_reason_in_oneiricctl(fleet: Fleet) -> None:
    fleet.publish(V1)
    async with running_daemon(fleet.config(), directory=make_dir()) as h:
        ok = await _ctl(h, "sync")
        assert ok.returncode == 0, ok.stderr
        _malformed(fleet)
        bad = await _ctl(h, "sync")
        assert bad.returncode == 1
        assert "rejected (malformed)" in bad.stdout + bad.stderr
        status = await _ctl(h, "status")
        assert "rejected (malformed)" in status.stdout


async def _ctl(h: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    import anyio

    return await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "oneiric.cli.oneiricctl", "--socket", h.socket, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    )


# -- fail static -------------------------------------------------------------------------------


async def test_source_down_keeps_last_good_and_backs_off(fleet: Fleet) -> None:
    fleet.publish(V1)
    config = fleet.config(refresh='"10s"', refresh_max='"30s"')
    async with running_daemon(config, directory=make_dir()) as h:
        await h.call("sync")
        fleet.server.stop()
        delays = []
        for _ in range(3):
            result = await h.call("sync")
            assert not result["ok"] and result["outcome"] == "unreachable"
            assert result["status"] == "stale"
            remote = h.daemon.remote
            assert remote is not None
            delays.append(remote.health.next_check_at - remote.health.last_check_at)
        assert 18 <= delays[0] <= 22  # refresh doubled, ±10 % jitter
        assert 27 <= delays[1] <= 31  # doubled again, capped at refresh_max (+ the check)
        assert 27 <= delays[2] <= 31
        assert serving(h) == "a"
        snap = await h.wait_health(lambda s: s.remote.failures == 3)
        assert snap.remote.status == "stale" and "unreachable" in snap.remote.last_error
        fleet.server.start()
        back = await h.call("sync")
        assert back["ok"] and back["status"] == "ok"
        assert 9 <= back["next_check_at"] - h.daemon.remote.health.last_check_at <= 11


async def test_restart_with_the_source_down_boots_stale(fleet: Fleet) -> None:
    fleet.publish(V2)
    d = make_dir()
    async with running_daemon(fleet.config(), directory=d) as h:
        assert (await h.call("sync"))["ok"]  # applied by it or by the first refresh
        assert serving(h) == "b"
    fleet.server.stop()
    (d / "s.sock").unlink(missing_ok=True)
    async with running_daemon(fleet.config(), directory=d) as h:
        assert serving(h) == "b"  # the persisted manifest, applied before READY
        snap = await h.wait_health(lambda s: s.remote.reason == "unreachable")
        assert snap.remote.status == "stale" and snap.remote.version == 2
        assert "unreachable" in snap.remote.last_error


# -- trust changes -------------------------------------------------------------------------------


async def test_root_rotation_is_followed(fleet: Fleet) -> None:
    fleet.publish(V1)
    async with running_daemon(fleet.config(), directory=make_dir()) as h:
        await h.call("sync")
        new_root = fleet.dir / "newroot.key"
        publish.keygen(new_root)
        publish.rotate(
            fleet.repo,
            "root",
            add=[new_root],
            remove=[_key(fleet, "root", 1), _key(fleet, "root", 2)],
            threshold=1,
        )
        assert (await h.call("sync"))["ok"]
        history = h.state_dir / "remote" / "metadata" / "root_history"
        assert (history / "2.root.json").exists()
        fleet.publish(V2)  # signed under the new root's trust
        assert (await h.call("sync"))["outcome"] == "applied"
        assert serving(h) == "b"


async def test_compromised_targets_key_is_rotated_out(fleet: Fleet) -> None:
    fleet.publish(V1)
    async with running_daemon(fleet.config(), directory=make_dir()) as h:
        await h.call("sync")
        stolen = [publish.load_signer(_key(fleet, "targets", n)) for n in (1, 2)]
        fresh = [fleet.dir / "t3.key", fleet.dir / "t4.key"]
        for k in fresh:
            publish.keygen(k)
        publish.rotate(
            fleet.repo,
            "targets",
            add=fresh,
            remove=[_key(fleet, "targets", 1), _key(fleet, "targets", 2)],
        )
        assert (await h.call("sync"))["ok"]
        publish_signed_by(fleet.repo, {"fleet.toml": V2}, stolen)  # the thief publishes
        result = await h.call("sync")
        assert not result["ok"] and result["reason"] == "unsigned"
        assert serving(h) == "a"


# -- artifacts -----------------------------------------------------------------------------------


async def test_artifact_wheel_fetched_verified_imported(fleet: Fleet) -> None:
    mod = f"fleetpkg_{uuid.uuid4().hex[:8]}"
    src = "class Widget:\n    def __init__(self, name='w'):\n        self.name = name\n"
    wheel = make_wheel(fleet.dir, mod, "1.0", {f"{mod}/__init__.py": src + "VERSION = 1\n"})
    entry = {
        "key": "widget",
        "provider": "w",
        "factory": f"{mod}:Widget",
        "artifact": wheel.name,
    }
    publish.publish(fleet.repo, {"fleet.toml": manifest(entry)}, {wheel.name: wheel.read_bytes()})
    allow = f'["oneiric.builtin.", "components.", "{mod}."]'
    async with running_daemon(fleet.config(allow_factories=allow), directory=make_dir()) as h:
        result = await h.call("sync")  # the first refresh may have applied it already
        assert result["ok"] and result["outcome"] in ("applied", "unchanged"), result
        inst = h.rt.state("adapter", "widget").slot.current
        assert inst is not None
        module = sys.modules[mod]
        artifacts = h.state_dir / "remote" / "artifacts"
        assert Path(module.__file__).is_relative_to(artifacts)
        assert module.VERSION == 1
        snap = await h.wait_health(lambda s: s.remote.artifacts == 1)
        assert not snap.remote.restart_needed

        wheel2 = make_wheel(
            fleet.dir / "v2" if (fleet.dir / "v2").mkdir() is None else fleet.dir,
            mod,
            "1.0",
            {f"{mod}/__init__.py": src + "VERSION = 2\n"},
        )
        publish.publish(
            fleet.repo, {"fleet.toml": manifest(entry)}, {wheel2.name: wheel2.read_bytes()}
        )
        again = await h.call("sync")
        assert again["ok"] and again["restart_needed"], again
        assert mod in again["restart_reasons"][0]
        assert h.rt.state("adapter", "widget").slot.current is inst  # keeps serving
        assert sys.modules[mod].VERSION == 1
        snap = await h.wait_health(lambda s: s.remote.restart_needed)


async def test_tampered_artifact_is_rejected(fleet: Fleet) -> None:
    mod = f"fleetpkg_{uuid.uuid4().hex[:8]}"
    wheel = make_wheel(fleet.dir, mod, "1.0", {f"{mod}/__init__.py": "class W: pass\n"})
    entry = {"key": "w", "provider": "w", "factory": f"{mod}:W", "artifact": wheel.name}
    publish.publish(fleet.repo, {"fleet.toml": manifest(entry)}, {wheel.name: wheel.read_bytes()})
    sha = publish.Repo.load(fleet.repo).targets.signed.targets[wheel.name].hashes["sha256"]
    stored = fleet.repo / "targets" / f"{sha}.{wheel.name}"
    stored.write_bytes(stored.read_bytes()[:-1] + b"X")
    allow = f'["{mod}."]'
    async with running_daemon(fleet.config(allow_factories=allow), directory=make_dir()) as h:
        result = await h.call("sync")
        assert not result["ok"] and result["reason"] == "tampered", result
        assert mod not in sys.modules
        assert h.rt.states.get(("adapter", "w")) is None or serving(h, "w") is None


async def test_an_artifact_may_not_bring_modules_its_factories_do_not_name(fleet: Fleet) -> None:
    """allow_factories checks factory strings; the wheel must not smuggle other top-level
    modules onto sys.path (shadowing the daemon's or local components' imports)."""
    mod = f"fleetpkg_{uuid.uuid4().hex[:8]}"
    wheel = make_wheel(
        fleet.dir,
        mod,
        "1.0",
        {f"{mod}/__init__.py": "class W: pass\n", "components.py": "raise SystemExit(3)\n"},
    )
    entry = {"key": "w", "provider": "w", "factory": f"{mod}:W", "artifact": wheel.name}
    publish.publish(fleet.repo, {"fleet.toml": manifest(entry)}, {wheel.name: wheel.read_bytes()})
    allow = f'["{mod}."]'
    async with running_daemon(fleet.config(allow_factories=allow), directory=make_dir()) as h:
        result = await h.call("sync")
        assert not result["ok"] and result["reason"] == "disallowed_factory", result
        assert "components" in result["error"]
        assert mod not in sys.modules
        artifacts = h.state_dir / "remote" / "artifacts"
        assert not any(p.is_dir() for p in artifacts.glob("*")) if artifacts.exists() else True


# -- like a local change -------------------------------------------------------------------------


async def test_no_duplicate_candidates_after_many_syncs(fleet: Fleet) -> None:
    fleet.publish(V1)
    async with running_daemon(fleet.config(), directory=make_dir()) as h:
        for n in range(12):
            if n % 3 == 0:
                fleet.publish(V1 if n % 2 else V2)
            assert (await h.call("sync"))["ok"]
        assert remote_candidates(h) == [
            ("cache", "a", "remote:fleet.toml"),
            ("cache", "b", "remote:fleet.toml"),
        ]
        listed = (await h.call("list", shadowed=True))["candidates"]
        assert sorted(c["provider"] for c in listed) == ["a", "b"]


LOCAL = """
[[component]]
domain = "adapter"
key = "cache"
provider = "local"
factory = "components:Thing"
settings = { name = "local" }

[selections.adapter]
cache = "local"
"""


async def test_local_selection_and_override_outrank_remote(fleet: Fleet) -> None:
    fleet.publish(V2)  # the remote selects b
    async with running_daemon(fleet.config(LOCAL), directory=make_dir()) as h:
        await h.call("sync")
        assert serving(h) == "local"
        explained = await h.call("explain", domain="adapter", key="cache")
        assert explained["via"] == "selection"
        await h.call("swap", domain="adapter", key="cache", provider="a")
        assert serving(h) == "a"
        await h.call("swap", domain="adapter", key="cache", clear=True)
        assert serving(h) == "local"
        h.write_config(fleet.config(LOCAL.split("[selections.adapter]", maxsplit=1)[0]))
        await h.call("reload")
        assert serving(h) == "b"  # no local selection left: the remote one decides


async def test_change_for_a_paused_key_is_parked(fleet: Fleet) -> None:
    fleet.publish(V1)
    async with running_daemon(fleet.config(), directory=make_dir()) as h:
        await h.call("sync")
        await h.call("pause", domain="adapter", key="cache")
        fleet.publish(V2)
        result = await h.call("sync")
        assert result["outcomes"] == {"adapter/cache": "parked"}
        assert serving(h) == "a"
        await h.call("resume", domain="adapter", key="cache")
        await h.wait_for(lambda: serving(h) == "b")


async def test_failed_swap_rolls_back_and_is_reported(fleet: Fleet) -> None:
    fleet.publish(V1)
    async with running_daemon(fleet.config(), directory=make_dir()) as h:
        await h.call("sync")
        fleet.publish(
            manifest(
                thing("cache", "a"), thing("cache", "bad", fail="start"), select={"cache": "bad"}
            )
        )
        result = await h.call("sync")
        assert result["ok"] and result["outcome"] == "applied"
        assert "cannot start" in result["failed"]["adapter/cache"]
        assert serving(h) == "a"


def test_check_validates_the_remote_section(fleet: Fleet) -> None:
    d = make_dir()
    config = d / "oneiricd.toml"
    oneiricd = str(Path(sys.executable).with_name("oneiricd"))

    def check(text: str) -> subprocess.CompletedProcess[str]:
        config.write_text(text)
        env = {**os.environ, "ONEIRIC_CONFIG": str(config)}
        return subprocess.run(
            [oneiricd, "--check"], env=env, capture_output=True, text=True, check=False
        )

    ok = check(fleet.config())
    assert ok.returncode == 0, ok.stderr
    missing = check(remote_config(fleet.server.url, d / "nope.json"))
    assert missing.returncode == 78
    assert f"root {d / 'nope.json'} does not exist" in missing.stderr
    os.chmod(fleet.root, 0o666)
    unsafe = check(fleet.config())
    assert unsafe.returncode == 78
    assert "world-writable (mode 0666)" in unsafe.stderr and "chmod go-w" in unsafe.stderr
    os.chmod(fleet.root, 0o644)
    not_root = d / "targets.json"
    not_root.write_text('{"signed": {"_type": "targets"}, "signatures": []}')
    assert "is not TUF root metadata" in check(remote_config(fleet.server.url, not_root)).stderr
    local = check(remote_config(str(d / "norepo"), fleet.root))
    assert local.returncode == 78 and "without a metadata/ directory" in local.stderr
    bad_url = check(remote_config("http://", fleet.root))
    assert bad_url.returncode == 78 and "remote.url" in bad_url.stderr


async def test_selection_lacking_a_required_capability_is_rejected(fleet: Fleet) -> None:
    a = {**thing("cache", "a"), "capabilities": ["persist"]}
    fleet.publish(manifest(a, thing("cache", "b"), select={"cache": "a"}))
    requires = '[requires.adapter]\ncache = ["persist"]\n'
    async with running_daemon(fleet.config(requires), directory=make_dir()) as h:
        await h.call("sync")
        assert serving(h) == "a"
        fleet.publish(manifest(a, thing("cache", "b"), select={"cache": "b"}))
        result = await h.call("sync")
        assert not result["ok"] and result["reason"] == "capability", result
        assert "lacks 'persist'" in result["error"]
        assert serving(h) == "a"
        assert h.daemon.remote is not None and h.daemon.remote.health.failures == 1


async def test_manifest_leaving_a_required_key_without_a_capable_provider_is_rejected(
    fleet: Fleet,
) -> None:
    fleet.publish(manifest(thing("cache", "b"), thing("other", "o")))  # b lacks "persist"
    requires = '[requires.adapter]\ncache = ["persist"]\n'
    async with running_daemon(fleet.config(requires), directory=make_dir()) as h:
        result = await h.call("sync")
        assert not result["ok"] and result["reason"] == "capability", result
        assert "adapter/cache: no candidate satisfies" in result["error"]
        assert remote_candidates(h) == []  # nothing of it, not even adapter/other


async def test_syncs_are_in_the_event_history(fleet: Fleet) -> None:
    fleet.publish(V1)
    async with running_daemon(fleet.config(), directory=make_dir()) as h:
        await h.call("sync")
        fleet.publish(V2)
        await h.call("sync")
        _malformed(fleet)
        await h.call("sync")
        events = (await h.call("events"))["events"]
        remote = [e for e in events if e["kind"] == "remote_sync"]
        assert remote[-2]["detail"]["version"] == 3
        assert remote[-2]["detail"]["changed"] == ["adapter/cache"]
        assert remote[-1]["detail"]["reason"] == "malformed"
        assert "nothing applied" in remote[-1]["message"]
