"""One exception tree for the whole project.

Every error oneiric raises on purpose is a :class:`OneiricError` declared here, and carries a
protocol ``code`` (one of :data:`ErrorCode`, SPEC §8) and an optional JSON-able ``detail``, so
the control session translates any of them into an error reply at one boundary (``code``,
``str(exc)``, ``detail``) and the CLI maps the code to an exit status. Modules raise these
classes; none declares its own. The few that are deliberately not protocol errors live here
too: the file layer's ``OSError`` reports (:class:`UnsafePath`, :class:`ReplacedUnconfirmed`,
:class:`WrittenUnconfirmed`) and the ``RuntimeError`` a component's own call sees
(:class:`ComponentExit`, :class:`Abandoned`). The module imports only :mod:`typing`, so the
lightest caller (``oneiricctl``) may import it.

Declared elsewhere, on purpose: private control-flow signals that never leave their module
(the control server's "peer gone", the client's "unreadable reply"), and the client's own
errors in :mod:`oneiric.control.client` (not running, access denied, the daemon's error reply):
they describe the client's side of the socket, have codes the daemon never sends, and every
``oneiricctl`` run imports that module, which costs nothing beyond the stdlib, while importing
this one (over thirty classes) costs ~0.6 ms, measured with bytecode.
"""

from __future__ import annotations

from typing import Any, Literal

#: The error codes of SPEC §8: every error's ``code`` is one of them.
ErrorCode = Literal[
    "bad_request",
    "unknown_op",
    "not_found",
    "permission_denied",
    "conflict",
    "timeout",
    "too_large",
    "unavailable",
    "internal",
]

__all__ = [
    "Abandoned",
    "ActivationError",
    "AlreadyRunning",
    "ArtifactError",
    "BadRequest",
    "Busy",
    "ComponentExit",
    "ConfigError",
    "Conflict",
    "DrainTimeout",
    "ErrorCode",
    "ManifestError",
    "NoSpace",
    "NotDurable",
    "NotFound",
    "OneiricError",
    "Paused",
    "PermissionDenied",
    "ProtocolError",
    "PublishError",
    "RemoteRejected",
    "RemoteUnreachable",
    "ReplacedUnconfirmed",
    "RunCancelled",
    "SessionMisuse",
    "SwapFailed",
    "TaskFailed",
    "Timeout",
    "Unavailable",
    "UnsafePath",
    "WrittenUnconfirmed",
]


class OneiricError(Exception):
    """Base of every error oneiric raises on purpose.

    ``code`` is the SPEC §8 error code of the reply it becomes; ``detail`` (None when there is
    nothing more to say) is sent as the error's ``detail`` field and must be encodable as JSON.
    """

    code: ErrorCode = "internal"
    detail: Any = None

    def __init__(self, message: str = "", *, detail: Any = None) -> None:
        super().__init__(message)
        if detail is not None:
            self.detail = detail


# --- request and state errors (the reply codes of SPEC §8) -----------------------------------


class BadRequest(OneiricError):
    code = "bad_request"


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


# --- configuration -----------------------------------------------------------------------------


class ConfigError(OneiricError):
    """The configuration is invalid. ``str()`` names the file, the field path and what was
    expected; ``detail`` is what was expected alone."""

    code = "bad_request"
    detail: str  # always the bare message here (the base class's may be None)

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None) -> None:
        self.file = file
        self.path = path
        where = ", ".join(p for p in (file, f"at {path}" if path else None) if p)
        super().__init__(f"{where}: {message}" if where else message, detail=message)


# --- the control protocol ----------------------------------------------------------------------


class ProtocolError(OneiricError):
    """A request line could not be turned into a request.

    ``id`` is the request's id when it was readable, so the error reply can be correlated.
    """

    def __init__(self, code: ErrorCode, message: str, id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id


class SessionMisuse(OneiricError):
    """The daemon's own code broke the session's rules (say, an event after the final reply):
    always a bug, never the peer's fault."""


class AlreadyRunning(OneiricError):
    """A live daemon already answers on the control socket."""

    code = "conflict"

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"another oneiricd is already answering on {path}; stop it first "
            "(systemctl stop oneiricd) or give this one a different --socket"
        )


# --- the runtime and the domains -----------------------------------------------------------------


class ActivationError(OneiricError):
    """Constructing, starting or health-gating a provider failed; the serving instance (if any)
    was kept."""

    code = "internal"


class NotDurable(OneiricError):
    """Persisting a mutation failed; the mutation was rolled back and has no effect. The
    underlying OS error is the ``__cause__``."""

    code: ErrorCode = "internal"


class NoSpace(NotDurable):
    """The state directory's file system is full (or the quota is used up): the mutation was
    rolled back. Code ``unavailable`` (retry once there is room), not ``internal``: nothing is
    wrong with the daemon, and the message says what to free."""

    code = "unavailable"


class SwapFailed(OneiricError):
    """A swap's activation failed; the previous instance keeps serving."""

    code = "unavailable"


class DrainTimeout(Timeout):
    """Drain gave up; ``detail`` names what is still in flight."""

    def __init__(self, message: str, in_flight: dict[str, int]) -> None:
        super().__init__(message, detail={"in_flight": in_flight})


class TaskFailed(OneiricError):
    """A task or workflow run raised. Code ``conflict`` (gRPC ABORTED ↔ HTTP 409): the request
    was valid and the daemon is fine; the work itself failed. ``detail`` carries the run id,
    the exception type and the duration."""

    code = "conflict"

    def __init__(self, message: str, *, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message, detail=detail or {})


class RunCancelled(OneiricError):
    """A run was cancelled before it finished (the daemon is stopping)."""

    code = "unavailable"


class StartupError(OneiricError):
    """oneiricd could not start; ``exit_status`` is what it exits with (SPEC §6)."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class MissingCapability(Conflict):
    """A provider lacks a capability the caller or the key's ``[requires]`` asks for (SPEC
    §10); the message names the capability and the provider."""


# --- files -------------------------------------------------------------------------------------


class UnsafePath(OSError):
    """A directory the daemon would keep its socket, health file or operator intent in can be
    changed by other users: they could replace those files (an impostor socket, a forged
    intent). ``str()`` names the directory and what to do."""


class ReplacedUnconfirmed(OSError):
    """The file was replaced, but the directory fsync that makes the rename durable failed:
    the new content is what readers see now (and most likely after a crash), unconfirmed.

    An ``OSError``, not a :class:`OneiricError`: it is the file layer's report to its caller
    (the intent store decides what it means), never a reply."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.errno, f"replaced, but the directory sync failed: {cause}")


class WrittenUnconfirmed(OSError):
    """A journal record was written, but flushing it to the device (``fdatasync``) failed:
    readers see it now (and most likely after a crash), unconfirmed. Like
    :class:`ReplacedUnconfirmed`, the file layer's report to the intent store."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.errno, f"written, but the flush to disk failed: {cause}")


# --- component code ------------------------------------------------------------------------


class ComponentExit(RuntimeError):
    """Component code raised ``SystemExit`` or ``KeyboardInterrupt`` (``sys.exit()`` in a
    task, an event handler, ``health()`` or at import). The daemon treats it as that
    component's failure, never as a request to stop itself: only a signal or the service
    manager stops ``oneiricd``. Not a :class:`OneiricError`: it is the component's exception,
    wrapped the way any other exception of component code is."""

    @classmethod
    def from_exit(cls, exc: BaseException, what: str) -> ComponentExit:
        how = f"sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else type(exc).__name__
        return cls(f"{what} raised {how}; component code may not stop the daemon")


class Abandoned(RuntimeError):
    """A component call running in a worker thread was abandoned when the daemon stopped: it
    had not returned within ``stop_timeout``. The thread goes on; nobody waits for it.

    A ``RuntimeError``, not a :class:`OneiricError`: only the component's own caller sees it,
    while the daemon is stopping."""


# -- remote manifests (SPEC §9) -----------------------------------------------------------------
class RemoteRejected(OneiricError):
    """A remote update that must not be applied: the repository answered, but its metadata did
    not verify or its manifest did not validate. ``reason`` is the class of the rejection:
    unsigned, rollback, expired, tampered, oversized, malformed, disallowed_factory, missing,
    invalid."""

    code = "conflict"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"rejected ({reason}): {message}")
        self.reason = reason
        self.message = message


class RemoteUnreachable(Unavailable):
    """The remote source could not be asked (network, HTTP status, missing directory)."""


class ManifestError(ConfigError):
    """A manifest that verified but does not validate; ``reason`` is malformed or
    disallowed_factory."""

    def __init__(
        self, message: str, *, reason: str, file: str | None = None, path: str | None = None
    ) -> None:
        super().__init__(message, file=file, path=path)
        self.reason = reason


class ArtifactError(OneiricError):
    """A wheel that cannot be used (not a zip, unsafe member paths, too large unpacked)."""


class PublishError(OneiricError):
    """A publisher mistake (``oneiricctl manifest ...``), with the fix in its message."""

    code = "bad_request"
