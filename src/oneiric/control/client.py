"""A small blocking client for the control socket, used by ``oneiricctl``.

It imports only the standard library and msgspec — no anyio, no server code — so the CLI
starts in little more than the interpreter's own start-up time. One request is in flight
at a time; the connection is opened lazily on the first request and reused after that.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

import msgspec

__all__ = ["AccessDenied", "ControlClient", "ControlError", "DaemonNotRunning", "RemoteError"]

_RECV_SIZE: Final = 65536


class ControlError(Exception):
    """Base of the errors this client raises, so a CLI can catch them in one place."""


class DaemonNotRunning(ControlError):
    """Nothing answers on the control socket (or it went away mid-request)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"cannot reach oneiricd at {path}: {reason}; is oneiricd running? "
            "(systemctl status oneiricd)"
        )


class AccessDenied(ControlError):
    """The socket exists but this user may not connect to it (EACCES)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"permission denied connecting to {path}: access to the control socket is granted "
            "by group membership (the daemon's admin group, 'oneiric' by default); ask an "
            "administrator to add you, then log in again"
        )


class RemoteError(ControlError):
    """The daemon answered with an error reply (or did not answer in time: code "timeout")."""

    def __init__(self, code: str, message: str, detail: Any = None) -> None:
        self.code = code
        self.message = message
        self.detail = detail
        super().__init__(f"{message} [{code}]")


class _Error(msgspec.Struct):
    code: str = "internal"
    message: str = ""
    detail: Any = None


class _Reply(msgspec.Struct):
    id: int | None = None
    ok: bool | None = None
    result: Any = None
    error: _Error | None = None
    event: Any = msgspec.UNSET


_reply_decoder: Final = msgspec.json.Decoder(_Reply)
_encoder: Final = msgspec.json.Encoder()


class ControlClient:
    """Talk to oneiricd over its Unix socket.

    ``timeout`` bounds connecting and each wait for a reply line in :meth:`call`;
    :meth:`stream` waits for events indefinitely (``watch`` may be quiet for hours), bounding
    only the connect. Use ``timeout=None`` for requests the daemon itself bounds (a long
    ``drain``). After a timeout or a broken connection the socket is dropped and the next
    request reconnects.
    """

    def __init__(self, path: str, *, timeout: float | None = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._ids = itertools.count(1)

    def connect(self) -> None:
        """Connect now (otherwise the first request does); raises the errors above."""
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise self._connect_error(exc) from exc
        self._sock = sock
        self._buf.clear()

    def _connect_error(self, exc: OSError) -> ControlError:
        if isinstance(exc, PermissionError):
            return AccessDenied(self.path)
        if isinstance(exc, FileNotFoundError):
            where = os.path.dirname(self.path) or "."
            if os.path.isdir(where):
                return DaemonNotRunning(self.path, "no socket file exists there")
            return DaemonNotRunning(self.path, f"the directory {where} does not exist")
        if isinstance(exc, ConnectionRefusedError):
            return DaemonNotRunning(
                self.path, "the socket file exists but nothing accepts connections (refused)"
            )
        if isinstance(exc, (BlockingIOError, TimeoutError)):  # EAGAIN: backlog full
            return RemoteError(
                "unavailable", f"oneiricd at {self.path} is not accepting connections; try again"
            )
        return DaemonNotRunning(self.path, exc.strerror or str(exc))

    def call(self, op: str, **args: Any) -> Any:
        """Send one request and return its result; raises :class:`RemoteError` on an error
        reply. Events (if any) are ignored."""
        return self._request(op, args, None, self.timeout)

    def stream(self, op: str, on_event: Callable[[Any], None], **args: Any) -> Any:
        """Send one request, pass each streamed event to ``on_event``, return the result."""
        return self._request(op, args, on_event, None)

    def _request(
        self,
        op: str,
        args: dict[str, Any],
        on_event: Callable[[Any], None] | None,
        timeout: float | None,
    ) -> Any:
        self.connect()
        assert self._sock is not None
        req_id = next(self._ids)
        body = {k: v for k, v in args.items() if v is not None}
        line = _encoder.encode({"id": req_id, "op": op, **body}) + b"\n"
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(line)
            self._sock.settimeout(timeout)
            while True:
                reply = self._read_reply()
                if reply.id not in (req_id, None):
                    continue  # a late reply to an earlier, abandoned request
                if reply.event is not msgspec.UNSET:
                    if on_event is not None:
                        on_event(reply.event)
                    continue
                if reply.ok:
                    return reply.result
                err = reply.error or _Error(message="error reply without details")
                raise RemoteError(err.code, err.message, err.detail)
        except TimeoutError:
            self.close()
            raise RemoteError(
                "timeout", f"no reply to {op!r} from oneiricd at {self.path} within {timeout} s"
            ) from None
        except OSError as exc:
            self.close()
            raise DaemonNotRunning(
                self.path, f"the connection broke ({exc.strerror or exc})"
            ) from exc
        except msgspec.DecodeError as exc:
            self.close()
            raise RemoteError("internal", f"unreadable reply from oneiricd: {exc}") from exc

    def _read_reply(self) -> _Reply:
        assert self._sock is not None
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                if line.strip():
                    return _reply_decoder.decode(line)
                continue
            chunk = self._sock.recv(_RECV_SIZE)
            if not chunk:
                self.close()
                raise DaemonNotRunning(
                    self.path, "the daemon closed the connection before replying"
                )
            self._buf += chunk

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf.clear()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
