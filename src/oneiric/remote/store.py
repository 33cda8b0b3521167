"""The last accepted manifest, persisted in ``STATE/remote/applied.json`` (fail static).

Written durably (fsync'd, atomic) after a manifest is applied, read once at boot: a host whose
source is unreachable when it starts runs what it last accepted. TUF's own metadata sits
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
