"""The cost and the honesty of a host's check (SPEC §9: "a refresh that brings nothing new costs
one small request"): the source against a real HTTP server on loopback, real files in the state
directory, python-tuf's real verification (counted by wrapping the key's verify, not replaced).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from securesystemslib.signer import SSlibKey

from harness import make_dir
from oneiric.config.schema import RemoteConfig
from oneiric.errors import RemoteRejected
from oneiric.remote import publish
from oneiric.remote.apply import ApplyReport
from oneiric.remote.client import TufSource
from oneiric.remote.sync import RemoteSync
from oneiric.runtime.candidates import Candidate
from remote_repo import MEM, StaticServer, make_wheel, manifest, new_repo, snapshot_repo


def mem(provider: str) -> dict[str, Any]:
    return {"key": "cache", "provider": provider, "factory": MEM}


def version(n: int) -> bytes:
    return manifest(mem("a"), mem("b"), select={"cache": "ab"[n % 2]}) + f"# v{n}\n".encode()


@dataclass
class Repo:
    dir: Path
    repo: Path
    root: Path
    server: StaticServer

    def publish(self, data: bytes) -> None:
        publish.publish(self.repo, {"fleet.toml": data}, {})

    def config(self) -> RemoteConfig:
        return RemoteConfig(url=self.server.url, root=str(self.root), refresh=3600.0)

    def requests(self, since: int) -> list[str]:
        return self.server.requests[since:]


@pytest.fixture
def repo() -> Iterator[Repo]:
    d = make_dir()
    path = d / "repo"
    root = new_repo(path)
    server = StaticServer(path)
    server.start()
    try:
        yield Repo(d, path, root, server)
    finally:
        server.stop()


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many signatures python-tuf checked (the real check runs; it is only counted)."""
    count = [0]
    real = SSlibKey.verify_signature

    def counted(self: SSlibKey, signature: Any, data: bytes) -> None:
        count[0] += 1
        real(self, signature, data)

    monkeypatch.setattr(SSlibKey, "verify_signature", counted)
    return count


def test_nothing_new_is_one_request_and_no_verification(
    repo: Repo, verifications: list[int]
) -> None:
    repo.publish(version(1))
    source = TufSource(repo.config(), repo.dir / "host")
    first = source.check()
    assert not first.unchanged and verifications[0] > 0
    metadata = repo.dir / "host" / "metadata"
    written = {p: p.stat().st_mtime_ns for p in metadata.rglob("*") if p.is_file()}
    for _ in range(3):
        before, verified = len(repo.server.requests), verifications[0]
        again = source.check()
        assert again.unchanged and again.digest == first.digest
        assert repo.requests(before) == ["/metadata/timestamp.json"]
        assert verifications[0] == verified  # nothing parsed, nothing verified
    assert {p: p.stat().st_mtime_ns for p in metadata.rglob("*") if p.is_file()} == written


def test_a_new_version_is_fully_verified_and_timestamp_fetched_once(
    repo: Repo, verifications: list[int]
) -> None:
    repo.publish(version(1))
    source = TufSource(repo.config(), repo.dir / "host")
    source.check()
    repo.publish(version(2))
    sha = publish.Repo.load(repo.repo).targets.signed.targets["fleet.toml"].hashes["sha256"]
    before, verified = len(repo.server.requests), verifications[0]
    new = source.check()
    assert not new.unchanged and new.manifests["fleet.toml"] == version(2)
    assert new.hashes == {"fleet.toml": sha}
    # the conditional request's new timestamp.json is what ngclient verifies: not asked twice
    assert repo.requests(before) == [
        "/metadata/timestamp.json",
        "/metadata/2.root.json",  # any root rotation? (404: no)
        "/metadata/3.snapshot.json",
        "/metadata/3.targets.json",
        f"/targets/{sha}.fleet.toml",
    ]
    # the trusted root (ngclient starts every check from it) and the new timestamp, snapshot
    # and targets are verified; the local ones this process verified last time are not again
    # (one key per role here: one signature each)
    assert verifications[0] - verified == 4
    # and persisted, so rollback protection survives a restart
    on_disk = repo.dir / "host" / "metadata" / "timestamp.json"
    assert on_disk.read_bytes() == (repo.repo / "metadata" / "timestamp.json").read_bytes()


def test_a_tampered_timestamp_from_the_conditional_request_is_rejected(repo: Repo) -> None:
    """The bytes the one-request check brought are handed to ngclient, which verifies them
    like its own download: a forged timestamp is refused, nothing is accepted."""
    repo.publish(version(1))
    source = TufSource(repo.config(), repo.dir / "host")
    good = source.check()
    path = repo.repo / "metadata" / "timestamp.json"
    doc = json.loads(path.read_bytes())
    doc["signed"]["version"] += 1  # the signature no longer matches
    path.write_text(json.dumps(doc))
    with pytest.raises(RemoteRejected) as err:
        source.check()
    assert err.value.reason == "unsigned", err.value
    trusted = repo.dir / "host" / "metadata" / "timestamp.json"
    assert json.loads(trusted.read_bytes())["signed"]["version"] == doc["signed"]["version"] - 1
    # a later check neither trusts the forgery nor serves it from memory
    path.write_text(json.dumps({**doc, "signed": {**doc["signed"], "version": 1}}))
    with pytest.raises(RemoteRejected):
        source.check()
    assert good.version == 2


def test_rollback_protection_survives_a_new_process(repo: Repo) -> None:
    """The metadata a check trusts in memory is on disk too: a host restarted (a new source
    over the same state directory) refuses an older repository."""
    repo.publish(version(1))
    old = snapshot_repo(repo.repo)
    repo.publish(version(2))
    assert TufSource(repo.config(), repo.dir / "host").check().version == 3
    repo.server.directory = old
    repo.server.stop()
    repo.server.start()
    with pytest.raises(RemoteRejected) as err:
        TufSource(repo.config(), repo.dir / "host").check()
    assert err.value.reason == "rollback", err.value


class _Host:
    """Applies into nothing: these tests look at the state directory."""

    async def apply(
        self, sources: set[str], cands: list[Candidate], sel: dict[str, dict[str, str]]
    ) -> ApplyReport:
        return ApplyReport()


@pytest.mark.anyio
async def test_cached_manifest_targets_are_collected(repo: Repo) -> None:
    state = repo.dir / "state"
    sync = RemoteSync(repo.config(), state, _Host().apply, rng=random.Random(1))
    targets = state / "remote" / "targets"
    shas = []
    for n in range(1, 5):
        repo.publish(version(n))
        shas.append(
            publish.Repo.load(repo.repo).targets.signed.targets["fleet.toml"].hashes["sha256"]
        )
        with anyio.fail_after(60):
            result = await sync.sync_now()
        assert result.ok and result.outcome == "applied", result
        # what the current and the previous accepted manifest name stays, nothing older
        assert sorted(p.name for p in targets.iterdir()) == sorted(
            f"{sha}.fleet.toml" for sha in shas[-2:]
        )
    # an unchanged check collects nothing and keeps both
    with anyio.fail_after(60):
        assert (await sync.sync_now()).outcome == "unchanged"
    assert len(list(targets.iterdir())) == 2


@pytest.mark.anyio
async def test_artifacts_beyond_the_previous_manifest_are_collected_unless_imported(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wheels and their unpacked directories: the current and the previous manifest's stay;
    older ones go, except one whose directory is on the import path (a component imported
    code from it: it may be running)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    cfg = msgspec.structs.replace(repo.config(), allow_factories=["fleetgc."])
    state = repo.dir / "state"
    sync = RemoteSync(cfg, state, _Host().apply, rng=random.Random(1))
    artifacts = state / "remote" / "artifacts"
    shas: list[str] = []
    for n in range(1, 6):
        d = repo.dir / f"w{n}"
        d.mkdir()
        wheel = make_wheel(d, "fleetgc", "1.0", {"fleetgc/__init__.py": f"class W:\n    N = {n}\n"})
        entry = {"key": "w", "provider": "w", "factory": "fleetgc:W", "artifact": wheel.name}
        publish.publish(
            repo.repo, {"fleet.toml": manifest(entry)}, {wheel.name: wheel.read_bytes()}
        )
        info = publish.Repo.load(repo.repo).targets.signed.targets[wheel.name]
        shas.append(info.hashes["sha256"])
        with anyio.fail_after(60):
            result = await sync.sync_now()
        assert result.ok and result.outcome == "applied", result
        if n == 3:  # version 3's code gets imported: its directory goes on the import path
            sys.path.insert(0, str(artifacts / shas[2]))
        kept = {*shas[-2:], *(shas[2:3] if n >= 3 else [])}
        assert {p.name.removesuffix(".whl") for p in artifacts.iterdir()} == kept, n
    # the imported one keeps its directory; its downloaded wheel is not needed any more
    assert (artifacts / shas[2]).is_dir() and not (artifacts / f"{shas[2]}.whl").exists()


def test_a_rotated_root_left_on_disk_by_an_interrupted_process_is_followed(repo: Repo) -> None:
    """A process that wrote ``root_history/2.root.json`` but died before pointing
    ``root.json`` at it: the next one finds version 2 on disk (python-tuf verifies it against
    version 1) and carries on from it."""
    repo.publish(version(1))
    key = repo.dir / "root-new.key"
    publish.keygen(key)
    publish.rotate(repo.repo, "root", add=[key], remove=[], threshold=1)
    metadata = repo.dir / "host" / "metadata"
    assert TufSource(repo.config(), repo.dir / "host").check().version == 2
    assert (metadata / "root.json").resolve().name == "2.root.json"
    (metadata / "root.json").unlink()  # the interruption: root.json still says version 1
    (metadata / "root.json").symlink_to("root_history/1.root.json")
    repo.publish(version(2))
    assert TufSource(repo.config(), repo.dir / "host").check().version == 3
    assert (metadata / "root.json").resolve().name == "2.root.json"
