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
    dead_letters: int = 1000  # dead-lettered events kept (oldest dropped first, counted)
    workflow_history: int = 50  # finished workflow runs whose record is kept in the state dir


class Retry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``retry = { attempts = 3, backoff = "1s" }`` of an event handler or a workflow node:
    ``attempts`` counts every try (1 = no retry); the wait before try n+1 is
    ``backoff * 2**(n-1)``, capped at ``max_backoff``."""

    attempts: int = 1
    backoff: float = 1.0
    max_backoff: float = 300.0

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` (>= 1) failed tries."""
        return float(min(self.backoff * 2 ** max(failed_attempts - 1, 0), self.max_backoff))


class ComponentConfig(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True, gc=False
):
    """One ``[[component]]`` candidate; ``source`` is set by the loader, not by TOML.

    Not tracked by the cyclic GC (``gc=False``): pure data that can take no part in a cycle,
    and 20,000 of them made every full collection longer (see docs/performance.md)."""

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
    capabilities: tuple[str, ...] = ()
    filters: dict[str, Any] = {}
    fanout: str = "broadcast"
    retry: Retry | None = None
    artifact: str | None = None  # remote manifests only: a wheel target of the same repository
    source: str = ""


class RemoteConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[remote]``: the signed manifest source (SPEC §9)."""

    url: str  # http(s)://... (metadata at URL/metadata/, targets at URL/targets/) or a local dir
    root: str  # the trust anchor: initial root metadata installed on the host
    targets: tuple[str, ...] = ("fleet.toml",)  # manifest targets, merged in order (later wins)
    refresh: float = 300.0  # ±10 % jitter
    refresh_max: float = 900.0  # exponential backoff on failure stops here
    allow_factories: tuple[str, ...] = ("oneiric.builtin.",)  # prefixes a manifest may name
    max_bytes: int = 4 * 1024 * 1024  # per target (manifest or artifact)


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[metrics]`` (SPEC §11): where to write the node_exporter textfile, if anywhere."""

    textfile: str | None = None


class Config(msgspec.Struct, kw_only=True, frozen=True):
    """The merged, validated configuration of one main file and its drop-ins."""

    path: str
    daemon: DaemonConfig
    components: tuple[ComponentConfig, ...]
    selections: dict[str, dict[str, str]]
    remote: RemoteConfig | None
    # [requires.<domain>] key = ["cap", ...]: capabilities every provider of the key must have
    requires: dict[str, dict[str, tuple[str, ...]]] = {}
    metrics: MetricsConfig = MetricsConfig()
    include: tuple[str, ...]
    files: tuple[str, ...]
    #: what is valid but suspicious (a selection expected from the remote manifest); the
    #: daemon logs them on every load and ``oneiricctl reload`` prints them
    warnings: tuple[str, ...] = ()
    #: hash of the bytes this config was parsed from (each file's path and content, in merge
    #: order): a reload whose files hash the same skips the parse (see :func:`files_digest`)
    digest: str = ""


def _describe(comp: ComponentConfig) -> str:
    """How messages name a component, shared by load errors and ``check_factories``."""
    return f"({comp.domain}/{comp.key} provider {comp.provider})"
