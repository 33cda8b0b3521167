"""Configuration loader: TOML files -> validated, frozen msgspec Structs (SPEC §3, §5).

Pure: it reads files and imports nothing of the runtime (stdlib and msgspec only). Every
mistake becomes one ``ConfigError`` naming the file, the field path (``component[2].priority``,
where the index is the entry's position within *that* file) and what was expected, because an
operator fixing a broken reload needs the exact spot, not a traceback. The first error wins: a
config is either entirely valid or not applied at all.

The package is split by responsibility; import from ``oneiric.config`` itself, the submodules
are an implementation detail:

- ``schema``: the frozen Structs (``Config``, ``DaemonConfig``, ...) and their defaults;
- ``parse_duration`` (from ``oneiric._durations``, the one duration grammar, which
  oneiricctl imports without this package), shared with providers parsing their settings;
- ``fields``: generic field checks and msgspec error translation to ``ConfigError``;
- ``sections``: per-key ``[daemon]``/``[remote]`` rules and ``[[component]]`` validation;
- ``workflows``: the workflow ``nodes`` DAG check;
- ``loader``: reading, drop-in discovery and merging (``load_config``, ``parse_config_text``);
- ``paths``: ``default_paths``/``ResolvedPaths`` and the watcher's ``watch_paths``;
- ``factories``: importing factories (``resolve_factory``, ``check_factories``, and the
  pieces the runtime's off-loop import uses).
"""

from __future__ import annotations

from oneiric._durations import parse_duration
from oneiric.config.factories import (
    check_factories,
    factory_of,
    import_factory_module,
    resolve_factory,
    split_factory,
)
from oneiric.config.loader import Preread, files_digest, load_config, parse_config_text
from oneiric.config.paths import (
    DEFAULT_CONFIG,
    DEFAULT_RUNTIME_DIR,
    DEFAULT_STATE_DIR,
    ResolvedPaths,
    default_paths,
    watch_paths,
)
from oneiric.config.schema import (
    DEFAULT_INCLUDE,
    LOG_LEVELS,
    ComponentConfig,
    Config,
    DaemonConfig,
    RemoteConfig,
)

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_INCLUDE",
    "DEFAULT_RUNTIME_DIR",
    "DEFAULT_STATE_DIR",
    "LOG_LEVELS",
    "ComponentConfig",
    "Config",
    "DaemonConfig",
    "Preread",
    "RemoteConfig",
    "ResolvedPaths",
    "check_factories",
    "default_paths",
    "factory_of",
    "files_digest",
    "import_factory_module",
    "load_config",
    "parse_config_text",
    "parse_duration",
    "resolve_factory",
    "split_factory",
    "watch_paths",
]
