"""The validated shapes of a configuration: frozen msgspec Structs (SPEC §3).

Only data and defaults live here; the checks that turn raw TOML into these Structs (with
operator-facing errors) are in ``sections`` and ``loader``. Everything downstream (daemon,
watcher, lifecycle) depends on these types alone, so they stay free of loading logic.
"""

from __future__ import annotations

from typing import Any

import msgspec

DEFAULT_INCLUDE: tuple[str, ...] = ("conf.d/*.toml",)
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")


class DaemonConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[daemon]``: where the daemon lives and how long it waits; durations in seconds."""

    socket: str | None = None
    socket_mode: int = 0o660
    admin_group: str = "oneiric"
    health_file: str | None = None
    state_dir: str | None = None
    drain_timeout: float = 30.0
    stop_timeout: float = 30.0
    activation_timeout: float = 10.0
    health_interval: float = 5.0
    idle_timeout: float = 300.0
    log_level: str = "info"
    watch: bool = True


class ComponentConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One ``[[component]]`` candidate; ``source`` is set by the loader, not by TOML."""

    domain: str
    key: str
    provider: str
    factory: str
    priority: int = 0
    stack_level: int = 0
    settings: dict[str, Any] = {}
    every: float | None = None
    topics: tuple[str, ...] = ()
    concurrency: int | None = None
    queue_size: int = 1000
    source: str = ""


class RemoteConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[remote]``: the signed manifest source (SPEC §9)."""

    url: str
    refresh: float = 300.0
    trusted_keys: str | None = None
    threshold: int = 1
    allow_factories: tuple[str, ...] = ()


class Config(msgspec.Struct, kw_only=True, frozen=True):
    """The merged, validated configuration of one main file and its drop-ins."""

    path: str
    daemon: DaemonConfig
    components: tuple[ComponentConfig, ...]
    selections: dict[str, dict[str, str]]
    remote: RemoteConfig | None
    include: tuple[str, ...]
    files: tuple[str, ...]
    #: what is valid but suspicious (a selection expected from the remote manifest); the
    #: daemon logs them on every load and ``oneiricctl reload`` prints them
    warnings: tuple[str, ...] = ()


def _describe(comp: ComponentConfig) -> str:
    """How messages name a component, shared by load errors and ``check_factories``."""
    return f"({comp.domain}/{comp.key} provider {comp.provider})"
