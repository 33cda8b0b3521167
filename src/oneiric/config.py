"""Configuration loader: TOML files -> validated, frozen msgspec Structs (SPEC §3, §5).

Pure: it reads files and imports nothing of the runtime. Every mistake becomes one
``ConfigError`` naming the file, the field path (``component[2].priority``, where the index is
the entry's position within *that* file) and what was expected, because an operator fixing a
broken reload needs the exact spot, not a traceback. The first error wins: a config is either
entirely valid or not applied at all.

Merge rules: the main file, then the drop-ins matched by its ``include`` globs in lexical path
order. ``[[component]]`` lists concatenate (each entry remembers its file in ``source``);
``[daemon]``, ``[remote]`` and ``[selections.*]`` merge key by key, later files win. Relative
paths in ``[daemon]``/``[remote]`` are resolved against the main file's directory (the daemon's
working directory is ``/`` under systemd, so cwd-relative paths would be a trap).
"""

from __future__ import annotations

import glob
import importlib
import logging
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

import msgspec

from oneiric._const import DOMAINS
from oneiric.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CONFIG = "/etc/oneiric/oneiricd.toml"
DEFAULT_RUNTIME_DIR = "/run/oneiric"
DEFAULT_STATE_DIR = "/var/lib/oneiric"
DEFAULT_INCLUDE: tuple[str, ...] = ("conf.d/*.toml",)
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")

# --------------------------------------------------------------------------- durations

_NUM = r"(\d+(?:\.\d+)?|\.\d+)"
_BARE = re.compile(_NUM)
# Units at most once each, largest first: "1h30m", "1.5s", "250ms"; "m(?!s)" keeps "ms" whole.
_COMPOUND = re.compile(rf"(?:{_NUM}d)?(?:{_NUM}h)?(?:{_NUM}m(?!s))?(?:{_NUM}s)?(?:{_NUM}ms)?")
_UNITS = (86400.0, 3600.0, 60.0, 1.0, 0.001)
_EXPECTED_DURATION = 'expected a duration like "30s", "5m" or "250ms"'


def parse_duration(value: str | int | float, *, what: str = "duration") -> float:
    """Seconds from ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1.5s"`` or a bare number.

    Raises ``ValueError`` saying what is expected for negative, non-finite or garbled input,
    so a config typo never turns into a zero or infinite timeout."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"invalid {what} {value!r}: {_EXPECTED_DURATION}")  # noqa: TRY004 -- one error type for callers
    if isinstance(value, str):
        text = value.strip()
        if _BARE.fullmatch(text):
            return float(text)
        match = _COMPOUND.fullmatch(text)
        if not text or match is None:
            hint = "must not be negative" if text.startswith("-") else _EXPECTED_DURATION
            raise ValueError(f"invalid {what} {value!r}: {hint}")
        return sum(float(n) * unit for n, unit in zip(match.groups(), _UNITS, strict=True) if n)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"invalid {what} {value!r}: must be a finite, non-negative number")
    return float(value)


# --------------------------------------------------------------------------- structs


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


class ResolvedPaths(msgspec.Struct, frozen=True):
    """Absolute paths after flags, ``[daemon]`` keys, environment and defaults (SPEC §5)."""

    config: str
    socket: str
    health_file: str
    state_dir: str


# --------------------------------------------------------------------------- error helpers

_AT = re.compile(r"(?P<msg>.*?)(?: - at `\$(?P<sub>[^`]*)`)?", re.DOTALL)


def _join(path: str, sub: str) -> str:
    if not path:
        return sub.lstrip(".")
    return path + (sub if sub[:1] in ("", ".", "[") else "." + sub)


def _tname(value: object) -> str:
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _translate(exc: msgspec.ValidationError, *, file: str, path: str) -> ConfigError:
    """msgspec's ``Expected `int`, got `str` - at `$.priority``` -> our wording and path."""
    match = _AT.fullmatch(str(exc))
    assert match is not None  # the pattern matches any string
    msg = re.sub(
        r"Object missing required field `([^`]*)`", r"missing required key '\1'", match["msg"]
    )
    msg = msg.replace(" | null", "").replace("`object`", "table").replace("`", "")
    return ConfigError(msg[:1].lower() + msg[1:], file=file, path=_join(path, match["sub"] or ""))


def _convert(value: Any, typ: type[T], *, file: str, path: str) -> T:
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        raise _translate(exc, file=file, path=path) from None


def _check_keys(
    table: Mapping[str, Any], allowed: tuple[str, ...], *, file: str, where: str
) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {key!r}; allowed keys: {', '.join(allowed)}",
                file=file,
                path=_join(where, key),
            )


def _table(value: Any, *, file: str, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table, got {_tname(value)}", file=file, path=path)
    return value


def _duration(value: Any, *, file: str, path: str, positive: bool) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(str(exc), file=file, path=path) from None
    if positive and seconds <= 0:
        raise ConfigError(f"must be greater than zero, got {value!r}", file=file, path=path)
    return seconds


def _local_path(base: str, value: str, *, file: str, path: str) -> str:
    if not value:
        raise ConfigError("expected a non-empty path", file=file, path=path)
    return os.path.normpath(os.path.join(base, value))


# --------------------------------------------------------------------------- sections

_MAIN_KEYS = ("include", "daemon", "component", "selections", "remote")
_DROPIN_KEYS = _MAIN_KEYS[1:]
_DAEMON_FIELDS = {f.name: f.type for f in msgspec.structs.fields(DaemonConfig)}
_REMOTE_FIELDS = {f.name: f.type for f in msgspec.structs.fields(RemoteConfig)}
_COMPONENT_KEYS = tuple(f.name for f in msgspec.structs.fields(ComponentConfig))[:-1]  # no source
_NODE_KEYS = ("id", "task", "after", "payload")
_DURATIONS = frozenset(
    ("drain_timeout", "stop_timeout", "activation_timeout", "health_interval", "idle_timeout")
)
_MAY_BE_ZERO = {"drain_timeout", "stop_timeout"}  # "do not wait" is a legitimate choice
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_IDENT = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_FACTORY = re.compile(rf"{_IDENT}:{_IDENT}")
_MODE = re.compile(r"(?:0o?)?[0-7]{1,4}")
# Fields that mean something only for some domains; setting them elsewhere is a mistake.
_ONLY_FOR = {
    "every": ("task",),
    "topics": ("event",),
    "queue_size": ("event",),
    "concurrency": ("task", "event", "workflow"),
}


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
    if name in ("socket", "health_file", "state_dir"):
        return _local_path(base, result, file=file, path=where)
    return result


def _remote_value(name: str, value: Any, *, file: str, base: str) -> Any:
    where = f"remote.{name}"
    if name == "refresh":
        return _duration(value, file=file, path=where, positive=True)
    result = _convert(value, _REMOTE_FIELDS[name], file=file, path=where)
    if name == "threshold" and result < 1:
        raise ConfigError(f"expected an integer >= 1, got {result}", file=file, path=where)
    if name == "trusted_keys":
        return _local_path(base, result, file=file, path=where)
    if name == "url" and "://" not in result and not result.startswith("file:"):
        return _local_path(base, result, file=file, path=where)
    return result


def _component(raw: Any, *, file: str, where: str) -> ComponentConfig:
    table = _table(raw, file=file, path=where)
    _check_keys(table, _COMPONENT_KEYS, file=file, where=where)
    data = dict(table, source=file)
    if "every" in data:
        data["every"] = _duration(data["every"], file=file, path=f"{where}.every", positive=True)
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
    for i, topic in enumerate(comp.topics):
        if not topic:
            raise fail(f"topics[{i}]", "expected a non-empty topic pattern")
    return comp


class _Merge:
    """Accumulates the files of one config in merge order."""

    def __init__(self, main: str) -> None:
        self.main = main
        self.base = os.path.dirname(main)
        self.include = DEFAULT_INCLUDE
        self.daemon: dict[str, Any] = {}
        self.remote: dict[str, Any] = {}
        self.remote_file: str | None = None
        self.selections: dict[str, dict[str, str]] = {}
        self.components: list[ComponentConfig] = []
        self.where: list[str] = []  # component[N] within its own file, parallel to components
        self.files: list[str] = []

    def add(self, doc: dict[str, Any], *, file: str) -> None:
        is_main = not self.files
        self.files.append(file)
        if not is_main and "include" in doc:
            raise ConfigError(
                "'include' is only allowed in the main config file", file=file, path="include"
            )
        _check_keys(doc, _MAIN_KEYS if is_main else _DROPIN_KEYS, file=file, where="")
        if "include" in doc:
            self.include = _convert(doc["include"], tuple[str, ...], file=file, path="include")
        daemon = _table(doc.get("daemon", {}), file=file, path="daemon")
        _check_keys(daemon, tuple(_DAEMON_FIELDS), file=file, where="daemon")
        for name, value in daemon.items():
            self.daemon[name] = _daemon_value(name, value, file=file, base=self.base)
        if "remote" in doc:
            self.remote_file = self.remote_file or file
            remote = _table(doc["remote"], file=file, path="remote")
            _check_keys(remote, tuple(_REMOTE_FIELDS), file=file, where="remote")
            for name, value in remote.items():
                self.remote[name] = _remote_value(name, value, file=file, base=self.base)
        self._add_selections(doc.get("selections", {}), file=file)
        self._add_components(doc.get("component", []), file=file)

    def _add_selections(self, raw: Any, *, file: str) -> None:
        for domain, table in _table(raw, file=file, path="selections").items():
            where = f"selections.{domain}"
            if domain not in DOMAINS:
                raise ConfigError(
                    f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}",
                    file=file,
                    path=where,
                )
            for key, provider in _table(table, file=file, path=where).items():
                if not _NAME.fullmatch(key):
                    raise ConfigError(
                        f"expected a key of letters, digits, '_', '.' or '-', got {key!r}",
                        file=file,
                        path=where,
                    )
                if not isinstance(provider, str) or not _NAME.fullmatch(provider):
                    raise ConfigError(
                        f"expected a provider name, got {provider!r}",
                        file=file,
                        path=f"{where}.{key}",
                    )
                self.selections.setdefault(domain, {})[key] = provider

    def _add_components(self, raw: Any, *, file: str) -> None:
        if not isinstance(raw, list):
            raise ConfigError(
                f"expected an array of tables ([[component]]), got {_tname(raw)}",
                file=file,
                path="component",
            )
        seen: dict[tuple[str, str, str], int] = {}
        for index, entry in enumerate(raw):
            where = f"component[{index}]"
            comp = _component(entry, file=file, where=where)
            ident = (comp.domain, comp.key, comp.provider)
            if ident in seen:
                raise ConfigError(
                    f"duplicate component {_describe(comp)}; "
                    f"first defined at component[{seen[ident]}]",
                    file=file,
                    path=where,
                )
            seen[ident] = index
            self.components.append(comp)
            self.where.append(where)

    def result(self) -> Config:
        remote = None
        if self.remote_file is not None:
            if "url" not in self.remote:
                raise ConfigError(
                    "missing required key 'url'", file=self.remote_file, path="remote"
                )
            remote = RemoteConfig(**self.remote)
        tasks = {c.key for c in self.components if c.domain == "task"}
        for comp, where in zip(self.components, self.where, strict=True):
            if comp.domain == "workflow" and "nodes" in comp.settings:
                _check_nodes(comp.settings["nodes"], tasks, file=comp.source, where=where)
        config = Config(
            path=self.main,
            daemon=DaemonConfig(**self.daemon),
            components=tuple(self.components),
            selections=self.selections,
            remote=remote,
            include=self.include,
            files=tuple(self.files),
        )
        log.debug(
            "config %s: %d file(s), %d component(s)",
            self.main,
            len(self.files),
            len(self.components),
        )
        return config


# --------------------------------------------------------------------------- workflows


def _check_nodes(raw: Any, tasks: set[str], *, file: str, where: str) -> None:
    """A workflow's ``nodes`` must form a DAG of existing task keys (SPEC §2)."""
    where = f"{where}.settings.nodes"
    if not isinstance(raw, list):
        raise ConfigError(
            f"expected an array of node tables, got {_tname(raw)}", file=file, path=where
        )
    index: dict[str, int] = {}
    graph: dict[str, list[str]] = {}
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        node = _table(entry, file=file, path=at)
        _check_keys(node, _NODE_KEYS, file=file, where=at)
        for field in ("id", "task"):
            if field not in node:
                raise ConfigError(f"missing required key {field!r}", file=file, path=at)
            if not isinstance(node[field], str) or not node[field]:
                raise ConfigError(
                    f"expected a non-empty string, got {node[field]!r}",
                    file=file,
                    path=f"{at}.{field}",
                )
        node_id, task = node["id"], node["task"]
        if node_id in index:
            raise ConfigError(
                f"duplicate node id {node_id!r}; first used at nodes[{index[node_id]}]",
                file=file,
                path=f"{at}.id",
            )
        if task not in tasks:
            known = ", ".join(sorted(tasks)) or "none"
            raise ConfigError(
                f"node {node_id!r}: no task component has key {task!r} (task keys: {known})",
                file=file,
                path=f"{at}.task",
            )
        index[node_id] = i
        graph[node_id] = list(
            _convert(node.get("after", []), tuple[str, ...], file=file, path=f"{at}.after")
        )
    for node_id, after in graph.items():
        for k, dep in enumerate(after):
            if dep not in index:
                raise ConfigError(
                    f"node {node_id!r}: 'after' names unknown node id {dep!r} "
                    f"(node ids: {', '.join(index)})",
                    file=file,
                    path=f"{where}[{index[node_id]}].after[{k}]",
                )
    ring = _find_cycle(graph)
    if ring is not None:
        order = [index[n] for n in ring]
        first = order.index(min(order))  # report the cycle from its earliest-declared node
        ring = ring[first:] + ring[:first]
        raise ConfigError(
            f"nodes {', '.join(map(repr, ring))} form a cycle: "
            f"{' -> '.join([*ring, ring[0]])} (each waits for the next)",
            file=file,
            path=f"{where}[{index[ring[0]]}].after",
        )


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """The nodes of one cycle along the "waits for" edges, in order, or None. Iterative, so a
    long chain cannot hit the recursion limit."""
    done: set[str] = set()
    for root, root_deps in graph.items():
        if root in done:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(root_deps))]
        on_stack = {root}
        while stack:
            node, deps = stack[-1]
            for dep in deps:
                if dep in on_stack:
                    path = [n for n, _ in stack]
                    return path[path.index(dep) :]
                if dep not in done:
                    on_stack.add(dep)
                    stack.append((dep, iter(graph[dep])))
                    break
            else:
                done.add(node)
                on_stack.discard(node)
                stack.pop()
    return None


# --------------------------------------------------------------------------- loading


def _parse(text: str, *, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=file) from None


def _read(file: str) -> dict[str, Any]:
    try:
        with open(file, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ConfigError("config file does not exist", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", file=file) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not valid UTF-8 (byte {exc.start})", file=file) from None
    return _parse(text, file=file)


def _dropins(base: str, include: tuple[str, ...], main: str) -> list[str]:
    """Regular files matched by the include globs, de-duplicated, in lexical path order."""
    found: set[str] = set()
    for pattern in include:
        for match in glob.glob(os.path.join(base, pattern)):
            path = os.path.abspath(match)
            if path != main and os.path.isfile(path):
                found.add(path)
    return sorted(found)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load the main file and its drop-ins; raises ``ConfigError`` on the first mistake."""
    main = os.path.abspath(os.fspath(path))
    merge = _Merge(main)
    merge.add(_read(main), file=main)
    for dropin in _dropins(merge.base, merge.include, main):
        merge.add(_read(dropin), file=dropin)
    return merge.result()


def parse_config_text(text: str, *, path: str) -> Config:
    """Validate one file's text as if it lived at ``path``; drop-ins are not read."""
    main = os.path.abspath(path)
    merge = _Merge(main)
    merge.add(_parse(text, file=main), file=main)
    return merge.result()


# --------------------------------------------------------------------------- helpers for others

_MAGIC = re.compile(r"[*?[]")


def _glob_root(pattern: str) -> str:
    """The deepest directory of an absolute glob that contains no wildcard."""
    parts = pattern.split(os.sep)
    for i, part in enumerate(parts):
        if _MAGIC.search(part):
            return os.sep.join(parts[:i]) or os.sep
    return os.path.dirname(pattern)


def _include_of(main: str) -> tuple[str, ...]:
    """Best effort for a main file that does not load: its ``include`` if readable."""
    try:
        with open(main, "rb") as fh:
            include = tomllib.load(fh).get("include", DEFAULT_INCLUDE)
    except (OSError, ValueError):  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        return DEFAULT_INCLUDE
    if isinstance(include, list) and all(isinstance(p, str) for p in include):
        return tuple(include)
    return DEFAULT_INCLUDE


def watch_paths(config: Config | None, path: str) -> list[str]:
    """Directories a config watcher must watch (not the files: a rename-save replaces the
    inode, so only a directory watch sees it): the main file's directory and each include
    glob's directory. A glob directory that does not exist yet is listed together with its
    nearest existing ancestor, so its creation is seen; callers pass only the existing entries
    to the watcher (watchfiles rejects missing paths) and match events against all of them.
    ``config`` may be None when the main file does not load; its ``include`` is then read best
    effort."""
    main = os.path.abspath(path)
    base = os.path.dirname(main)
    include = config.include if config is not None else _include_of(main)
    out = [base]
    for pattern in include:
        directory = _glob_root(os.path.normpath(os.path.join(base, pattern)))
        out.append(directory)
        while not os.path.isdir(directory):
            directory = os.path.dirname(directory)
        out.append(directory)
    return list(dict.fromkeys(out))


def resolve_factory(spec: str) -> Callable[..., Any]:
    """Import ``package.module:attr`` (attr may be dotted) and return the callable.

    Raises ValueError (malformed spec), ImportError, AttributeError, TypeError (not callable),
    or whatever the module raises while importing."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f'expected "package.module:attr", got {spec!r}')
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{spec!r} is a {type(obj).__name__}, not a class or callable")
    return cast(Callable[..., Any], obj)


def _describe(comp: ComponentConfig) -> str:
    return f"({comp.domain}/{comp.key} provider {comp.provider})"


def check_factories(config: Config) -> list[str]:
    """Try importing every factory (for ``oneiricd --check``); one message per failure, as
    ``<file>: component[N] (domain/key provider P): cannot import 'x.y:Z': <reason>``."""
    errors: list[str] = []
    per_file: dict[str, int] = {}
    for comp in config.components:
        index = per_file.get(comp.source, 0)
        per_file[comp.source] = index + 1
        try:
            resolve_factory(comp.factory)
        except Exception as exc:  # any import-time failure is a finding, not a crash
            hint = ""
            if isinstance(exc, ModuleNotFoundError):
                hint = " (is the package installed, or its directory on PYTHONPATH?)"
            errors.append(
                f"{comp.source}: component[{index}] {_describe(comp)}: "
                f"cannot import {comp.factory!r}: {type(exc).__name__}: {exc}{hint}"
            )
    return errors


def _first_dir(value: str | None) -> str | None:
    """systemd may list several directories, ':'-separated; the first is ours."""
    return next((d for d in (value or "").split(":") if d), None)


def default_paths(
    *,
    config: str | None,
    socket: str | None,
    state_dir: str | None,
    health_file: str | None,
    daemon: DaemonConfig | None,
    environ: Mapping[str, str],
) -> ResolvedPaths:
    """SPEC §5 precedence: flag, then ``[daemon]`` key, then systemd's ``$RUNTIME_DIRECTORY``
    / ``$STATE_DIRECTORY``, then the FHS defaults. The config path itself: flag, then
    ``$ONEIRIC_CONFIG``, then ``/etc/oneiric/oneiricd.toml``. The health file defaults to the
    socket's directory (``$RUNTIME_DIRECTORY`` unless the socket was moved), which is where
    ``oneiricctl`` looks for it."""
    d = daemon if daemon is not None else DaemonConfig()
    runtime = _first_dir(environ.get("RUNTIME_DIRECTORY")) or DEFAULT_RUNTIME_DIR
    state = _first_dir(environ.get("STATE_DIRECTORY")) or DEFAULT_STATE_DIR
    sock = os.path.abspath(socket or d.socket or os.path.join(runtime, "oneiricd.sock"))
    return ResolvedPaths(
        config=os.path.abspath(config or environ.get("ONEIRIC_CONFIG") or DEFAULT_CONFIG),
        socket=sock,
        # beside the socket unless set: where oneiricctl looks for it when the daemon is down
        health_file=os.path.abspath(
            health_file or d.health_file or os.path.join(os.path.dirname(sock), "health.json")
        ),
        state_dir=os.path.abspath(state_dir or d.state_dir or state),
    )
