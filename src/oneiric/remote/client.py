"""The host side of TUF: python-tuf's ngclient, synchronous, called in a worker thread only.

``TufSource.check`` answers one question -- what do the configured targets of the repository
hold now, verified? -- and raises :class:`Rejected` (the update is not trustworthy or not
valid: nothing may be applied) or :class:`Unreachable` (the source could not be asked: keep
what runs). All signature, threshold, rollback, freeze and expiry checks are ngclient's;
nothing here verifies a signature or canonicalises JSON.

The one-request refresh: after a full ngclient refresh, the bytes of the verified
``timestamp.json`` are remembered. The next check asks only for ``timestamp.json``
(``If-None-Match``); an unchanged answer (304, or the same bytes) while every trusted role is
unexpired means nothing new, so no other request is made and nothing is parsed or verified.
Any change, any expiry, and every first check of a process goes through ngclient's full
workflow (root rotation, timestamp, snapshot, targets). When the conditional request brought
a new ``timestamp.json``, those bytes are handed to ngclient as its timestamp download (the
fetcher serves them once, to this check only) instead of asking the server a second time;
ngclient verifies them exactly as if it had downloaded them itself.

The trusted metadata lives in memory between checks (:mod:`oneiric.remote.updater`): read from
``STATE/remote/metadata`` once per process, written back only when it changed. Manifest
targets verified by an earlier check are kept in memory by their sha256 (the hash TUF verified),
so an unchanged target is neither read back nor hashed again; a new one is downloaded through
ngclient (length and hashes verified) and cached in ``STATE/remote/targets``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import msgspec
from tuf.api import exceptions
from tuf.api.metadata import Root, Snapshot, Targets, Timestamp
from tuf.ngclient import Updater, UpdaterConfig

from oneiric.config.schema import RemoteConfig
from oneiric.errors import ArtifactError, ManifestError
from oneiric.errors import RemoteRejected as Rejected
from oneiric.errors import RemoteUnreachable as Unreachable
from oneiric.remote.artifacts import is_unpacked, top_level_names, unpack_wheel
from oneiric.remote.check import root_problem
from oneiric.remote.fetch import Fetcher
from oneiric.remote.manifest import Manifest, merge_manifests, parse_manifest
from oneiric.remote.updater import MemoryUpdater, MetadataStore

log = logging.getLogger(__name__)

__all__ = ["Fetched", "Rejected", "TufSource", "Unreachable", "classify"]


class _Signed(msgspec.Struct):
    version: int
    expires: datetime


class _Envelope(msgspec.Struct):
    signed: _Signed


@dataclass(frozen=True)
class Fetched:
    """A verified, validated state of the repository's configured targets."""

    version: int  # the targets metadata version
    digest: str  # sha256 over the configured targets' hashes: "same content" at a glance
    manifests: dict[str, bytes]  # target -> verified bytes, in configured order
    hashes: dict[str, str]  # target -> its sha256 (the cached file is targets/<sha256>.<name>)
    manifest: Manifest  # merged and validated
    artifacts: dict[str, str]  # artifact target -> sha256 (unpacked under artifacts_dir)
    expires: float  # earliest expiry of the trusted top-level metadata (epoch seconds)
    unchanged: bool = False  # True: the one-request path; the other fields repeat the last


@dataclass
class _Trusted:
    timestamp: bytes
    expires: float
    result: Fetched


@dataclass
class TufSource:
    """One remote source of one host. Not thread-safe: one check at a time (the caller's lock)."""

    config: RemoteConfig
    state_dir: Path  # STATE/remote
    fetcher: Fetcher = field(default_factory=Fetcher)
    _trusted: _Trusted | None = None
    _store: MetadataStore | None = None
    _verified: dict[str, bytes] = field(default_factory=dict)  # sha256 -> manifest target

    @property
    def metadata_dir(self) -> Path:
        return self.state_dir / "metadata"

    @property
    def targets_dir(self) -> Path:
        return self.state_dir / "targets"

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "artifacts"

    def _url(self, sub: str) -> str:
        base = self.config.url
        if "://" not in base:
            base = "file://" + os.path.abspath(base)
        return base.rstrip("/") + "/" + sub + "/"

    def _updater_config(self) -> UpdaterConfig:
        # metadata keeps ngclient's own caps (timestamp 16 KiB, snapshot 2 MB, targets 5 MB);
        # [remote] max_bytes bounds each target (manifest or wheel), checked before download
        return UpdaterConfig(app_user_agent=None)

    # -- the check -----------------------------------------------------------------------------
    def check(self, *, full: bool = False) -> Fetched:
        """Verify and fetch; raises Rejected or Unreachable."""
        try:
            if not full and self._trusted is not None:
                quick = self._quick()
                if quick is not None:
                    return quick
            return self._full()
        except (Rejected, Unreachable):
            raise
        except Exception as exc:
            raise classify(exc) from exc

    def _quick(self) -> Fetched | None:
        trusted = self._trusted
        assert trusted is not None
        url = self._url("metadata") + "timestamp.json"
        body = self.fetcher.conditional_get(url, 16 * 1024)
        if (body is None or body == trusted.timestamp) and time.time() < trusted.expires:
            r = trusted.result
            return Fetched(
                version=r.version,
                digest=r.digest,
                manifests=r.manifests,
                hashes=r.hashes,
                manifest=r.manifest,
                artifacts=r.artifacts,
                expires=r.expires,
                unchanged=True,
            )
        if body is not None:
            # ngclient's own timestamp download in the full check that follows gets these
            # bytes (verified by it like any download) instead of a second request
            self.fetcher.prime(url, body)
        return None

    def _full(self) -> Fetched:
        if self._store is None:
            self._store = MetadataStore(self.metadata_dir)
        store = self._store
        try:
            store.load()
            return self._refresh(store)
        finally:
            self.fetcher.unprime()
            store.flush()  # what ngclient verified is persisted even when a later step failed

    def _refresh(self, store: MetadataStore) -> Fetched:
        bootstrap = None
        if store.get("root.json") is None:
            problem = root_problem(self.config.root)
            if problem is not None:
                raise Rejected("invalid", problem)
            try:
                bootstrap = Path(self.config.root).read_bytes()
            except OSError as exc:
                raise Rejected(
                    "invalid", f"cannot read the trust anchor {self.config.root}: {exc.strerror}"
                ) from exc
        updater = MemoryUpdater(
            store,
            str(self.metadata_dir),
            self._url("metadata"),
            str(self.targets_dir),
            self._url("targets"),
            self.fetcher,
            self._updater_config(),
            bootstrap=bootstrap,
        )
        updater.refresh()
        # what ngclient just verified and persisted: only the version and expiry dates are
        # read back (a full Metadata parse of four files costs more than the check itself)
        roles = {
            name: msgspec.json.decode(store.files[f"{name}.json"], type=_Envelope).signed
            for name in (Root.type, Timestamp.type, Snapshot.type, Targets.type)
        }
        expires = min(r.expires.timestamp() for r in roles.values())
        version = roles[Targets.type].version
        manifests: dict[str, bytes] = {}
        digests = hashlib.sha256()
        shas: dict[str, str] = {}
        for name in self.config.targets:
            data, sha = self._target(updater, name)
            manifests[name], shas[name] = data, sha
            digests.update(f"{name}\0{sha}\0".encode())
        try:
            manifest = merge_manifests(
                parse_manifest(n, d, allow_factories=self.config.allow_factories)
                for n, d in manifests.items()
            )
        except ManifestError as exc:
            raise Rejected(exc.reason, str(exc)) from exc
        artifacts: dict[str, str] = {}
        for name in sorted(manifest.artifacts()):
            packages = {
                c.factory.partition(":")[0].split(".")[0]
                for c in manifest.components
                if c.artifact == name
            }
            artifacts[name] = self._artifact(updater, name, packages)
            digests.update(f"{name}\0{artifacts[name]}\0".encode())
        result = Fetched(
            version=version,
            digest=digests.hexdigest(),
            manifests=manifests,
            hashes=shas,
            manifest=manifest,
            artifacts=artifacts,
            expires=expires,
        )
        self._trusted = _Trusted(
            timestamp=store.files["timestamp.json"], expires=expires, result=result
        )
        # only what the configured targets hold now stays in memory
        self._verified = {sha: manifests[n] for n, sha in shas.items()}
        return result

    def _info(self, updater: Updater, name: str, what: str) -> tuple[object, str, int]:
        info = updater.get_targetinfo(name)
        if info is None:
            raise Rejected("missing", f"{what} {name!r} is not a target of the repository")
        if info.length > self.config.max_bytes:
            raise Rejected(
                "oversized",
                f"{what} {name!r} is {info.length} bytes; [remote] max_bytes allows "
                f"{self.config.max_bytes}",
            )
        sha = info.hashes.get("sha256")
        if sha is None:
            raise Rejected("invalid", f"{what} {name!r} has no sha256 hash in targets metadata")
        if not re.fullmatch("[0-9a-f]{64}", sha):  # becomes a path
            raise Rejected("invalid", f"{what} {name!r}: sha256 {sha!r} is not a hex digest")
        return info, sha, info.length

    def _target(self, updater: Updater, name: str) -> tuple[bytes, str]:
        info, sha, length = self._info(updater, name, "manifest target")
        known = self._verified.get(sha)
        if known is not None and len(known) == length:  # verified as this sha256 before
            return known, sha
        path = self.targets_dir / f"{sha}.{name.replace('/', '%2F')}"
        try:  # cached by an earlier process: verified again (the disk is not memory)
            data = path.read_bytes()
            info.verify_length_and_hashes(data)  # type: ignore[attr-defined]
            return data, sha
        except (OSError, exceptions.LengthOrHashMismatchError):
            pass
        try:
            updater.download_target(info, str(path))  # type: ignore[arg-type]
        except Exception as exc:
            raise _named(f"manifest target {name!r}", exc) from exc
        return path.read_bytes(), sha

    def _artifact(self, updater: Updater, name: str, packages: set[str]) -> str:
        """Fetch, verify and unpack the wheel ``name``; it may bring only ``packages`` (the
        top-level packages of the factories that name it)."""
        info, sha, _ = self._info(updater, name, "artifact")
        root = self.artifacts_dir
        if is_unpacked(root, sha):
            self._only(name, root / sha, packages)
            return sha
        wheel = root / f"{sha}.whl"
        root.mkdir(parents=True, exist_ok=True)
        cached = updater.find_cached_target(info, str(wheel))  # type: ignore[arg-type]
        if cached is None:
            try:
                updater.download_target(info, str(wheel))  # type: ignore[arg-type]
            except Exception as exc:
                raise _named(f"artifact {name!r}", exc) from exc
        try:
            self._only(name, wheel, packages)
            unpack_wheel(wheel, root, sha)
        except ArtifactError as exc:
            raise Rejected("invalid", f"artifact {name!r}: {exc}") from exc
        return sha

    @staticmethod
    def _only(name: str, path: Path, packages: set[str]) -> None:
        extra = top_level_names(path) - packages
        if extra:
            raise Rejected(
                "disallowed_factory",
                f"artifact {name!r} brings {', '.join(sorted(extra))}, which no factory naming "
                f"it imports (allowed: {', '.join(sorted(packages)) or 'none'}); an artifact "
                "may not put other modules on the import path",
            )


def _named(what: str, exc: Exception) -> Rejected | Unreachable:
    err = classify(exc)
    if isinstance(err, Rejected):
        return Rejected(err.reason, f"{what}: {err.message}")
    return Unreachable(f"{what}: {err}")


def classify(exc: BaseException) -> Rejected | Unreachable:
    """A python-tuf (or OS) error as a rejection with its reason, or as unreachable."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    while cause is not None:  # "Failed to deserialize JSON" alone does not say what was wrong
        if str(cause) and str(cause) not in text:
            text += f": {cause}"
        cause = cause.__cause__
    if isinstance(exc, exceptions.DownloadLengthMismatchError):
        return Rejected("oversized", text)
    if isinstance(exc, exceptions.DownloadHTTPError):
        return Unreachable(text)
    if isinstance(exc, exceptions.DownloadError | ConnectionError | TimeoutError):
        return Unreachable(text)
    if isinstance(exc, exceptions.UnsignedMetadataError):
        return Rejected("unsigned", text)
    if isinstance(exc, exceptions.BadVersionNumberError):
        return Rejected("rollback", text)
    if isinstance(exc, exceptions.ExpiredMetadataError):
        return Rejected("expired", text)
    if isinstance(exc, exceptions.LengthOrHashMismatchError):
        return Rejected("tampered", text)
    if isinstance(exc, exceptions.RepositoryError):
        return Rejected("invalid", text)
    if isinstance(exc, OSError):
        return Unreachable(f"{type(exc).__name__}: {text}")
    return Rejected("invalid", f"{type(exc).__name__}: {text}")
