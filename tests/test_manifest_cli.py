"""``oneiricctl manifest ...``: the publisher's commands on real repository directories, and
the whole path from ``manifest publish`` to a real daemon serving the change (SPEC §9)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from harness import make_dir, running_daemon
from oneiric.cli.oneiricctl import cli
from remote_repo import StaticServer, manifest, remote_config, thing

MANIFEST = manifest(thing("cache", "a"), thing("cache", "b"), select={"cache": "b"})


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    result = run("manifest", "init", str(tmp_path / "repo"), "--keys", "2", "--threshold", "2")
    assert result.exit_code == 0, result.output
    return tmp_path / "repo"


def test_init_makes_keys_0600_and_prints_the_root_to_install(tmp_path: Path) -> None:
    result = run(
        "--json", "manifest", "init", str(tmp_path / "r"), "--keys", "2", "--threshold", "2"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["root"] == str(tmp_path / "r" / "metadata" / "1.root.json")
    keys = sorted(p.name for p in (tmp_path / "r" / "keys").iterdir())
    assert keys == [
        f"{role}.{n}.key" for role in ("root", "snapshot", "targets", "timestamp") for n in (1, 2)
    ]
    for p in (tmp_path / "r" / "keys").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert doc["roles"]["root"]["threshold"] == 2 and len(doc["roles"]["root"]["keys"]) == 2
    again = run("manifest", "init", str(tmp_path / "r"))
    assert again.exit_code == 1 and "already holds a repository" in again.stderr


def test_init_refuses_an_impossible_threshold(tmp_path: Path) -> None:
    result = run("manifest", "init", str(tmp_path / "r"), "--keys", "1", "--threshold", "2")
    assert result.exit_code == 1 and "threshold <= keys" in result.stderr


def test_publish_status_verify(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "fleet.toml").write_bytes(MANIFEST)
    pub = run("--json", "manifest", "publish", str(repo), str(tmp_path / "fleet.toml"))
    assert pub.exit_code == 0, pub.output
    doc = json.loads(pub.stdout)
    assert (doc["target"], doc["targets_version"], doc["components"]) == ("fleet.toml", 2, 2)
    status = run("--json", "manifest", "status", str(repo))
    roles = json.loads(status.stdout)["roles"]
    assert roles["targets"]["version"] == 2 and len(roles["targets"]["signed_by"]) == 2
    text = run("manifest", "status", str(repo)).stdout
    assert "fleet.toml" in text and text.splitlines()[1].split()[:4] == [
        "role",
        "version",
        "expires",
        "threshold",
    ]
    fleet = str(tmp_path / "fleet.toml")
    ok = run("manifest", "verify", str(repo), fleet, "--allow", "components.")
    assert ok.exit_code == 0, ok.output
    assert "OK, 1 target(s) verified as a host would" in ok.stdout
    denied = run("manifest", "verify", str(repo), fleet, "--allow", "myco.")
    assert denied.exit_code == 1 and "not allowed by [remote] allow_factories" in denied.stderr


def test_publish_refuses_what_hosts_would_reject(repo: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[component]]\ndomain = 'adapter'\n")
    result = run("manifest", "publish", str(repo), str(bad))
    assert result.exit_code == 1 and "component[0]: missing required key 'key'" in result.stderr
    (tmp_path / "fleet.toml").write_bytes(MANIFEST)
    one = run(
        "manifest",
        "publish",
        str(repo),
        str(tmp_path / "fleet.toml"),
        "--key",
        str(repo / "keys" / "targets.1.key"),
    )
    assert one.exit_code == 1 and "needs 2 signature(s)" in one.stderr
    wheel = tmp_path / "w.toml"
    wheel.write_bytes(
        MANIFEST + b'\n[[component]]\ndomain = "adapter"\nkey = "x"\n'
        b'provider = "x"\nfactory = "p:X"\nartifact = "p-1-py3-none-any.whl"\n'
    )
    missing = run("manifest", "publish", str(repo), str(wheel))
    assert missing.exit_code == 1 and "add them with --artifact WHEEL" in missing.stderr


def test_tampered_repository_fails_verify(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "fleet.toml").write_bytes(MANIFEST)
    run("manifest", "publish", str(repo), str(tmp_path / "fleet.toml"))
    (stored,) = (repo / "targets").glob("*.fleet.toml")
    stored.write_bytes(b"# changed on the server\n")
    result = run("manifest", "verify", str(repo))
    assert result.exit_code == 1 and "manifest verify" in result.stderr


def test_rotate_needs_something_to_do(repo: Path) -> None:
    result = run("manifest", "rotate", str(repo), "--role", "targets")
    assert result.exit_code == 2 and "nothing to rotate" in result.output


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    first = run("--json", "manifest", "keygen", str(tmp_path / "k.key"))
    assert first.exit_code == 0 and len(json.loads(first.stdout)["keyid"]) == 64
    second = run("manifest", "keygen", str(tmp_path / "k.key"))
    assert second.exit_code == 1 and "refusing to overwrite" in second.stderr


def test_manifest_help_does_not_load_tuf() -> None:
    code = (
        "import sys\nfrom oneiric.cli.oneiricctl import main\n"
        "try:\n    main(['manifest', 'publish', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('MODULES', *sorted(sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = out.stdout.split("MODULES", 1)[1].split()
    assert "oneiric.cli.ctl_manifest" in modules
    heavy = {"tuf", "securesystemslib", "cryptography", "urllib3"}
    assert [m for m in modules if m.split(".")[0] in heavy] == []


# -- the whole path: the publisher's commands steer a real daemon over HTTP -----------------


@pytest.mark.anyio
async def test_publish_rotate_recover_steers_a_real_daemon(repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "root.json"
    root.write_bytes((repo / "metadata" / "1.root.json").read_bytes())
    os.chmod(root, 0o644)
    (tmp_path / "fleet.toml").write_bytes(MANIFEST)
    assert run("manifest", "publish", str(repo), str(tmp_path / "fleet.toml")).exit_code == 0
    server = StaticServer(repo)
    server.start()
    try:
        config = "[daemon]\nwatch = false\n" + remote_config(
            server.url, root, allow_factories='["components."]'
        )
        async with running_daemon(config, directory=make_dir()) as h:
            assert (await h.call("sync"))["ok"]
            assert h.rt.state("adapter", "cache").slot.current.candidate.provider == "b"
            # a targets key is compromised: rotate it out, sign with the new one
            new_key = tmp_path / "t-new.key"
            assert run("manifest", "keygen", str(new_key)).exit_code == 0
            rotated = run(
                "manifest",
                "rotate",
                str(repo),
                "--role",
                "targets",
                "--add",
                str(new_key),
                "--remove",
                str(repo / "keys" / "targets.1.key"),
            )
            assert rotated.exit_code == 0, rotated.output
            (tmp_path / "fleet.toml").write_bytes(
                manifest(thing("cache", "a"), thing("cache", "b"), select={"cache": "a"})
            )
            assert (
                run("manifest", "publish", str(repo), str(tmp_path / "fleet.toml")).exit_code == 0
            )
            result = await h.call("sync")
            assert result["ok"] and result["outcome"] == "applied", result
            assert h.rt.state("adapter", "cache").slot.current.candidate.provider == "a"
            retired = repo / "keys" / "retired" / "targets.1.key"
            assert retired.exists()
            # the retired key alone can no longer publish
            stolen = run(
                "manifest",
                "publish",
                str(repo),
                str(tmp_path / "fleet.toml"),
                "--key",
                str(retired),
                "--key",
                str(repo / "keys" / "targets.2.key"),
            )
            assert stolen.exit_code == 1 and "needs 2 signature(s)" in stolen.stderr
    finally:
        server.stop()
