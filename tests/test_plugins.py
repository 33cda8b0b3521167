"""Entry-point plugins (SPEC §10) from real installed distributions: each test writes a
distribution (its package and a ``.dist-info`` with ``entry_points.txt``, as pip installs it)
into a fresh directory on ``sys.path``; importlib.metadata finds it there, unmocked."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from harness import make_dir, running_daemon
from oneiric.plugins import discover

VENV_BIN = Path(sys.executable).parent

GOOD = """
class FastCache:
    oneiric_domain = "adapter"
    oneiric_key = "cache"
    oneiric_priority = 50
    oneiric_capabilities = ("ttl", "persist")
    oneiric_settings = {"size": 7}

    def __init__(self, size: int) -> None:
        self.size = size

    def get(self) -> int:
        return self.size


class NoKey:
    oneiric_domain = "adapter"


class BadField:
    oneiric_domain = "adapter"
    oneiric_key = "cache"
    oneiric_priority = "high"
"""


def install(site: Path, dist: str, module: str, source: str, entry_points: dict[str, str]) -> None:
    """Write ``dist`` 1.0 into ``site`` the way an installer lays it out."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"  # as installers name it
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[oneiric.components]\n{lines}")
    (info / "RECORD").write_text(f"{module}.py,,\n{info.name}/METADATA,,\n")


@pytest.fixture
def site(monkeypatch: pytest.MonkeyPatch) -> Path:
    path = make_dir() / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


def test_discover_registers_good_plugins_and_reports_broken_ones(site: Path) -> None:
    install(
        site,
        "acme-cache",
        "acme_cache",
        GOOD,
        {
            "fast": "acme_cache:FastCache",
            "nokey": "acme_cache:NoKey",
            "badfield": "acme_cache:BadField",
            "missing": "acme_cache:DoesNotExist",
        },
    )
    install(
        site,
        "broken-dist",
        "broken_mod",
        "raise RuntimeError('boom at import')\n",
        {"kaput": "broken_mod:Thing"},
    )
    scan = discover()
    [cand] = scan.candidates
    assert (cand.domain, cand.key, cand.provider) == ("adapter", "cache", "fast")
    assert cand.source == "entry_point:acme-cache"
    assert cand.priority == 50 and cand.capabilities == ("ttl", "persist")
    assert cand.settings == {"size": 7}
    errors = "\n".join(scan.errors)
    assert "plugin 'nokey' of acme-cache" in errors and "oneiric_key" in errors
    assert "plugin 'badfield' of acme-cache: expected int, got str" in errors
    assert "plugin 'missing' of acme-cache: cannot load" in errors and "AttributeError" in errors
    assert "plugin 'kaput' of broken-dist: cannot load" in errors and "boom at import" in errors
    assert len(scan.errors) == 4


CONFIG = """
[daemon]
drain_timeout = "5s"
stop_timeout = "5s"
watch = false

[[component]]
domain = "adapter"
key = "cache"
provider = "memory"
factory = "components:Thing"
settings = { name = "memory" }
"""


@pytest.mark.anyio
async def test_daemon_serves_a_plugin_and_skips_a_broken_one(site: Path) -> None:
    install(site, "acme-cache", "acme_cache", GOOD, {"fast": "acme_cache:FastCache"})
    install(
        site,
        "broken-dist",
        "broken_mod",
        "raise RuntimeError('boom')\n",
        {"kaput": "broken_mod:Thing"},
    )
    async with running_daemon(CONFIG, directory=make_dir()) as h:
        listed = await h.call("list", domain="adapter", shadowed=True)
        by_provider = {c["provider"]: c for c in listed["candidates"]}
        assert by_provider["fast"]["source"] == "entry_point:acme-cache"
        assert by_provider["fast"]["active"] is True  # priority 50 beats the config's 0
        assert by_provider["memory"]["active"] is False
        async with h.rt.use("adapter", "cache", capabilities={"persist"}) as cache:
            assert cache.get() == 7
        status = await h.call("status")
        assert status["plugins"]["loaded"] == ["acme-cache:fast"]
        assert "broken-dist" in status["plugins"]["errors"][0]
        # a plugin uninstalled while running goes away on reload, like a removed drop-in
        for path in site.glob("acme*"):
            if path.is_dir():
                for f in path.iterdir():
                    f.unlink()
                path.rmdir()
            else:
                path.unlink()
        await h.call("reload")
        listed = await h.call("list", domain="adapter", shadowed=True)
        assert [c["provider"] for c in listed["candidates"]] == ["memory"]
        await h.wait_for(lambda: h.rt.components("adapter", "cache")[0].provider == "memory")


def build_wheel(dest: Path, dist: str, module: str, source: str, eps: dict[str, str]) -> Path:
    """A real pure-Python wheel (RECORD with hashes, WHEEL, entry_points.txt)."""
    stem = dist.replace("-", "_")
    info = f"{stem}-1.0.dist-info"
    files = {
        f"{module}.py": textwrap.dedent(source).encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
        f"{info}/entry_points.txt": (
            "[oneiric.components]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
        ).encode(),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    wheel = dest / f"{stem}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def test_oneiricd_check_with_pip_installed_plugins(site: Path) -> None:
    """Two wheels built here and installed by pip into a target directory, as an operator
    would (docs/deployment.md): oneiricd --check counts the good plugin and warns about the
    broken one, exit 0."""
    wheels = site.parent / "wheels"
    wheels.mkdir()
    target = site.parent / "target"
    good = build_wheel(wheels, "acme-cache", "acme_cache2", GOOD, {"fast": "acme_cache2:FastCache"})
    bad = build_wheel(
        wheels,
        "broken-dist",
        "broken_mod2",
        "raise RuntimeError('boom')\n",
        {"kaput": "broken_mod2:Thing"},
    )
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    subprocess.run([*pip, "--target", str(target), str(good), str(bad)], check=True, timeout=120)
    assert (target / "acme_cache-1.0.dist-info" / "entry_points.txt").exists()
    config = site.parent / "oneiricd.toml"
    config.write_text(CONFIG)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(Path(__file__).parent)]))
    done = subprocess.run(
        [str(VENV_BIN / "oneiricd"), "--config", str(config), "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 entry-point plugin(s)" in done.stdout
    assert "warning: plugin 'kaput' of broken-dist" in done.stderr
    assert "it will be skipped" in done.stderr


@pytest.mark.anyio
async def test_config_may_select_and_require_a_plugin_provider(site: Path) -> None:
    install(site, "acme-cache", "acme_cache", GOOD, {"fast": "acme_cache:FastCache"})
    config = CONFIG + (
        '[selections.adapter]\ncache = "fast"\n[requires.adapter]\ncache = ["persist"]\n'
    )
    async with running_daemon(config, directory=make_dir()) as h:
        [row] = h.rt.components("adapter", "cache")
        assert row.provider == "fast"  # a plugin provider, selected by the config
        explain = await h.call("explain", domain="adapter", key="cache")
        memory = next(c for c in explain["candidates"] if c["provider"] == "memory")
        assert memory["eligible"] is False


def test_a_rescan_is_reused_until_a_distribution_comes_or_goes(site: Path) -> None:
    install(site, "acme-cache", "acme_cache", GOOD, {"fast": "acme_cache:FastCache"})
    first = discover()
    assert discover() is first  # nothing changed on sys.path: the same scan
    install(
        site,
        "acme-extra",
        "acme_extra",
        GOOD.replace('"cache"', '"extra"'),
        {"x": "acme_extra:FastCache"},
    )
    second = discover()
    assert second is not first
    assert sorted(second.loaded) == ["acme-cache:fast", "acme-extra:x"], second.errors
