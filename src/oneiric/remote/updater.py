"""python-tuf's ngclient ``Updater`` over metadata the host keeps in memory between checks.

ngclient builds one ``Updater`` per refresh and reads its trusted metadata back from the
metadata directory each time: ``root.json`` (and writes it again, with its ``root_history``
copy and the ``root.json`` symlink, on every construction), then the local timestamp,
snapshot and targets, each parsed and verified again before the new ones are downloaded. On
a host that checks every minute for years that is most of a check's filesystem work (measured
in a fleet simulation: a third of the CPU of taking a new version).

:class:`MetadataStore` holds the bytes of the trusted metadata files, read from
``STATE/remote/metadata`` once per process; :class:`MemoryUpdater` is ngclient's ``Updater``
reading its "local metadata" from that store and recording what it persists there. After each
check :meth:`MetadataStore.flush` writes to disk exactly the files that changed (atomically,
as ngclient does: a temporary file renamed into place), so rollback protection still survives
restarts, and a metadata version verified before a later step failed is persisted as well.

Verification keeps ngclient's order and rules: every byte string, from memory or from the
network, goes through its ``TrustedMetadataSet`` (rollback, version, expiry and freeze checks
on every check). One thing is remembered: a timestamp, snapshot or targets document whose
*exact bytes* this process already verified against the *same trusted root* is not parsed and
signature-checked a second time -- on the next check those bytes are the "local metadata"
ngclient starts from, and verifying them again proves nothing new (ed25519 and the JSON
canonicalisation were a third of a check's CPU). Anything downloaded, any other bytes, and any
new root are verified in full; the memory holds only what the last check used.

The overridden methods are ``Updater``'s file helpers and the trusted set's loader (stable
across python-tuf 5-7; pinned ``<8`` in pyproject.toml; tests/test_remote_client.py counts the
verifications so a change there shows).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any
from urllib import parse

from tuf.api.metadata import Root
from tuf.ngclient import Updater

from oneiric._files import atomic_write

log = logging.getLogger(__name__)

__all__ = ["MemoryUpdater", "MetadataStore"]

#: the files ngclient keeps in its metadata directory (delegated roles would add more)
TOP_LEVEL = ("root.json", "timestamp.json", "snapshot.json", "targets.json")


class MetadataStore:
    """The bytes of ``STATE/remote/metadata/*.json`` as last trusted, and the writes pending.

    Keys are paths relative to the metadata directory (``timestamp.json``,
    ``root_history/3.root.json``). Not thread-safe: one check at a time (the source's lock)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.files: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        self._root_version: int | None = None  # root.json's new symlink target, to write
        self._linked: int | None = None  # what root.json points to on disk
        self._loaded = False
        # (role name, root version, exact bytes, trusted root bytes) -> ngclient's verified
        # load of those bytes (payload, signed bytes, signatures)
        self.verified: dict[tuple[str, int, bytes, bytes], Any] = {}
        self.used: set[tuple[str, int, bytes, bytes]] = set()

    def load(self) -> None:
        """Read the top-level files once (a file that is missing is simply not there)."""
        if self._loaded:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in TOP_LEVEL:
            with contextlib.suppress(FileNotFoundError):
                self.files[name] = (self.dir / name).read_bytes()
        with contextlib.suppress(OSError, ValueError):  # "root_history/<v>.root.json"
            target = os.readlink(self.dir / "root.json")
            self._linked = int(os.path.basename(target).split(".", 1)[0])
        self._loaded = True

    def get(self, name: str) -> bytes | None:
        return self.files.get(name)

    def put(self, name: str, data: bytes) -> None:
        if self.files.get(name) != data:
            self.files[name] = data
            self._dirty.add(name)

    def point_root(self, version: int) -> None:
        """``root.json`` is now root version ``version``, a copy of ``root_history/<v>``
        (ngclient: a symlink into root_history, rewritten on every Updater)."""
        name = f"root_history/{version}.root.json"
        data = self.files.get(name)
        if data is None:  # ngclient found (and verified) it on disk, left by an earlier process
            data = self.files[name] = (self.dir / name).read_bytes()
        linked = self._linked if self._root_version is None else self._root_version
        if self.files.get("root.json") != data or linked != version:
            self.files["root.json"] = data
            self._root_version = version

    def flush(self) -> None:
        """Write what changed since the last flush in python-tuf's order: new root versions,
        then ``root.json`` pointing at the newest, then timestamp, snapshot and targets -- a
        crash in between leaves a state python-tuf starts from (it re-verifies what it reads
        from disk in a new process)."""
        dirty = sorted(self._dirty, key=lambda n: not n.startswith("root_history/"))
        roots = [n for n in dirty if n.startswith("root_history/")]
        for name in roots:
            self._write(name)
        if self._root_version is not None:
            tmp = self.dir / ".root.json.link"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(os.path.join("root_history", f"{self._root_version}.root.json"), tmp)
            os.replace(tmp, self.dir / "root.json")
            self._linked = self._root_version
            self._root_version = None
        for name in dirty[len(roots) :]:
            self._write(name)
        for key in self.verified.keys() - self.used:  # only what this check relied on stays
            del self.verified[key]
        self.used.clear()

    def _write(self, name: str) -> None:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, self.files[name], mode=0o600, durable=False)
        self._dirty.discard(name)


class MemoryUpdater(Updater):
    """ngclient's Updater whose local metadata is a :class:`MetadataStore`."""

    def __init__(self, store: MetadataStore, *args: Any, **kwargs: Any) -> None:
        self._store = store
        super().__init__(*args, **kwargs)
        load = self._trusted_set._load_data

        def remembered(
            role: Any, data: bytes, delegator: Any = None, role_name: str | None = None
        ) -> Any:
            root = store.get("root.json")
            if not isinstance(delegator, Root) or role is Root or root is None:
                return load(role, data, delegator, role_name)  # roots: always in full
            key = (role_name or role.type, delegator.version, data, root)
            hit = store.verified.get(key)
            if hit is None:
                hit = load(role, data, delegator, role_name)
                store.verified[key] = hit
            store.used.add(key)
            return hit

        self._trusted_set._load_data = remembered

    def _load_local_metadata(self, rolename: str) -> bytes:
        data = self._store.get(f"{parse.quote(rolename, '')}.json")
        if data is None:
            raise FileNotFoundError(rolename)  # what ngclient expects of a missing file
        return data

    def _persist_file(self, filename: str, data: bytes) -> None:
        rel = os.path.relpath(filename, self._dir)
        self._store.put(rel, data)

    def _update_root_symlink(self) -> None:
        self._store.point_root(self._trusted_set.root.version)
