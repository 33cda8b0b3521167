"""The default configuration shipped in the Debian package (packaging/oneiricd.toml).

It becomes /etc/oneiric/oneiricd.toml on every install and the daemon refuses to start (exit
78) on a config it cannot load, so it is checked here with the daemon's own loader, and each
factory is imported and its settings bound to its signature, as the daemon will call it.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
from pathlib import Path

import pytest

from oneiric.config import Config, load_config, resolve_factory

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "packaging" / "oneiricd.toml"


@pytest.fixture
def config() -> Config:
    # a private copy: drop-ins are read from conf.d/ beside the file, and there must be none
    directory = tempfile.mkdtemp(prefix="on", dir="/tmp")
    try:
        copy = Path(directory) / "oneiricd.toml"
        shutil.copyfile(DEFAULT_CONFIG, copy)
        return load_config(copy)
    finally:
        shutil.rmtree(directory)


def test_default_config_daemon_section(config: Config) -> None:
    assert config.daemon.admin_group == "oneiric"
    assert config.daemon.socket_mode == 0o660
    assert config.daemon.drain_timeout == 30.0
    assert config.remote is None


def test_default_config_components_and_selection(config: Config) -> None:
    got = {(c.domain, c.key, c.provider): (c.factory, c.settings) for c in config.components}
    assert got == {
        ("adapter", "cache", "memory"): (
            "oneiric.builtin.cache:MemoryCache",
            {"max_entries": 10000},
        ),
        ("adapter", "cache", "sqlite"): (
            "oneiric.builtin.cache:SqliteCache",
            {"path": "/var/lib/oneiric/cache.sqlite3"},
        ),
        ("service", "heartbeat", "builtin"): (
            "oneiric.builtin.heartbeat:Heartbeat",
            {"interval": "5s"},
        ),
    }
    assert config.selections == {"adapter": {"cache": "memory"}}


def test_default_config_factories_accept_their_settings(config: Config) -> None:
    for comp in config.components:
        factory = resolve_factory(comp.factory)
        try:
            inspect.signature(factory).bind(**comp.settings)
        except TypeError as exc:
            pytest.fail(f"{comp.factory} does not accept settings {comp.settings}: {exc}")


def test_sqlite_cache_lives_in_the_state_directory(config: Config) -> None:
    # ProtectSystem=strict: /var/lib/oneiric (StateDirectory=) is the daemon's only writable
    # persistent place
    (sqlite,) = [c for c in config.components if c.provider == "sqlite"]
    assert Path(sqlite.settings["path"]).parent == Path("/var/lib/oneiric")
