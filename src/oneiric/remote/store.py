"""The last accepted manifest, persisted in ``STATE/remote/applied.json`` (fail static).

Written durably (fsync'd, atomic) after a manifest is applied, read once at boot: a host whose
source is unreachable when it starts runs what it last accepted. Cached manifest targets
(``targets/<sha256>.<name>``) are collected after each apply: only what the current and the
previous accepted manifest name stays. TUF's own metadata sits
beside it in ``STATE/remote/metadata`` (ngclient persists it), so rollback protection also
survives restarts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from oneiric._files import atomic_write

log = logging.getLogger(__name__)


class Applied(msgspec.Struct, kw_only=True):
    """What was applied, in enough detail to apply it again without the network."""

    url: str
    targets: list[str]
    version: int
    digest: str
    applied_at: float
    manifests: dict[str, str]  # target -> TOML text (already verified by TUF when accepted)
    artifacts: dict[str, str] = {}  # artifact target -> sha256
    hashes: dict[str, str] = {}  # manifest target -> sha256 (its cached file in targets/)


def load_applied(path: Path) -> Applied | None:
    """The persisted manifest, or None (none yet, or unreadable: logged, never fatal)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("cannot read the last applied manifest %s: %s", path, exc)
        return None
    try:
        return msgspec.json.decode(data, type=Applied)
    except msgspec.DecodeError as exc:
        log.error("ignoring the unreadable last applied manifest %s: %s", path, exc)
        return None


def save_applied(path: Path, applied: Applied) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, msgspec.json.encode(applied), mode=0o600)


def collect_targets(directory: Path, keep: set[str]) -> None:
    """Remove cached manifest targets (``<sha256>.<name>``) whose sha256 is not in ``keep``
    (what the current and the previous accepted manifest name): a fleet publishing every day
    would otherwise pile up a file per version for the life of the host."""
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        sha = entry.name.partition(".")[0]
        if sha in keep:
            continue
        try:
            entry.unlink()
        except IsADirectoryError:
            continue
        except OSError as exc:
            log.warning("cannot remove the old manifest target %s: %s", entry, exc)
