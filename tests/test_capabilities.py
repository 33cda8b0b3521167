"""Capabilities (SPEC §10): declared per candidate, required per key and per lease, enforced
through config loading, the registry, the runtime and the real control socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import make_dir, running_daemon
from oneiric.config import load_config
from oneiric.control.client import RemoteError
from oneiric.errors import ConfigError, MissingCapability
from oneiric.runtime.registry import Candidate, Registry, requires_errors

CAPS = """
[daemon]
drain_timeout = "5s"
stop_timeout = "5s"
watch = false

[[component]]
domain = "adapter"
key = "cache"
provider = "memory"
factory = "components:Thing"
priority = 10
capabilities = ["ttl"]
settings = { name = "memory" }

[[component]]
domain = "adapter"
key = "cache"
provider = "disk"
factory = "components:Thing"
capabilities = ["ttl", "persist"]
settings = { name = "disk" }

[[component]]
domain = "adapter"
key = "scratch"
provider = "memory"
factory = "components:Thing"
capabilities = ["ttl"]
settings = { name = "scratch" }
"""


def _load(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "oneiricd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def test_requires_rejects_a_selection_lacking_the_capability(tmp_path: Path) -> None:
    error = _load(
        tmp_path,
        CAPS + '[requires.adapter]\ncache = ["persist"]\n[selections.adapter]\ncache = "memory"\n',
    )
    assert error.path == "selections.adapter.cache"
    assert "'memory', which lacks capability 'persist'" in error.detail
    assert "[requires.adapter] cache" in error.detail


@pytest.mark.parametrize(
    ("extra", "path", "detail"),
    [
        ('capabilities = ["ok", "no way"]', "component[0].capabilities[1]", "capability name"),
        ('capabilities = ["a", "a"]', "component[0].capabilities[1]", "listed twice"),
        ("capabilities = 3", "component[0].capabilities", "expected array, got int"),
    ],
)
def test_capability_field_errors(tmp_path: Path, extra: str, path: str, detail: str) -> None:
    text = (
        '[[component]]\ndomain = "adapter"\nkey = "k"\nprovider = "p"\n'
        f'factory = "components:Thing"\n{extra}\n'
    )
    error = _load(tmp_path, text)
    assert error.path == path
    assert detail in error.detail


@pytest.mark.parametrize(
    ("text", "path", "detail"),
    [
        ('[requires.adaptor]\nk = ["x"]\n', "requires.adaptor", "unknown domain 'adaptor'"),
        ('[requires.adapter]\nk = "persist"\n', "requires.adapter.k", "expected array"),
        ('[requires.adapter]\nk = ["bad name"]\n', "requires.adapter.k[0]", "capability name"),
    ],
)
def test_requires_table_errors(tmp_path: Path, text: str, path: str, detail: str) -> None:
    error = _load(tmp_path, text)
    assert error.path == path
    assert detail in error.detail


def _cand(provider: str, caps: tuple[str, ...], priority: int = 0) -> Candidate:
    return Candidate(
        domain="adapter",
        key="cache",
        provider=provider,
        factory="components:Thing",
        priority=priority,
        capabilities=caps,
        source="test",
    )


def test_registry_ranks_only_capable_candidates_and_explains_why() -> None:
    reg = Registry()
    reg.register(_cand("memory", ("ttl",), priority=10))
    reg.register(_cand("disk", ("ttl", "persist")))
    assert reg.resolve("adapter", "cache").winner.candidate.provider == "memory"  # type: ignore[union-attr]
    res = reg.resolve("adapter", "cache", required=("persist",))
    assert res.winner is not None and res.winner.candidate.provider == "disk"
    # a selection naming an incapable provider falls back, with the capability named
    res = reg.resolve("adapter", "cache", selection="memory", required=("persist",))
    assert res.winner is not None and res.winner.candidate.provider == "disk"
    assert "lacks 'persist'" in res.warnings[0]
    ex = reg.explain("adapter", "cache", required=("persist",), capability=("persist",))
    assert ex.matching == ("disk",)
    memory = next(e for e in ex.candidates if e.provider == "memory")
    assert memory.eligible is False and memory.matches is False
    assert "not eligible: lacks 'persist'" in memory.reasons[0]
    assert reg.refusal("adapter", "cache", "memory", ("persist",)) is not None
    assert reg.refusal("adapter", "cache", "disk", ("persist",)) is None


def test_requires_errors_name_selection_and_unservable_keys() -> None:
    cands = [_cand("memory", ("ttl",)), _cand("disk", ("ttl",))]
    errors = requires_errors(
        cands, {"adapter": {"cache": "memory"}}, {"adapter": {"cache": ("persist",)}}
    )
    assert any("[selections.adapter] cache = 'memory'" in e for e in errors)
    assert any("no candidate satisfies" in e for e in errors)
    assert requires_errors(cands, {}, {"adapter": {"cache": ("ttl",)}}) == []


@pytest.mark.anyio
async def test_swap_to_incapable_provider_is_refused_over_the_socket() -> None:
    text = CAPS + '[requires.adapter]\ncache = ["persist"]\n'
    async with running_daemon(text, directory=make_dir()) as h:
        # ranking would pick "memory" (priority 10); requires makes "disk" the winner
        status = await h.call("status", domain="adapter", key="cache")
        assert status["components"][0]["provider"] == "disk"
        with pytest.raises(RemoteError) as info:
            await h.call("swap", domain="adapter", key="cache", provider="memory")
        assert info.value.code == "conflict"
        assert "lacks capability 'persist'" in info.value.message
        assert h.rt.intent.override("adapter", "cache") is None  # nothing was recorded
        explain = await h.call("explain", domain="adapter", key="cache", capability=["persist"])
        assert explain["requires"] == ["persist"]
        assert explain["matching"] == ["disk"]
        # a lease asking for a capability the serving provider lacks is refused
        with pytest.raises(MissingCapability, match="lacks capability 'persist'"):
            async with h.rt.use("adapter", "scratch", capabilities=["persist"]):
                pass  # pragma: no cover - refused before the block
        async with h.rt.use("adapter", "cache", capabilities=["persist", "ttl"]) as inst:
            assert inst.name == "disk"


@pytest.mark.anyio
async def test_reload_naming_an_incapable_selection_keeps_the_running_config() -> None:
    async with running_daemon(CAPS, directory=make_dir()) as h:
        h.write_config(
            CAPS
            + '[requires.adapter]\ncache = ["persist"]\n[selections.adapter]\ncache = "memory"\n'
        )
        with pytest.raises(RemoteError) as info:
            await h.call("reload")
        assert "lacks capability 'persist'" in info.value.message
        assert h.rt.components("adapter", "cache")[0].provider == "memory"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            '[[component]]\ndomain = "event"\nkey = "e"\nprovider = "p"\n'
            'factory = "components:Thing"\nretry = { attempts = 0 }\n',
            "at component[0].retry.attempts: expected an integer >= 1 (1 = no retry), got 0",
        ),
        (
            CAPS.replace("watch = false", "watch = false\ndead_letters = 0"),
            "at daemon.dead_letters: expected an integer >= 1, got 0",
        ),
        (
            CAPS
            + '[requires.adapter]\ncache = ["persist"]\n[selections.adapter]\ncache = "memory"\n',
            "at selections.adapter.cache: selects provider 'memory', which lacks capability",
        ),
    ],
)
def test_oneiricd_check_names_the_field(tmp_path: Path, text: str, where: str) -> None:
    import subprocess
    import sys

    config = tmp_path / "oneiricd.toml"
    config.write_text(text)
    oneiricd = str(Path(sys.executable).parent / "oneiricd")
    done = subprocess.run(
        [oneiricd, "--config", str(config), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(Path(__file__).parent), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 78, done.stderr
    assert f"{config}, {where}" in done.stderr
