"""A small blocking client for the control socket, used by ``oneiricctl``.

It imports only ``os``, ``time``, ``_socket`` and (through :mod:`oneiric.control.wirejson`)
``_json`` from the standard library — no msgspec, no anyio, no server code, not even
:mod:`json` (whose import alone costs ~0.7× the bare interpreter) nor :mod:`typing` at run
time — so the CLI starts in little more than the interpreter's own start-up time. One
request is in flight at a time; the connection is opened lazily on the first request and
reused after that. A connect that finds the daemon's listen backlog full (EAGAIN) is retried
until the timeout.
"""

from __future__ import annotations

# The C socket type itself: ``socket.py`` only wraps it (makefile, sendfile, enum-typed
# properties), and building those enums plus importing selectors costs ~2.5 ms of every
# oneiricctl run. connect/settimeout/sendall/recv/close, their OSError subclasses and
# TimeoutError are the same objects either way.
import _socket
import os
import time

from oneiric.control import wirejson

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any, Final

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


class _Unreadable(Exception):
    """A reply line that is not a well-formed reply object (bad JSON or wrong field types)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _decode_reply(line: bytes) -> dict[str, Any]:
    """Parse one reply line and check the fields this client interprets (SPEC §8): ``id`` an
    integer or null, ``ok`` a boolean or null, ``error`` an object (or null) whose ``code`` and
    ``message`` are strings. Unknown fields are ignored (a newer daemon may add some)."""
    try:
        reply = wirejson.loads(line, _reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise _Unreadable(str(exc)) from exc
    if not isinstance(reply, dict):
        raise _Unreadable(f"expected a JSON object, got {_kind(reply)}")
    checks = (("id", int, "an integer"), ("ok", bool, "a boolean"), ("error", dict, "an object"))
    for name, kind, what in checks:
        value = reply.get(name)
        if value is not None and (type(value) is not kind):  # bool is not an id
            raise _Unreadable(f"{name!r} must be {what} or null, got {_kind(value)}")
    error: dict[str, Any] = reply.get("error") or {}
    for name in ("code", "message"):
        if not isinstance(error.get(name, ""), str):
            raise _Unreadable(f"'error.{name}' must be a string, got {_kind(error[name])}")
    return reply


def _encode_request(message: dict[str, Any]) -> bytes:
    """One compact request line; non-ASCII text travels as UTF-8, as the daemon writes it.
    NaN and infinities raise ``ValueError`` (they are not JSON; the daemon would refuse the
    line), anything JSON cannot express ``TypeError``."""
    return wirejson.dumps(message).encode() + b"\n"


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
        self._sock: _socket.socket | None = None
        self._buf = bytearray()
        self._last_id = 0

    def connect(self) -> None:
        """Connect now (otherwise the first request does); raises the errors above."""
        if self._sock is not None:
            return
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        pause = 0.001
        while True:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except BlockingIOError as exc:
                # EAGAIN: the listen backlog is full for a moment (a connect flood); the
                # daemon accepts everything queued each turn, so try again until the timeout
                sock.close()
                if deadline is not None and time.monotonic() + pause > deadline:
                    raise self._connect_error(exc) from exc
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
                continue
            except OSError as exc:
                sock.close()
                raise self._connect_error(exc) from exc
            break
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
        return self._request(op, args, None, self.timeout, False)[0]

    def call_raw(self, op: str, **args: Any) -> tuple[Any, bytes | None]:
        """:meth:`call`, and the result's own bytes when they are exactly what
        ``json.dumps(result, separators=(",", ":"), ensure_ascii=False)`` would write (else
        None): a client printing the result as JSON prints them as they came
        (:func:`oneiric.control.wirejson.ok_result` says when)."""
        return self._request(op, args, None, self.timeout, True)

    def stream(self, op: str, on_event: Callable[[Any], None], **args: Any) -> Any:
        """Send one request, pass each streamed event to ``on_event``, return the result."""
        return self._request(op, args, on_event, None, False)[0]

    def stream_raw(
        self, op: str, on_event: Callable[[Any], None], **args: Any
    ) -> tuple[Any, bytes | None]:
        """:meth:`stream`, and the result's own bytes as :meth:`call_raw` gives them."""
        return self._request(op, args, on_event, None, True)

    def _request(
        self,
        op: str,
        args: dict[str, Any],
        on_event: Callable[[Any], None] | None,
        timeout: float | None,
        raw: bool,
    ) -> tuple[Any, bytes | None]:
        self.connect()
        assert self._sock is not None
        self._last_id += 1
        req_id = self._last_id
        body = {k: v for k, v in args.items() if v is not None}
        line = _encode_request({"id": req_id, "op": op, **body})
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(line)
            self._sock.settimeout(timeout)
            while True:
                reply_line = self._read_line()
                if raw:
                    plain = wirejson.ok_result(reply_line, req_id, _reject_constant)
                    if plain is not None:
                        return plain
                reply = _decode_reply(reply_line)
                if reply.get("id") not in (req_id, None):
                    continue  # a late reply to an earlier, abandoned request
                if "event" in reply:
                    if on_event is not None:
                        on_event(reply["event"])
                    continue
                if reply.get("ok"):
                    return reply.get("result"), None
                err = reply.get("error")
                if err is None:
                    err = {"message": "error reply without details"}
                raise RemoteError(
                    err.get("code", "internal"), err.get("message", ""), err.get("detail")
                )
        except TimeoutError:
            self.close()
            raise RemoteError(
                "timeout",
                f"no reply to {op!r} from oneiricd at {self.path} within {timeout} s (the "
                "daemon may still be carrying it out: check `oneiricctl status`)",
            ) from None
        except OSError as exc:
            self.close()
            raise DaemonNotRunning(
                self.path, f"the connection broke ({exc.strerror or exc})"
            ) from exc
        except _Unreadable as exc:
            self.close()
            raise RemoteError("internal", f"unreadable reply from oneiricd: {exc}") from exc

    def _read_line(self) -> bytes:
        """The next non-blank line. A reply can be megabytes (``status`` at 10,000 components):
        its chunks are searched for the newline once each, kept apart and joined once."""
        assert self._sock is not None
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                with memoryview(self._buf) as view:  # one copy of the line, not two
                    line = bytes(view[:nl])
                del self._buf[: nl + 1]
            else:
                parts = [bytes(self._buf)]
                self._buf.clear()
                while True:
                    chunk = self._sock.recv(_RECV_SIZE)
                    if not chunk:
                        self.close()
                        raise DaemonNotRunning(
                            self.path, "the daemon closed the connection before replying"
                        )
                    nl = chunk.find(b"\n")
                    if nl >= 0:
                        parts.append(chunk[:nl])
                        self._buf += chunk[nl + 1 :]
                        break
                    parts.append(chunk)
                line = b"".join(parts)
            if line.strip():
                return line

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
