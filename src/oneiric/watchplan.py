"""What to watch for one config: directories, the paths that matter, and what a batch holds.

Pure planning, blocking (globs, stats, ``readlink``): :mod:`oneiric.watch` runs it off the event
loop and re-plans when a directory on the way appears or vanishes or a symlink is swapped.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["WatchPlan", "make_plan", "paths_of", "saves_in_progress"]


def _matches(path: str, pattern: str) -> bool:
    """Component-wise glob match with :func:`glob.glob`'s rules: ``*`` stays within one path
    component and does not match a leading dot (editor temp files like ``.x.toml.swp``)."""
    names, parts = path.split(os.sep), pattern.split(os.sep)
    if len(names) != len(parts):
        return False
    for name, part in zip(names, parts, strict=True):
        if name == part:
            continue
        if name.startswith(".") and not part.startswith("."):
            return False
        if not fnmatch.fnmatchcase(name, part):
            return False
    return True


_MAGIC = re.compile(r"[*?[]")


def _chain(directory: str) -> list[str]:
    """``/a/b/c`` → ``["/", "/a", "/a/b", "/a/b/c"]``."""
    parts = directory.split(os.sep)
    return [os.sep.join(parts[:i]) or os.sep for i in range(1, len(parts) + 1)]


@dataclass(frozen=True, slots=True)
class WatchPlan:
    """Which directories to hand to watchfiles and which event paths matter."""

    mains: tuple[str, ...]  # the main file, and its real path when it is reached via symlinks
    patterns: tuple[str, ...]  # absolute include globs
    levels: tuple[str, ...]  # directory patterns leading to the main file and the drop-ins
    dirs: tuple[str, ...]  # existing directories to watch, non-recursively

    def relevant(self, path: str) -> bool:
        return self.is_config(path) or self.is_level(path)

    def is_config(self, path: str) -> bool:
        return path in self.mains or any(_matches(path, p) for p in self.patterns)

    def is_level(self, path: str) -> bool:
        return any(_matches(path, p) for p in self.levels)


def _symlink_hops(path: str, limit: int = 40) -> list[str]:
    """The symlinks met while resolving ``path`` (the file itself or any directory on the way),
    then the real path; ``[]`` when there are none. Swapping one of them (``ln -sfn``, a
    Kubernetes ConfigMap's ``..data``) changes what the main file is."""
    hops: list[str] = []
    current = path
    for _ in range(limit):
        link = next((p for p in _chain(current)[1:] if os.path.islink(p)), None)
        if link is None:
            break
        try:
            target = os.path.join(os.path.dirname(link), os.readlink(link))
        except OSError:  # replaced between the two calls: the event that follows re-plans
            break
        hops.append(link)
        rest = os.path.relpath(current, link) if current != link else ""
        current = os.path.normpath(os.path.join(target, rest) if rest else target)
    return [*hops, current] if hops else []


def make_plan(main: str, include: Iterable[str]) -> WatchPlan:
    """Plan the watch for a main file and its ``include`` globs (blocking: globs and stats).

    For each directory a config file may live in: watch the deepest existing directory of its
    wildcard-free prefix (the nearest existing ancestor when that prefix does not exist yet),
    plus every existing directory matching the deeper, wildcarded levels. A main file reached
    through symlinks also gets the directories of the links and of its real path watched."""
    main = os.path.abspath(main)
    base = os.path.dirname(main)
    patterns = tuple(dict.fromkeys(os.path.normpath(os.path.join(base, p)) for p in include))
    hops = _symlink_hops(main)
    levels: dict[str, None] = dict.fromkeys(hops[:-1])  # a swapped link: plan again
    dirs: set[str] = set()
    targets = [base, *(os.path.dirname(p) for p in patterns), *map(os.path.dirname, hops)]
    for target in dict.fromkeys(targets):
        chain = _chain(target)
        levels.update(dict.fromkeys(chain[1:]))
        fixed = next((i - 1 for i, d in enumerate(chain) if _MAGIC.search(d)), len(chain) - 1)
        start = fixed
        while start > 0 and not os.path.isdir(chain[start]):
            start -= 1
        dirs.add(chain[start])
        if start == fixed:
            for level in chain[fixed + 1 :]:
                dirs.update(d for d in glob.glob(level) if os.path.isdir(d))
    mains = (main, hops[-1]) if hops else (main,)
    return WatchPlan(mains, patterns, tuple(levels), tuple(sorted(dirs)))


def saves_in_progress(paths: Iterable[str], known: Iterable[str]) -> list[str]:
    """Those of ``paths`` that are empty now and are among the ``known`` config files
    (blocking: resolves symlinks)."""
    real = {os.path.realpath(f) for f in known}
    return [p for p in _empty_files(paths) if os.path.realpath(p) in real]


def _empty_files(paths: Iterable[str]) -> list[str]:
    """Those of ``paths`` that are empty regular files right now (blocking)."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        if st.st_size == 0 and os.path.isfile(p):
            out.append(p)
    return out


def paths_of(item: object) -> set[str]:
    """Event paths of a watchfiles batch (``{(Change, path)}``); an injected item may be
    anything, and then simply means "something changed"."""
    if isinstance(item, str):
        return {item}
    out: set[str] = set()
    if isinstance(item, Iterable):
        for entry in item:
            if isinstance(entry, str):
                out.add(entry)
            elif isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], str):
                out.add(entry[1])
    return out
