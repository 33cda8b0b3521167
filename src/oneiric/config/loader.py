"""Reading and merging config files into one ``Config`` (SPEC §3, §5).

Merge rules: the main file, then the drop-ins matched by its ``include`` globs in lexical path
order. ``[[component]]`` lists concatenate (each entry remembers its file in ``source``);
``[daemon]``, ``[remote]`` and ``[selections.*]`` merge key by key, later files win. Relative
paths in ``[daemon]``/``[remote]`` are resolved against the main file's directory (the daemon's
working directory is ``/`` under systemd, so cwd-relative paths would be a trap). Unreadable
files and invalid TOML become ``ConfigError`` naming the file, like every other mistake.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
import tomli as tomllib  # the stdlib's parser (same code, same errors), compiled: ~3× faster

from oneiric._const import DOMAINS
from oneiric.config.chunks import FileRead, file_chunks
from oneiric.config.fields import _check_keys, _convert, _table, _tname
from oneiric.config.schema import (
    DEFAULT_INCLUDE,
    ComponentConfig,
    Config,
    DaemonConfig,
    MetricsConfig,
    RemoteConfig,
    _describe,
)
from oneiric.config.sections import (
    _DAEMON_FIELDS,
    _DROPIN_KEYS,
    _MAIN_KEYS,
    _METRICS_FIELDS,
    _NAME,
    _REMOTE_FIELDS,
    _component,
    _daemon_value,
    _metrics_value,
    _remote_value,
    capability_names,
)
from oneiric.config.workflows import _check_nodes
from oneiric.errors import ConfigError

log = logging.getLogger(__name__)


class _Merge:
    """Accumulates the files of one config in merge order."""

    #: ``artifact`` names a wheel target of a TUF repository: remote manifests only (SPEC §9)
    allow_artifacts = False

    def __init__(self, main: str, providers: Iterable[tuple[str, str, str]] = ()) -> None:
        #: (domain, key, provider) offered from outside the files (entry-point plugins)
        self.providers = tuple(providers)
        self.main = main
        self.base = os.path.dirname(main)
        self.include = DEFAULT_INCLUDE
        self.daemon: dict[str, Any] = {}
        self.remote: dict[str, Any] = {}
        self.remote_file: str | None = None
        self.metrics: dict[str, Any] = {}
        self.selections: dict[str, dict[str, str]] = {}
        self.selection_files: dict[tuple[str, str], str] = {}
        self.requires: dict[str, dict[str, tuple[str, ...]]] = {}
        self.requires_files: dict[tuple[str, str], str] = {}
        self.components: list[ComponentConfig] = []
        #: (domain, key, provider) of every component: what a selection may name
        self.idents: set[tuple[str, str, str]] = set()
        self.tasks: set[str] = set()  # the task keys, which workflow nodes may name
        #: workflow entries with ``nodes`` and where they are (checked once every task is known)
        self.flows: list[tuple[ComponentConfig, str]] = []
        self._starts: list[int] = []  # where each file's entries begin in ``components``
        self.files: list[str] = []

    @property
    def where(self) -> list[str]:
        """``component[N]`` (N within its own file) of each entry, parallel to components."""
        ends = [*self._starts[1:], len(self.components)]
        return [
            f"component[{i}]" for a, b in zip(self._starts, ends, strict=True) for i in range(b - a)
        ]

    def add(self, doc: dict[str, Any], *, file: str) -> None:
        self._add_tables(doc, file=file)
        self._add_components(doc.get("component", []), file=file)

    def add_chunks(self, read: FileRead, *, file: str) -> None:
        """:meth:`add` for a file read in chunks (``config/chunks.py``): its tables but
        ``component``, and its entries already validated. A ConfigError here may differ from
        the reference path's (which reports the first mistake in file order): the caller
        loads again the reference way to report it."""
        self._add_tables(read.other, file=file)
        if read.has_artifact and not self.allow_artifacts:
            raise ConfigError("'artifact' is only valid in remote manifests", file=file)
        self._starts.append(len(self.components))
        self.components += read.entries
        self.idents |= read.idents
        self.tasks.update(read.tasks)
        self.flows += [(read.entries[n], f"component[{n}]") for n in read.flows]

    def _add_tables(self, doc: dict[str, Any], *, file: str) -> None:
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
        metrics = _table(doc.get("metrics", {}), file=file, path="metrics")
        _check_keys(metrics, tuple(_METRICS_FIELDS), file=file, where="metrics")
        for name, value in metrics.items():
            self.metrics[name] = _metrics_value(name, value, file=file, base=self.base)
        self._add_selections(doc.get("selections", {}), file=file)
        self._add_requires(doc.get("requires", {}), file=file)

    def _add_selections(self, raw: Any, *, file: str) -> None:
        for domain, key, provider, where in _domain_keys(raw, "selections", file=file):
            if not isinstance(provider, str) or not _NAME.fullmatch(provider):
                raise ConfigError(
                    f"expected a provider name, got {provider!r}",
                    file=file,
                    path=f"{where}.{key}",
                )
            self.selections.setdefault(domain, {})[key] = provider
            self.selection_files[domain, key] = file

    def _add_requires(self, raw: Any, *, file: str) -> None:
        """``[requires.<domain>] key = ["cap", ...]``: later files replace a key's list."""
        for domain, key, caps, where in _domain_keys(raw, "requires", file=file):
            names = capability_names(caps, file=file, path=f"{where}.{key}")
            self.requires.setdefault(domain, {})[key] = names
            self.requires_files[(domain, key)] = file

    def _check_requires(self) -> None:
        """A config selection that names a provider lacking a required capability is refused
        at load (and so on reload), naming the capability: it would otherwise be ignored at
        run time. Providers the config does not define (entry points) are checked when the
        daemon applies the config."""
        last: dict[tuple[str, str, str], ComponentConfig] | None = None
        for domain, keys in self.requires.items():
            for key, caps in keys.items():
                provider = self.selections.get(domain, {}).get(key)
                if provider is None or (domain, key, provider) not in self.idents:
                    continue
                if last is None:  # built once, and only when a selection is constrained
                    last = {(c.domain, c.key, c.provider): c for c in self.components}
                named = [last[domain, key, provider]]
                lacking = [cap for cap in caps if cap not in named[-1].capabilities]
                if lacking:
                    raise ConfigError(
                        f"selects provider {provider!r}, which lacks capabilit"
                        f"{'y' if len(lacking) == 1 else 'ies'} {', '.join(map(repr, lacking))} "
                        f"required by [requires.{domain}] {key} "
                        f"(declared in {self.requires_files[(domain, key)]}); "
                        f"{provider!r} declares {list(named[-1].capabilities)}",
                        file=self.selection_files[(domain, key)],
                        path=f"selections.{domain}.{key}",
                    )

    def _add_components(self, raw: Any, *, file: str) -> None:
        if not isinstance(raw, list):
            raise ConfigError(
                f"expected an array of tables ([[component]]), got {_tname(raw)}",
                file=file,
                path="component",
            )
        seen: dict[tuple[str, str, str], int] = {}
        self._starts.append(len(self.components))
        for index, entry in enumerate(raw):
            where = f"component[{index}]"
            comp = _component(entry, file=file, where=where)
            if comp.artifact is not None and not self.allow_artifacts:
                raise ConfigError(
                    "'artifact' is only valid in remote manifests (a wheel published as a "
                    "target of the same TUF repository); install the package locally instead",
                    file=file,
                    path=f"{where}.artifact",
                )
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
            self.idents.add(ident)
            if comp.domain == "task":
                self.tasks.add(comp.key)
            elif comp.domain == "workflow" and "nodes" in comp.settings:
                self.flows.append((comp, where))

    def result(self) -> Config:
        remote = None
        if self.remote_file is not None:
            for required in ("url", "root"):
                if required not in self.remote:
                    raise ConfigError(
                        f"missing required key {required!r}", file=self.remote_file, path="remote"
                    )
            remote = RemoteConfig(**self.remote)
            if remote.refresh_max < remote.refresh:
                raise ConfigError(
                    f"refresh_max ({remote.refresh_max:g}s) must not be shorter than refresh "
                    f"({remote.refresh:g}s)",
                    file=self.remote_file,
                    path="remote.refresh_max",
                )
        warnings = self._check_selections(expect_remote=remote is not None)
        self._check_requires()
        for comp, where in self.flows:
            _check_nodes(comp.settings["nodes"], self.tasks, file=comp.source, where=where)
        config = Config(
            path=self.main,
            daemon=DaemonConfig(**self.daemon),
            components=tuple(self.components),
            selections=self.selections,
            remote=remote,
            requires=self.requires,
            metrics=MetricsConfig(**self.metrics),
            include=self.include,
            files=tuple(self.files),
            warnings=tuple(warnings),
        )
        log.debug(
            "config %s: %d file(s), %d component(s)",
            self.main,
            len(self.files),
            len(self.components),
        )
        return config

    def _check_selections(self, *, expect_remote: bool) -> list[str]:
        """A selection must name a provider some candidate of the key offers: a typo would
        otherwise be ignored silently (the key keeps its ranked winner). With ``[remote]``
        configured the provider may come from the manifest, so it is a warning instead."""
        known = self.idents.union(self.providers)
        offered: dict[tuple[str, str], list[str]] | None = None
        warnings = []
        for domain, table in self.selections.items():
            for key, provider in table.items():
                if (domain, key, provider) in known:
                    continue
                if offered is None:  # built once, and only to word a message
                    offered = {}
                    for d, k, p in (*self.idents, *self.providers):
                        offered.setdefault((d, k), []).append(p)
                providers = offered.get((domain, key), [])
                have = (
                    f"its candidates are {', '.join(sorted(set(providers)))}"
                    if providers
                    else f"no [[component]] serves {domain}/{key}"
                )
                if expect_remote:
                    warnings.append(
                        f"selections.{domain}.{key}: provider {provider!r} is not declared "
                        f"locally ({have}); expecting it from the remote manifest"
                    )
                    continue
                raise ConfigError(
                    f"selects provider {provider!r}, which no candidate of {domain}/{key} "
                    f"offers ({have}); fix the name or add the [[component]]",
                    file=self.selection_files[domain, key],
                    path=f"selections.{domain}.{key}",
                )
        return warnings


def _domain_keys(raw: Any, section: str, *, file: str) -> Iterator[tuple[str, str, Any, str]]:
    """``(domain, key, value, "section.domain")`` of a ``[section.<domain>] key = value``
    table, with the domain and the key checked (shared by ``[selections]`` and ``[requires]``)."""
    for domain, table in _table(raw, file=file, path=section).items():
        where = f"{section}.{domain}"
        if domain not in DOMAINS:
            raise ConfigError(
                f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}",
                file=file,
                path=where,
            )
        for key, value in _table(table, file=file, path=where).items():
            if not _NAME.fullmatch(key):
                raise ConfigError(
                    f"expected a key of letters, digits, '_', '.' or '-', got {key!r}",
                    file=file,
                    path=where,
                )
            yield domain, key, value, where


def _parse(text: str, *, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=file) from None


def _read_bytes(file: str) -> bytes:
    try:
        with open(file, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ConfigError("config file does not exist", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", file=file) from None


def _hasher() -> hashlib._Hash:
    """The hash of the files' digest, which only ever decides "byte for byte the same files?"
    (never shown, never stored): SHA-256, which CPUs compute in hardware (x86 SHA extensions,
    ARMv8 crypto), ~1.1 ms for the 2 MB of 10,000 keys where BLAKE2b, in software, took ~3 ms
    of every reload (the largest single O(file size) piece of a one-key change)."""
    return hashlib.sha256()


def _digest_add(h: Any, file: str, data: bytes) -> None:
    h.update(b"%d:%s\0%d:" % (len(file), file.encode(), len(data)))
    h.update(data)


class Preread:
    """The files :func:`files_digest` read, in order, and their digest: a reload that found
    them changed hands them to :func:`load_config`, which then neither reads nor hashes them
    again (2 MB at 10,000 keys: a read and ~3 ms of hashing saved)."""

    __slots__ = ("data", "digest", "files")

    def __init__(self) -> None:
        self.files: list[str] = []
        self.data: dict[str, bytes] = {}
        self.digest = ""


def files_digest(
    path: str | os.PathLike[str], include: tuple[str, ...], *, keep: Preread | None = None
) -> str:
    """The digest :func:`load_config` would record for the files there now, given the
    ``include`` globs of the running config (blocking: reads every file). Equal to the running
    config's ``digest`` exactly when the main file and the set and content of its drop-ins are
    byte for byte what it was parsed from: the main file's bytes decide its ``include``. Raises
    ``ConfigError`` when a file cannot be read. ``keep``: filled with what was read."""
    main = os.path.abspath(os.fspath(path))
    h = _hasher()
    for file in [main, *_dropins(os.path.dirname(main), include, main)]:
        data = _read_bytes(file)
        _digest_add(h, file, data)
        if keep is not None:
            keep.files.append(file)
            keep.data[file] = data
    digest = h.hexdigest()
    if keep is not None:
        keep.digest = digest
    return digest


def _read(file: str, preread: Preread | None = None) -> tuple[bytes, str]:
    """The file's bytes (``preread``'s when it has them) and text (valid UTF-8)."""
    data = preread.data.get(file) if preread is not None else None
    if data is None:
        data = _read_bytes(file)
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not valid UTF-8 (byte {exc.start})", file=file) from None


def _add_file(merge: _Merge, file: str, preread: Preread | None, *, chunked: bool) -> bytes:
    data, text = _read(file, preread)
    if chunked:
        read = file_chunks(file, data)
        if read is not None:
            merge.add_chunks(read, file=file)
            return data
    merge.add(_parse(text, file=file), file=file)
    return data


def _dropins(base: str, include: tuple[str, ...], main: str) -> list[str]:
    """Regular files matched by the include globs, de-duplicated, in lexical path order."""
    found: set[str] = set()
    for pattern in include:
        for match in glob.glob(os.path.join(base, pattern)):
            path = os.path.abspath(match)
            if path != main and os.path.isfile(path):
                found.add(path)
    return sorted(found)


def load_config(
    path: str | os.PathLike[str],
    *,
    providers: Iterable[tuple[str, str, str]] = (),
    preread: Preread | None = None,
) -> Config:
    """Load the main file and its drop-ins; raises ``ConfigError`` on the first mistake.
    ``providers``: (domain, key, provider) registered outside the files (entry-point plugins),
    which a selection may name. ``preread``: what :func:`files_digest` just read (the bytes
    used instead of reading the files again, and their digest when they are the same files).

    Files are read in chunks (``config/chunks.py``): what did not change since the last load
    of the same path is neither parsed nor validated again. A mistake is always reported by
    the reference path (one parse per file, entries in order), so errors are the same."""
    main = os.path.abspath(os.fspath(path))
    providers = tuple(providers)
    try:
        return _load(main, providers, preread, chunked=True)
    except ConfigError:
        return _load(main, providers, preread, chunked=False)


def _load(
    main: str,
    providers: Iterable[tuple[str, str, str]],
    preread: Preread | None = None,
    *,
    chunked: bool,
) -> Config:
    merge = _Merge(main, providers)
    read = [(main, _add_file(merge, main, preread, chunked=chunked))]
    for dropin in _dropins(merge.base, merge.include, main):
        read.append((dropin, _add_file(merge, dropin, preread, chunked=chunked)))
    if preread is not None and preread.files == [f for f, _ in read]:
        digest = preread.digest  # the very bytes, hashed once already
    else:
        h = _hasher()
        for file, data in read:
            _digest_add(h, file, data)
        digest = h.hexdigest()
    return msgspec.structs.replace(merge.result(), digest=digest)


def parse_config_text(text: str, *, path: str) -> Config:
    """Validate one file's text as if it lived at ``path``; drop-ins are not read."""
    main = os.path.abspath(path)
    merge = _Merge(main)
    merge.add(_parse(text, file=main), file=main)
    return merge.result()
