"""The publisher side of SPEC §9: create, sign and inspect a TUF repository of manifests.

Everything cryptographic is python-tuf's Metadata API and securesystemslib's CryptoSigner
(ed25519, PEM/PKCS#8 key files, mode 0600); nothing here serialises canonical JSON or checks
a signature by hand. Imported only by ``oneiricctl manifest ...`` (and tests, benchmarks).

Repository layout (consistent snapshots, so a CDN can cache everything but timestamp.json)::

    REPO/keys/<role>.<n>.key        private keys, 0600 (keep root's offline in production)
    REPO/metadata/root.json         and <v>.root.json for every root version (hosts walk them)
    REPO/metadata/<v>.targets.json  <v>.snapshot.json, timestamp.json
    REPO/targets/<sha256>.<name>    the manifests and wheels, named by content
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import (
    TOP_LEVEL_ROLE_NAMES,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from oneiric._files import atomic_write
from oneiric.errors import PublishError

ROLES = ("root", "targets", "snapshot", "timestamp")
DEFAULT_EXPIRES = {"root": 365 * 86400.0, "targets": 90 * 86400.0}
DEFAULT_EXPIRES_OTHER = 30 * 86400.0
_KEYFILE = re.compile(r"(root|targets|snapshot|timestamp)\.(\d+)\.key")


# -- keys --------------------------------------------------------------------------------------
def keygen(path: Path) -> CryptoSigner:
    """A new ed25519 key as PEM/PKCS#8, mode 0600; never overwrites an existing file."""
    signer = CryptoSigner.generate_ed25519()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PublishError(f"{path} already exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(signer.private_bytes)
        fh.flush()
        os.fsync(fh.fileno())
    return signer


def load_signer(path: Path) -> CryptoSigner:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise PublishError(f"cannot read key {path}: {exc.strerror or exc}") from exc
    try:
        return CryptoSigner(load_pem_private_key(pem, None))
    except (ValueError, TypeError) as exc:
        raise PublishError(f"{path} is not an unencrypted PEM private key: {exc}") from exc


def role_keys(repo: Path, role: str) -> list[Path]:
    """``REPO/keys/<role>.<n>.key`` in n order."""
    found = []
    for p in (repo / "keys").glob(f"{role}.*.key"):
        m = _KEYFILE.fullmatch(p.name)
        if m:
            found.append((int(m.group(2)), p))
    return [p for _, p in sorted(found)]


def _next_key_path(repo: Path, role: str) -> Path:
    used = [int(m.group(2)) for p in role_keys(repo, role) if (m := _KEYFILE.fullmatch(p.name))]
    return repo / "keys" / f"{role}.{max(used, default=0) + 1}.key"


# -- the repository ------------------------------------------------------------------------------
def _expiry(seconds: float) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)


@dataclass
class Repo:
    """The current metadata of a repository directory, loaded for editing."""

    path: Path
    root: Metadata[Root]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]

    @property
    def metadata(self) -> Path:
        return self.path / "metadata"

    @classmethod
    def load(cls, path: Path) -> Repo:
        md = path / "metadata"
        if not (md / "root.json").exists():
            raise PublishError(
                f"{path} is not a repository (no metadata/root.json); create one with "
                f"`oneiricctl manifest init {path}`"
            )
        root = Metadata[Root].from_file(str(md / "root.json"))
        timestamp = Metadata[Timestamp].from_file(str(md / "timestamp.json"))
        snap_v = timestamp.signed.snapshot_meta.version
        snapshot = Metadata[Snapshot].from_file(str(md / f"{snap_v}.snapshot.json"))
        targets_v = snapshot.signed.meta["targets.json"].version
        targets = Metadata[Targets].from_file(str(md / f"{targets_v}.targets.json"))
        return cls(path, root, targets, snapshot, timestamp)

    # -- writing -------------------------------------------------------------------------------
    def _write(self, name: str, md: Metadata[Any]) -> None:
        data = md.to_bytes(JSONSerializer(compact=False))
        atomic_write(self.metadata / name, data)

    def write_root(self) -> None:
        v = self.root.signed.version
        self._write(f"{v}.root.json", self.root)
        self._write("root.json", self.root)

    def write_targets_chain(
        self, signers: dict[str, list[Signer]], *, expires: float | None, bump: int = 1
    ) -> None:
        """Bump and sign targets -> snapshot -> timestamp and write them, timestamp last (the
        one mutable file: hosts see the new state only once everything it names exists)."""
        t = self.targets.signed
        t.version += bump
        t.expires = _expiry(expires or DEFAULT_EXPIRES["targets"])
        _sign(self.targets, signers["targets"], "targets")
        self._write(f"{t.version}.targets.json", self.targets)
        self.bump_snapshot(signers, expires=expires, bump=bump)

    def bump_snapshot(
        self, signers: dict[str, list[Signer]], *, expires: float | None, bump: int = 1
    ) -> None:
        s = self.snapshot.signed
        s.meta["targets.json"] = MetaFile(version=self.targets.signed.version)
        s.version += bump
        s.expires = _expiry(expires or DEFAULT_EXPIRES_OTHER)
        _sign(self.snapshot, signers["snapshot"], "snapshot")
        self._write(f"{s.version}.snapshot.json", self.snapshot)
        ts = self.timestamp.signed
        ts.snapshot_meta = MetaFile(version=s.version)
        ts.version += bump
        ts.expires = _expiry(expires or DEFAULT_EXPIRES_OTHER)
        _sign(self.timestamp, signers["timestamp"], "timestamp")
        self._write("timestamp.json", self.timestamp)

    def add_target(self, name: str, data: bytes) -> TargetFile:
        """Store ``data`` as ``targets/<dir>/<sha256>.<base>`` and list it in targets."""
        info = TargetFile.from_data(name, data, ["sha256"])
        dirname, _, base = name.rpartition("/")
        dest = self.path / "targets" / dirname / f"{info.hashes['sha256']}.{base}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            atomic_write(dest, data)
        self.targets.signed.targets[name] = info
        return info


def _sign(md: Metadata[Any], signers: list[Signer], role: str) -> None:
    if not signers:
        raise PublishError(f"no {role} key to sign with")
    md.signatures.clear()
    for s in signers:
        md.sign(s, append=True)


def default_signers(repo: Path, roles: tuple[str, ...] = ROLES) -> dict[str, list[Signer]]:
    return {r: [load_signer(p) for p in role_keys(repo, r)] for r in roles}


def init(path: Path, *, keys: int = 1, threshold: int = 1, expires: float | None = None) -> Path:
    """A new repository with ``keys`` ed25519 keys per role; returns the root.json to install
    on hosts."""
    if keys < 1 or not 1 <= threshold <= keys:
        raise PublishError(f"need 1 <= threshold <= keys, got threshold {threshold}, keys {keys}")
    if (path / "metadata" / "root.json").exists():
        raise PublishError(f"{path} already holds a repository (metadata/root.json exists)")
    for sub in ("keys", "metadata", "targets"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(path / "keys", 0o700)
    signers: dict[str, list[Signer]] = {}
    root = Root(expires=_expiry(expires or DEFAULT_EXPIRES["root"]), consistent_snapshot=True)
    for role in ROLES:
        signers[role] = []
        for n in range(1, keys + 1):
            signer = keygen(path / "keys" / f"{role}.{n}.key")
            root.add_key(signer.public_key, role)
            signers[role].append(signer)
        root.roles[role].threshold = threshold if role in ("root", "targets") else 1
    repo = Repo(
        path,
        Metadata(root),
        Metadata(Targets(expires=_expiry(60))),
        Metadata(Snapshot(expires=_expiry(60))),
        Metadata(Timestamp(expires=_expiry(60))),
    )
    _sign(repo.root, signers["root"], "root")
    repo.write_root()
    repo.write_targets_chain(signers, expires=expires, bump=0)
    return path / "metadata" / "1.root.json"


def publish(
    path: Path,
    manifests: dict[str, bytes],
    artifacts: dict[str, bytes],
    *,
    targets_keys: list[Path] | None = None,
    expires: float | None = None,
) -> Repo:
    """Add or replace targets, then bump and sign targets, snapshot and timestamp."""
    repo = Repo.load(path)
    signers = default_signers(path, ("snapshot", "timestamp"))
    signers["targets"] = [load_signer(p) for p in (targets_keys or role_keys(path, "targets"))]
    _check_signers(repo, signers["targets"], "targets")
    for name, data in {**artifacts, **manifests}.items():
        repo.add_target(name, data)
    repo.write_targets_chain(signers, expires=expires)
    return repo


def _check_signers(repo: Repo, signers: list[Signer], role: str) -> None:
    """Refuse to publish what hosts would reject: too few keys that the role trusts."""
    trusted = set(repo.root.signed.roles[role].keyids)
    good = {s.public_key.keyid for s in signers} & trusted
    need = repo.root.signed.roles[role].threshold
    if len(good) < need:
        raise PublishError(
            f"{role} needs {need} signature(s) from its keys in root; the given keys provide "
            f"{len(good)} (keys not in root do not count)"
        )


def rotate(
    path: Path,
    role: str,
    *,
    add: list[Path],
    remove: list[Path],
    threshold: int | None = None,
    expires: float | None = None,
) -> Repo:
    """A new root version that adds/removes ``role`` keys (and sets its threshold), signed by
    the old root's keys and the new root's keys; the role's metadata is re-signed with its new
    keys. Added key files are copied into REPO/keys, removed ones moved to REPO/keys/retired."""
    if role not in TOP_LEVEL_ROLE_NAMES:
        raise PublishError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    repo = Repo.load(path)
    root = repo.root.signed
    old_root_signers = [
        s
        for s in (load_signer(p) for p in role_keys(path, "root"))
        if s.public_key.keyid in root.roles["root"].keyids
    ]
    added = [(p, load_signer(p)) for p in add]
    removed = [load_signer(p).public_key.keyid for p in remove]
    for _, s in added:
        root.add_key(s.public_key, role)
    for keyid in removed:
        if keyid not in root.roles[role].keyids:
            raise PublishError(f"key {keyid[:12]} is not a {role} key of this repository")
        root.revoke_key(keyid, role)
    if threshold is not None:
        root.roles[role].threshold = threshold
    if len(root.roles[role].keyids) < root.roles[role].threshold:
        raise PublishError(
            f"{role} would have {len(root.roles[role].keyids)} key(s) for a threshold of "
            f"{root.roles[role].threshold}"
        )
    root.version += 1
    root.expires = _expiry(expires or DEFAULT_EXPIRES["root"])
    # the key files follow the metadata: REPO/keys holds exactly the keys in use
    for src, _ in added:
        dest = _next_key_path(path, role)
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o600)
    retired = path / "keys" / "retired"
    for own in role_keys(path, role):
        if load_signer(own).public_key.keyid in removed:
            retired.mkdir(exist_ok=True)
            own.rename(retired / own.name)
    new_root_signers = [load_signer(p) for p in role_keys(path, "root")]
    signers = {s.public_key.keyid: s for s in [*old_root_signers, *new_root_signers]}
    _sign(repo.root, list(signers.values()), "root")
    repo.write_root()
    # a new timestamp even for a root-only change: hosts ask for timestamp.json first, and
    # a changed one makes them walk the root chain (ngclient) on their next refresh
    all_signers = default_signers(path)
    if role == "targets":
        repo.write_targets_chain(all_signers, expires=expires)
    else:
        repo.bump_snapshot(all_signers, expires=expires)
    return repo


def status(path: Path) -> dict[str, Any]:
    """Versions, expiry dates, keys and thresholds per role, and the targets."""
    repo = Repo.load(path)
    root = repo.root.signed
    out: dict[str, Any] = {"repository": str(path), "roles": {}, "targets": {}}
    for role, md in (
        ("root", repo.root),
        ("targets", repo.targets),
        ("snapshot", repo.snapshot),
        ("timestamp", repo.timestamp),
    ):
        out["roles"][role] = {
            "version": md.signed.version,
            "expires": md.signed.expires.isoformat(),
            "threshold": root.roles[role].threshold,
            "keys": sorted(root.roles[role].keyids),
            "signed_by": sorted(md.signatures),
            "key_files": [str(p) for p in role_keys(path, role)],
        }
    for name, info in sorted(repo.targets.signed.targets.items()):
        out["targets"][name] = {"length": info.length, "sha256": info.hashes.get("sha256")}
    return out


def verify(path: Path, root_file: Path | None = None) -> dict[str, Any]:
    """Run python-tuf's client against the repository directory as a fresh host would
    (trusting ``root_file``, default the repository's first root) and fetch every target."""
    from tuf.ngclient import Updater

    md = path / "metadata"
    anchor = root_file or md / "1.root.json"
    if not anchor.exists():
        anchor = md / "root.json"
    with tempfile.TemporaryDirectory(prefix="oneiric-verify-") as tmp:
        updater = Updater(
            tmp,
            (md.resolve()).as_uri() + "/",
            os.path.join(tmp, "t"),
            (path / "targets").resolve().as_uri() + "/",
            _local_fetcher(),
            bootstrap=anchor.read_bytes(),
        )
        updater.refresh()
        found: dict[str, Any] = {}
        targets = Repo.load(path).targets.signed.targets
        for name in sorted(targets):
            info = updater.get_targetinfo(name)
            assert info is not None
            local = os.path.join(tmp, "t", hashlib.sha256(name.encode()).hexdigest())
            updater.download_target(info, local)
            found[name] = info.length
    return {"repository": str(path), "ok": True, "targets": found}


def _local_fetcher() -> Any:
    from oneiric.remote.fetch import Fetcher

    return Fetcher()
