"""Validation of one ``[daemon]`` key, one ``[remote]`` key or one ``[[component]]`` entry.

The loader feeds raw TOML values through these one at a time, so each failure names the exact
key; the rules that msgspec types cannot express (durations, octal modes, paths relative to
the main file, which fields belong to which domain) are spelled out here.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from oneiric._const import DOMAINS, MAX_NAME, NAME_PATTERN
from oneiric.config.fields import _check_keys, _convert, _duration, _local_path, _table, _tname
from oneiric.config.schema import (
    LOG_LEVELS,
    ComponentConfig,
    DaemonConfig,
    MetricsConfig,
    RemoteConfig,
    Retry,
)
from oneiric.errors import ConfigError

_MAIN_KEYS = ("include", "daemon", "component", "selections", "remote", "requires", "metrics")
_DROPIN_KEYS = _MAIN_KEYS[1:]
_DAEMON_FIELDS = {f.name: f.type for f in msgspec.structs.fields(DaemonConfig)}
_REMOTE_FIELDS = {f.name: f.type for f in msgspec.structs.fields(RemoteConfig)}
_METRICS_FIELDS = {f.name: f.type for f in msgspec.structs.fields(MetricsConfig)}
_COMPONENT_KEYS = tuple(f.name for f in msgspec.structs.fields(ComponentConfig))[:-1]  # no source
_DURATIONS = frozenset(
    ("drain_timeout", "stop_timeout", "activation_timeout", "health_interval", "idle_timeout")
)
_MAY_BE_ZERO = {"drain_timeout", "stop_timeout"}  # "do not wait" is a legitimate choice
_NAME = re.compile(NAME_PATTERN)
_IDENT = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_FACTORY = re.compile(rf"{_IDENT}:{_IDENT}")
_MODE = re.compile(r"(?:0o?)?[0-7]{1,4}")
# Fields that mean something only for some domains; setting them elsewhere is a mistake.
_ONLY_FOR = {
    "every": ("task",),
    "topics": ("event",),
    "queue_size": ("event",),
    "concurrency": ("task", "event", "workflow"),
    "filters": ("event",),
    "fanout": ("event",),
    "retry": ("event",),
}
FANOUTS = ("broadcast", "exclusive")
_RETRY_KEYS = tuple(f.name for f in msgspec.structs.fields(Retry))
_FILTER_VALUE = (str, int, float, bool)


def retry_value(raw: Any, *, file: str, path: str) -> Retry:
    """``retry = { attempts = 3, backoff = "1s", max_backoff = "1m" }`` (events and workflow
    nodes share it): attempts >= 1, backoff a duration (0 = retry at once)."""
    table = _table(raw, file=file, path=path)
    _check_keys(table, _RETRY_KEYS, file=file, where=path)
    data = dict(table)
    if "backoff" in data:
        data["backoff"] = _duration(
            data["backoff"], file=file, path=f"{path}.backoff", positive=False
        )
    if "max_backoff" in data:
        data["max_backoff"] = _duration(
            data["max_backoff"], file=file, path=f"{path}.max_backoff", positive=True
        )
    retry = _convert(data, Retry, file=file, path=path)
    if retry.attempts < 1:
        raise ConfigError(
            f"expected an integer >= 1 (1 = no retry), got {retry.attempts}",
            file=file,
            path=f"{path}.attempts",
        )
    return retry


def capability_names(raw: Any, *, file: str, path: str) -> tuple[str, ...]:
    """A list of capability names (letters, digits, '_', '.', '-'), duplicates refused."""
    names = _convert(raw, tuple[str, ...], file=file, path=path)
    for i, name in enumerate(names):
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"expected a capability name of letters, digits, '_', '.' or '-', got {name!r}",
                file=file,
                path=f"{path}[{i}]",
            )
        if name in names[:i]:
            raise ConfigError(
                f"capability {name!r} is listed twice", file=file, path=f"{path}[{i}]"
            )
    return names


def _filters(raw: Any, *, file: str, path: str) -> dict[str, Any]:
    """``filters = { kind = "signup", "user.tier" = "gold" }``: field (dotted = nested) to the
    value it must equal; values are strings, numbers or booleans."""
    table = _table(raw, file=file, path=path)
    for field, value in table.items():
        if not field or any(not part for part in field.split(".")):
            raise ConfigError(
                f"expected a field name like kind or user.tier, got {field!r}",
                file=file,
                path=path,
            )
        if not isinstance(value, _FILTER_VALUE):
            raise ConfigError(
                f"expected a string, number or boolean to compare with, got {_tname(value)}",
                file=file,
                path=f"{path}.{field}",
            )
    return table


def _socket_mode(value: Any, *, file: str, path: str) -> int:
    """``"0660"``/``"0o660"``/``"660"`` are octal; a TOML integer is taken as is (write 0o660)."""
    if isinstance(value, str) and _MODE.fullmatch(value.strip()):
        mode = int(value.strip(), 8)
    elif isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ConfigError(
            f'expected an octal file mode like "0660" (0000 to 0777), got {value!r}',
            file=file,
            path=path,
        )
    return mode


def _daemon_value(name: str, value: Any, *, file: str, base: str) -> Any:
    where = f"daemon.{name}"
    if name in _DURATIONS:
        return _duration(value, file=file, path=where, positive=name not in _MAY_BE_ZERO)
    if name == "socket_mode":
        return _socket_mode(value, file=file, path=where)
    result = _convert(value, _DAEMON_FIELDS[name], file=file, path=where)
    if name == "log_level":
        if result.lower() not in LOG_LEVELS:
            raise ConfigError(
                f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}", file=file, path=where
            )
        return result.lower()
    if name in ("dead_letters", "workflow_history") and result < 1:
        raise ConfigError(f"expected an integer >= 1, got {result}", file=file, path=where)
    if name in ("socket", "health_file", "state_dir"):
        return _local_path(base, result, file=file, path=where)
    return result


_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2}
_SIZE_UNITS["gb"] = 1000**3
_URL = re.compile(r"(https?)://[^/\s?#]+(/[^\s?#]*)?")


def _size(value: Any, *, file: str, path: str) -> int:
    """``"4MiB"``, ``"512KiB"``, ``"1000000"`` or a TOML integer: a positive byte count."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
        size = int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
    else:
        size = -1
    if size <= 0:
        raise ConfigError(
            f'expected a positive size like "4MiB", "512KiB" or a byte count, got {value!r}',
            file=file,
            path=path,
        )
    return size


def _remote_value(name: str, value: Any, *, file: str, base: str) -> Any:
    where = f"remote.{name}"
    if name in ("refresh", "refresh_max"):
        return _duration(value, file=file, path=where, positive=True)
    if name == "max_bytes":
        return _size(value, file=file, path=where)
    result = _convert(value, _REMOTE_FIELDS[name], file=file, path=where)
    if name == "root":
        return _local_path(base, result, file=file, path=where)
    if name == "url":
        if result.startswith("file://"):
            result = result[len("file://") :]
        elif "://" in result:
            if not _URL.fullmatch(result):
                raise ConfigError(
                    "expected an http:// or https:// URL with a host (or a local directory), "
                    f"got {result!r}",
                    file=file,
                    path=where,
                )
            return result if result.endswith("/") else result + "/"
        return _local_path(base, result, file=file, path=where)
    if name == "targets":
        if not result:
            raise ConfigError("expected at least one manifest target", file=file, path=where)
        for target in result:
            parts = target.split("/")
            if not target or target.startswith("/") or ".." in parts or "" in parts:
                raise ConfigError(
                    f'expected target paths like "fleet.toml" or "groups/web.toml", got {target!r}',
                    file=file,
                    path=where,
                )
    if name == "allow_factories" and any(not p for p in result):
        raise ConfigError(
            'expected non-empty module prefixes like "myco.components."', file=file, path=where
        )
    return result


def _metrics_value(name: str, value: Any, *, file: str, base: str) -> Any:
    where = f"metrics.{name}"
    result = _convert(value, _METRICS_FIELDS[name], file=file, path=where)
    if name == "textfile":
        if not result.endswith(".prom"):
            raise ConfigError(
                "node_exporter's textfile collector reads only *.prom files; "
                f"expected a path ending in .prom, got {value!r}",
                file=file,
                path=where,
            )
        return _local_path(base, result, file=file, path=where)
    return result


def _component(raw: Any, *, file: str, where: str) -> ComponentConfig:
    table = _table(raw, file=file, path=where)
    _check_keys(table, _COMPONENT_KEYS, file=file, where=where)
    data = dict(table, source=file)
    if "every" in data:
        data["every"] = _duration(data["every"], file=file, path=f"{where}.every", positive=True)
    if "retry" in data:
        data["retry"] = retry_value(data["retry"], file=file, path=f"{where}.retry")
    if "capabilities" in data:
        data["capabilities"] = capability_names(
            data["capabilities"], file=file, path=f"{where}.capabilities"
        )
    if "filters" in data:
        data["filters"] = _filters(data["filters"], file=file, path=f"{where}.filters")
    comp = _convert(data, ComponentConfig, file=file, path=where)

    def fail(field: str, message: str) -> ConfigError:
        return ConfigError(message, file=file, path=f"{where}.{field}")

    if comp.domain not in DOMAINS:
        raise fail(
            "domain", f"unknown domain {comp.domain!r}; expected one of {', '.join(DOMAINS)}"
        )
    for field in ("key", "provider"):
        if not _NAME.fullmatch(getattr(comp, field)):
            raise fail(field, f"expected letters, digits, '_', '.' or '-', got {table[field]!r}")
        if len(getattr(comp, field)) > MAX_NAME:  # the control protocol could not name it
            raise fail(field, f"at most {MAX_NAME} characters, got {len(table[field])}")
    if not _FACTORY.fullmatch(comp.factory):
        raise fail(
            "factory", f'expected an import path "package.module:attr", got {comp.factory!r}'
        )
    for field, domains in _ONLY_FOR.items():
        if field in table and comp.domain not in domains:
            only = " or ".join(domains)
            raise fail(field, f"only valid for {only} components, not {comp.domain}")
    if comp.concurrency is not None and comp.concurrency < 1:
        raise fail("concurrency", f"expected an integer >= 1, got {comp.concurrency}")
    if comp.queue_size < 1:
        raise fail("queue_size", f"expected an integer >= 1, got {comp.queue_size}")
    if comp.fanout not in FANOUTS:
        raise fail("fanout", f'expected "broadcast" or "exclusive", got {comp.fanout!r}')
    for i, topic in enumerate(comp.topics):
        if not topic:
            raise fail(f"topics[{i}]", "expected a non-empty topic pattern")
    return comp
