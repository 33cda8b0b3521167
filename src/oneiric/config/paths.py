"""Where things live: the daemon's resolved paths and the directories a config watcher watches.

Both are about the filesystem around a config rather than its contents: ``default_paths``
applies the SPEC §5 precedence (flag, ``[daemon]`` key, systemd environment, FHS default) and
``watch_paths`` lists directories whose changes may change the loaded config.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping

import msgspec

from oneiric.config.schema import DEFAULT_INCLUDE, Config, DaemonConfig

DEFAULT_CONFIG = "/etc/oneiric/oneiricd.toml"
DEFAULT_RUNTIME_DIR = "/run/oneiric"
DEFAULT_STATE_DIR = "/var/lib/oneiric"


class ResolvedPaths(msgspec.Struct, frozen=True):
    """Absolute paths after flags, ``[daemon]`` keys, environment and defaults (SPEC §5)."""

    config: str
    socket: str
    health_file: str
    state_dir: str


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
