"""Artifacts: pure-Python wheels published as TUF targets, unpacked and made importable.

A wheel is unpacked into ``STATE/remote/artifacts/<sha256>/`` (the digest TUF verified), built
in a temporary sibling directory and renamed into place, so a crash never leaves a half
directory that looks complete. The directory goes on ``sys.path`` before the factories that
need it are imported. Python cannot safely re-import a module that is already loaded, so a
changed artifact whose modules are in ``sys.modules`` is reported (``restart_needed``) and the
serving code is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from oneiric.errors import ArtifactError

log = logging.getLogger(__name__)

_DONE = ".oneiric-complete"
MAX_UNPACKED = 256 * 1024 * 1024  # a zip bomb stops here


def unpack_wheel(wheel: Path, root: Path, sha256: str) -> Path:
    """Unpack ``wheel`` (already verified by TUF) into ``root/<sha256>/``; idempotent."""
    dest = root / sha256
    if (dest / _DONE).exists():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    try:
        try:
            with zipfile.ZipFile(wheel) as zf:
                members = zf.infolist()
                total = 0
                for info in members:
                    parts = info.filename.replace("\\", "/").split("/")
                    if info.filename.startswith("/") or ".." in parts or ":" in parts[0]:
                        raise ArtifactError(f"unsafe member path {info.filename!r}")
                    total += info.file_size
                if total > MAX_UNPACKED:
                    raise ArtifactError(f"unpacks to {total} bytes (limit {MAX_UNPACKED})")
                zf.extractall(tmp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise ArtifactError(f"not a usable wheel: {exc}") from exc
        (tmp / _DONE).write_text(wheel.name + "\n")
        if dest.exists():  # an interrupted earlier attempt
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("artifact %s unpacked into %s", wheel.name, dest)
    return dest


def top_level_names(path: Path) -> set[str]:
    """The importable top-level names a wheel (or its unpacked directory) would put on
    ``sys.path``: packages and modules, not ``*.dist-info``/``*.data``. An artifact may only
    bring the packages of the factories that name it, or it could shadow any other module."""
    if path.is_dir():
        entries = [p.name + ("/" if p.is_dir() else "") for p in path.iterdir()]
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                entries = [n.split("/", 1)[0] + ("/" if "/" in n else "") for n in zf.namelist()]
        except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise ArtifactError(f"not a usable wheel: {exc}") from exc
    names = set()
    for entry in entries:
        name = entry.rstrip("/")
        if name == _DONE or name.endswith((".dist-info", ".data")):
            continue
        if entry.endswith("/"):
            names.add(name)
        elif name.endswith((".py", ".pyc", ".so")) or ".cpython-" in name:
            names.add(name.split(".", 1)[0])
        # other top-level files (licences, READMEs) cannot be imported
    return names


def is_unpacked(root: Path, sha256: str) -> bool:
    return (root / sha256 / _DONE).exists()


def activate(dirs: Iterable[str]) -> None:
    """Put artifact directories on the import path (first, so the published code wins)."""
    for d in dirs:
        if d not in sys.path:
            sys.path.insert(0, d)
    with contextlib.suppress(Exception):
        import importlib

        importlib.invalidate_caches()


def imported_elsewhere(factory: str, directory: str) -> str | None:
    """The top-level module of ``factory`` when it is already imported from somewhere other
    than ``directory`` (so the new artifact's code cannot take effect without a restart)."""
    top = factory.partition(":")[0].partition(".")[0]
    module = sys.modules.get(top)
    if module is None:
        return None
    where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "")
    if where and os.path.abspath(where).startswith(os.path.abspath(directory) + os.sep):
        return None
    return top


def collect(root: Path, keep: set[str]) -> None:
    """Remove unpacked artifacts and downloaded wheels no longer referenced and not on the
    import path (a module imported from one may still be serving)."""
    if not root.is_dir():
        return
    live = set(sys.path)
    for entry in root.iterdir():
        name = entry.name.partition(".")[0] if entry.suffix == ".whl" else entry.name
        if name in keep or str(entry) in live or entry.name.startswith(".unpack-"):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
