"""Entry-point plugins: providers registered by installed distributions (SPEC §10).

A distribution declares, in its packaging metadata::

    [project.entry-points."oneiric.components"]
    redis = "myco.cache:RedisCache"

The entry point's name is the provider, its value the factory, and the factory object says
where it serves through attributes: ``oneiric_domain`` and ``oneiric_key`` (required), and
optionally ``oneiric_priority``, ``oneiric_capabilities``, ``oneiric_settings`` -- or any other
``[[component]]`` field as ``oneiric_<field>`` (``oneiric_topics``, ``oneiric_every``,
``oneiric_retry``, ...). Those values go through the very validation a config entry gets, so a
plugin's mistake reads like a config mistake. The candidate's source is
``entry_point:<distribution>``.

Discovery imports plugin code (the attributes live on the factory), so it runs in a worker
thread at start-up and on every reload. A reload whose
``sys.path`` directories are unchanged (same paths, same modification times: installing or
removing a distribution changes its directory's) reuses the previous scan, so a config save
does not pay for re-reading every installed distribution's metadata. It never fails the
daemon: a plugin that cannot be imported or declares nonsense is logged, reported in status
(``plugins.errors``) and skipped; the other plugins and the config still load.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import metadata
from typing import Any

import msgspec

from oneiric.config.sections import _COMPONENT_KEYS, _component
from oneiric.errors import ConfigError
from oneiric.runtime.candidates import candidate_of
from oneiric.runtime.registry import Candidate

log = logging.getLogger(__name__)

GROUP = "oneiric.components"
SOURCE_PREFIX = "entry_point:"
_REQUIRED = ("oneiric_domain", "oneiric_key")
_NOT_DECLARABLE = frozenset({"domain", "key", "provider", "factory"})


class PluginScan(msgspec.Struct, kw_only=True):
    """What one scan of the entry-point group found."""

    candidates: list[Candidate] = []
    loaded: list[str] = []  # "<dist>:<provider>" of every plugin registered
    errors: list[str] = []  # one line per broken plugin (it was skipped)

    @property
    def sources(self) -> set[str]:
        return {c.source for c in self.candidates}


def _dist_name(ep: metadata.EntryPoint) -> str:
    dist = ep.dist
    return dist.name if dist is not None else "unknown-distribution"


def _candidate(ep: metadata.EntryPoint) -> Candidate:
    """Load one entry point into a validated candidate; raises with the reason."""
    dist = _dist_name(ep)
    source = f"{SOURCE_PREFIX}{dist}"
    where = f"entry point {ep.name!r} ({ep.value})"
    factory = ep.value.split("[", 1)[0].strip()  # "pkg.mod:Class [extra]" -> "pkg.mod:Class"
    obj = ep.load()
    missing = [attr for attr in _REQUIRED if not hasattr(obj, attr)]
    if missing:
        raise ConfigError(
            f"{factory} does not declare {' and '.join(missing)} (the domain and key it serves)",
            file=source,
            path=where,
        )
    raw: dict[str, Any] = {"provider": ep.name, "factory": factory}
    for field in _COMPONENT_KEYS:
        if field in _NOT_DECLARABLE - {"domain", "key"}:
            continue
        value = getattr(obj, f"oneiric_{field}", None)
        if value is not None:
            raw[field] = list(value) if isinstance(value, tuple | set | frozenset) else value
    comp = _component(raw, file=source, where=where)
    # one field-by-field copy for config, remote and plugin components alike
    return candidate_of(msgspec.structs.replace(comp, source=source))


#: The last scan and the sys.path state it was made under (one entry: the daemon scans one
#: group; tests with a changed sys.path get a fresh scan).
_last: dict[str, tuple[tuple[object, ...], PluginScan]] = {}


def _path_state(group: str) -> tuple[object, ...]:
    """What a scan depends on: the group, and each ``sys.path`` entry with its mtime."""
    state: list[object] = [group]
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            state.append((entry, None))
    return tuple(state)


def discover(group: str = GROUP) -> PluginScan:
    """Scan the installed distributions' ``group`` entry points (blocking: it imports); the
    previous result when no ``sys.path`` directory changed since."""
    state = _path_state(group)
    cached = _last.get(group)
    if cached is not None and cached[0] == state:
        return cached[1]
    scan = _scan(group)
    _last[group] = (state, scan)
    return scan


def _scan(group: str) -> PluginScan:
    scan = PluginScan()
    seen: set[tuple[str, str]] = set()
    for ep in sorted(metadata.entry_points(group=group), key=lambda e: (_dist_name(e), e.name)):
        dist = _dist_name(ep)
        ident = (dist, ep.name)
        if ident in seen:  # the same distribution found twice on sys.path: the first wins
            continue
        seen.add(ident)
        try:
            cand = _candidate(ep)
        except ConfigError as exc:
            scan.errors.append(f"plugin {ep.name!r} of {dist}: {exc.detail} ({exc.path})")
        except (Exception, SystemExit) as exc:  # a plugin must never stop the daemon
            text = str(exc)
            scan.errors.append(
                f"plugin {ep.name!r} of {dist}: cannot load {ep.value!r}: "
                f"{type(exc).__name__}{': ' + text if text else ''}"
            )
        else:
            scan.candidates.append(cand)
            scan.loaded.append(f"{dist}:{ep.name}")
    return scan


def log_scan(scan: PluginScan) -> None:
    """Log what a scan found (the daemon does; ``oneiricd --check`` prints instead)."""
    for error in scan.errors:
        log.error("%s; skipped", error)
    if scan.loaded:
        log.info("entry-point plugins: %s", ", ".join(scan.loaded))
