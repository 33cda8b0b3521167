"""One exception tree for the whole project.

Every error carries a protocol ``code`` (SPEC §8) so the control server can translate it at
one boundary, and the CLI can map it to an exit status.
"""

from __future__ import annotations


class OneiricError(Exception):
    """Base of every error oneiric raises on purpose."""

    code: str = "internal"


class ConfigError(OneiricError):
    """The configuration is invalid. ``str()`` names the file, the field path and what was
    expected."""

    code = "bad_request"

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None) -> None:
        self.file = file
        self.path = path
        where = ", ".join(p for p in (file, f"at {path}" if path else None) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.detail = message


class NotFound(OneiricError):
    code = "not_found"


class Conflict(OneiricError):
    code = "conflict"


class PermissionDenied(OneiricError):
    code = "permission_denied"


class Unavailable(OneiricError):
    """The key cannot serve right now (paused, draining, no active instance)."""

    code = "unavailable"


class Paused(Unavailable):
    """Admission is closed and the caller asked not to wait."""


class Busy(Unavailable):
    """A concurrency limit is reached."""


class Timeout(OneiricError):
    code = "timeout"


class ActivationError(OneiricError):
    """Constructing, starting or health-gating a provider failed; the serving instance (if any)
    was kept."""

    code = "internal"


class BadRequest(OneiricError):
    code = "bad_request"
