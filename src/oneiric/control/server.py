"""The control socket server (SPEC §8): binding, peer roles, per-connection request handling.

The daemon supplies one :class:`Handler`; this module owns everything between it and the
socket — framing, decoding, the reader/admin split decided by ``SO_PEERCRED``, concurrency
per connection, idle and dead-peer handling, error translation and the audit log — so that
no request, however malformed, can hurt the daemon or another client.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import select
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, Protocol

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from oneiric.control.protocol import (
    MUTATING_OPS,
    EmitRequest,
    Frame,
    LineFramer,
    ProtocolError,
    Request,
    TooLong,
    decode_request,
    encode_error,
    encode_event,
    encode_ok,
)
from oneiric.errors import OneiricError

__all__ = [
    "AlreadyRunning",
    "Emit",
    "Handler",
    "Peer",
    "bind_control_socket",
    "probe_live",
    "serve",
]

log = logging.getLogger(__name__)
audit_log = logging.getLogger("oneiric.audit")

MAX_SOCKET_PATH: Final = 107  # sizeof(sun_path) - 1 on Linux
PROBE_TIMEOUT: Final = 2.0
LISTEN_BACKLOG: Final = 128
MAX_IN_FLIGHT: Final = 64
#: Connections served at once, and per unprivileged uid: a reader who can connect must not be
#: able to use up the daemon's file descriptors (beyond the cap: one `unavailable` line, close).
MAX_CONNECTIONS: Final = 256
MAX_PER_UID: Final = 32
#: Refused (permission_denied) requests audited per connection before they are summarised.
AUDIT_DENIED_PER_CONNECTION: Final = 5
_SO_PEERGROUPS: Final = getattr(socket, "SO_PEERGROUPS", 59)  # Linux ≥ 4.13
ROLE_CACHE_TTL: Final = 60.0
ACCEPT_BACKOFF: Final = 0.1
RECV_SIZE: Final = 65536
#: Ops answered inline by the connection's reader (no task per request): they return promptly
#: (pause/resume wait only for their durable commit), so pipelined requests keep their order and
#: the common case costs one loop turn. Ops that may wait long (watch, drain, swap, run, reload)
#: get a task each, bounded by ``max_in_flight``.
INLINE_OPS: Final = frozenset({"ping", "status", "health", "explain", "list", "pause", "resume"})
#: A connection that always has data ready yields to the loop after this many reads.
FAIR_READS: Final = 16
_UCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid

Role = Literal["admin", "reader"]


class AlreadyRunning(OneiricError):
    """A live daemon already answers on the control socket."""

    code = "conflict"

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"another oneiricd is already answering on {path}; stop it first "
            "(systemctl stop oneiricd) or give this one a different --socket"
        )


class Peer(msgspec.Struct, frozen=True):
    """Who is on the other end of a connection, from ``SO_PEERCRED`` at connect time."""

    pid: int
    uid: int
    gid: int
    role: Role


Emit = Callable[[Any], Awaitable[None]]
"""Sends ``{"id": <request id>, "event": ...}`` on the request's connection."""


class Handler(Protocol):
    """The daemon's side: answer one decoded, authorised request.

    Return the result (anything msgspec encodes) or raise :class:`OneiricError` (its ``.code``
    and message become the error reply). Streaming ops call ``emit`` before returning.
    """

    async def __call__(self, request: Request, peer: Peer, emit: Emit) -> Any: ...


# ---------------------------------------------------------------------------------------------
# Binding


def bind_control_socket(path: str, *, mode: int, group: str | None) -> socket.socket:
    """Create the listening control socket at ``path`` (blocking; call before serving).

    Refuses with :class:`AlreadyRunning` when a live daemon answers there; removes a stale
    file. The socket is bound under a umask that yields exactly ``mode``, so it is never
    briefly more open than configured.
    """
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise OneiricError(
            f"control socket path {path} is {size} bytes; Unix socket paths may be at most "
            f"{MAX_SOCKET_PATH} bytes, choose a shorter one"
        )
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        os.makedirs(parent, exist_ok=True)
        os.chmod(parent, 0o755)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        old_umask = os.umask(0o777 & ~mode)
        try:
            sock.bind(path)
            bound = True
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        _apply_group(path, group)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        if bound:
            _unlink_quietly(path)
        raise
    log.debug("control socket bound at %s (mode %o)", path, mode)
    return sock


def _clear_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise OneiricError(f"control socket path {path} is a directory; remove it or pick another")
    if not stat.S_ISSOCK(st.st_mode):
        raise OneiricError(
            f"control socket path {path} exists and is not a socket; refusing to remove it "
            "(check --socket / [daemon] socket)"
        )
    _probe(path)
    log.info("removing stale control socket %s (nothing answers on it)", path)
    _unlink_quietly(path)


def probe_live(path: str) -> None:
    """Raise :class:`AlreadyRunning` when a live daemon answers at ``path`` (a missing or
    dead socket file passes)."""
    if os.path.exists(path):
        _probe(path)


def _probe(path: str) -> None:
    """Raise :class:`AlreadyRunning` unless the socket at ``path`` is provably dead."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return
    except (BlockingIOError, TimeoutError) as exc:  # listening, but its backlog is full: alive
        raise AlreadyRunning(path) from exc
    except OSError as exc:
        raise OneiricError(f"cannot tell whether a daemon answers on {path}: {exc}") from exc
    finally:
        probe.close()
    raise AlreadyRunning(path)


def _apply_group(path: str, group: str | None) -> None:
    if group is None:
        return
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        log.debug("group %r does not exist; control socket %s keeps its default group", group, path)
        return
    try:
        os.chown(path, -1, gid)
    except PermissionError as exc:
        log.warning("cannot give control socket %s to group %r: %s", path, group, exc)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# ---------------------------------------------------------------------------------------------
# Roles


def _in_group(group: str, uid: int, gid: int, groups: tuple[int, ...] | None) -> bool:
    """Whether the peer belongs to ``group``: its primary ``gid`` or, when the kernel told us
    (SO_PEERGROUPS), the supplementary groups it really holds; otherwise the user database's
    view of ``uid``. Blocking (NSS)."""
    try:
        target = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    if gid == target:
        return True
    if groups is not None:
        return target in groups
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return False
    return target in os.getgrouplist(pw.pw_name, pw.pw_gid)


class _Roles:
    """Decides admin vs reader; caches group lookups briefly so a membership change is
    picked up without a restart, yet a busy client does not hammer NSS."""

    def __init__(self, admin_group: str | None, ttl: float = ROLE_CACHE_TTL) -> None:
        self._group = admin_group
        self._ttl = ttl
        self._own_uid = os.getuid()
        self._cache: dict[tuple[int, int, tuple[int, ...] | None], tuple[float, bool]] = {}

    def privileged(self, uid: int) -> bool:
        return uid in (0, self._own_uid)

    async def role(self, uid: int, gid: int, groups: tuple[int, ...] | None = None) -> Role:
        if self.privileged(uid):
            return "admin"
        if self._group is None:
            return "reader"
        key = (uid, gid, groups)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            is_admin = hit[1]
        else:
            is_admin = await anyio.to_thread.run_sync(_in_group, self._group, uid, gid, groups)
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[key] = (time.monotonic() + self._ttl, is_admin)
        return "admin" if is_admin else "reader"


# ---------------------------------------------------------------------------------------------
# Serving
#
# Sockets are driven directly with anyio.wait_readable()/wait_writable() rather than through
# anyio's SocketListener/UNIXSocketStream: on the asyncio backend those register
# `future.set_result` as the selector callback, so cancelling a receive or accept in the same
# loop iteration the socket turns readable (every server shutdown; an idle timeout racing a
# request) raises InvalidStateError in the event loop (cf. agronholm/anyio#1267).
# wait_readable()/wait_writable() tolerate that race, and work on any socket — also one
# inherited from systemd (LISTEN_FDS).


async def serve(
    sock: socket.socket,
    handler: Handler,
    *,
    admin_group: str | None,
    idle_timeout: float,
    max_in_flight: int = MAX_IN_FLIGHT,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve control connections on an already-bound listening socket until cancelled.

    Takes ownership of ``sock`` (closed on return; the file is the caller's to unlink), so a
    socket passed in by systemd (``LISTEN_FDS``) works the same as one from
    :func:`bind_control_socket`. ``max_in_flight`` bounds concurrent requests per connection:
    beyond it the connection simply stops being read (back-pressure).
    """
    sock.setblocking(False)
    roles = _Roles(admin_group)
    per_uid: dict[int, int] = {}
    last_accept_error = ""

    async def run_connection(conn: _Connection, uid: int) -> None:
        try:
            await conn.run()
        finally:
            per_uid[uid] -= 1
            if not per_uid[uid]:
                del per_uid[uid]

    try:
        async with anyio.create_task_group() as tg:
            task_status.started()
            while True:
                await anyio.lowlevel.checkpoint()
                try:
                    client, _ = sock.accept()
                except BlockingIOError:
                    await anyio.wait_readable(sock)
                    continue
                except OSError as exc:  # e.g. EMFILE: keep serving, back off
                    if str(exc) != last_accept_error:  # once per distinct problem
                        log.warning("control socket accept failed: %s", exc)
                        last_accept_error = str(exc)
                    await anyio.sleep(ACCEPT_BACKOFF)
                    continue
                last_accept_error = ""
                client.setblocking(False)
                try:
                    _pid, uid, _gid = _peer_credentials(client)
                except OSError:
                    client.close()
                    continue
                refusal = _over_limit(per_uid, uid, roles)
                if refusal is not None:
                    _refuse(client, refusal)
                    continue
                per_uid[uid] = per_uid.get(uid, 0) + 1
                conn = _Connection(
                    client,
                    handler,
                    roles=roles,
                    admin_group=admin_group,
                    idle_timeout=idle_timeout,
                    max_in_flight=max_in_flight,
                )
                tg.start_soon(run_connection, conn, uid)
    finally:
        sock.close()


def _over_limit(per_uid: dict[int, int], uid: int, roles: _Roles) -> str | None:
    """Why a new connection from ``uid`` is refused, or None. Root and the daemon's own uid
    are exempt from the per-uid cap (an operator can always get in); nobody is from the total."""
    if sum(per_uid.values()) >= MAX_CONNECTIONS:
        return f"too many control connections ({MAX_CONNECTIONS}); try again shortly"
    if not roles.privileged(uid) and per_uid.get(uid, 0) >= MAX_PER_UID:
        return f"too many control connections from uid {uid} (at most {MAX_PER_UID})"
    return None


def _refuse(client: socket.socket, message: str) -> None:
    """One error line, best effort (the socket buffer takes it or it is lost), then close."""
    log.warning("refusing a control connection: %s", message)
    with contextlib.suppress(OSError):
        client.send(encode_error(None, "unavailable", message))
    client.close()


def _peer_groups(sock: socket.socket) -> tuple[int, ...] | None:
    """The supplementary groups the peer process really holds (SO_PEERGROUPS), or None when
    the kernel cannot say (then the user database decides)."""
    try:
        raw = sock.getsockopt(
            socket.SOL_SOCKET, _SO_PEERGROUPS, 1024
        )  # 256 gids: the most Python allows
    except OSError:
        return None
    return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])


def _peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def _peer_hung_up(sock: socket.socket) -> bool:
    """After EOF: did the peer close entirely (POLLHUP), or only shut down its writing side?"""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in poller.poll(0))


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _target(req: Request) -> str:
    if isinstance(req, EmitRequest):
        return req.topic
    domain: str | None = getattr(req, "domain", None)
    key: str | None = getattr(req, "key", None)
    if domain is None:
        return "*"
    return domain if key is None else f"{domain}/{key}"


def _op(req: Request) -> str:
    return str(type(req).__struct_config__.tag)


class _PeerGone(Exception):
    """The connection broke, or the peer stopped reading for longer than the idle timeout."""


class _Connection:
    """One client connection: a reader loop plus one task per in-flight request."""

    def __init__(
        self,
        sock: socket.socket,
        handler: Handler,
        *,
        roles: _Roles,
        admin_group: str | None,
        idle_timeout: float,
        max_in_flight: int,
    ) -> None:
        self._sock = sock
        self._handler = handler
        self._roles = roles
        self._admin_group = admin_group
        self._idle = idle_timeout
        self._slots = anyio.Semaphore(max_in_flight)
        self._send_lock = anyio.Lock()
        self._in_flight = 0
        self._last_activity = anyio.current_time()
        self._scope = anyio.CancelScope()
        self._peer = Peer(pid=0, uid=-1, gid=-1, role="reader")
        self._reads_without_wait = 0
        self._denied_count = 0

    async def run(self) -> None:
        try:
            pid, uid, gid = _peer_credentials(self._sock)
            role = await self._roles.role(uid, gid, _peer_groups(self._sock))
            self._peer = Peer(pid=pid, uid=uid, gid=gid, role=role)
            log.debug("control connection from pid=%d uid=%d role=%s", pid, uid, self._peer.role)
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                if await self._read_loop(tg):
                    tg.cancel_scope.cancel()
                else:
                    # Half-closed (e.g. `echo … | socat`): let in-flight requests answer,
                    # but no longer than the idle timeout.
                    tg.cancel_scope.deadline = anyio.current_time() + self._idle
        except Exception:
            log.exception("control connection from pid %d failed", self._peer.pid)
        finally:
            if self._denied_count > AUDIT_DENIED_PER_CONNECTION:
                audit_log.info(
                    "audit uid=%d pid=%d refused %d more mutating request(s) on this connection",
                    self._peer.uid,
                    self._peer.pid,
                    self._denied_count - AUDIT_DENIED_PER_CONNECTION,
                )
            self._sock.close()

    async def _read_loop(self, tg: anyio.abc.TaskGroup) -> bool:
        """Read and dispatch until EOF, idle or error; True means drop in-flight work now."""
        framer = LineFramer()
        while True:
            data = await self._receive()
            if data is None:
                return True
            if not data:
                return _peer_hung_up(self._sock)
            for frame in framer.feed(data):
                await self._dispatch(frame, tg)

    async def _receive(self) -> bytes | None:
        """Next chunk; ``b""`` at EOF; None when broken or idle for ``idle_timeout``."""
        self._reads_without_wait += 1
        if self._reads_without_wait >= FAIR_READS:  # a flooding peer must not starve the loop
            self._reads_without_wait = 0
            await anyio.lowlevel.checkpoint()
        while True:
            try:
                data = self._sock.recv(RECV_SIZE)
            except BlockingIOError:
                pass
            except OSError as exc:  # ECONNRESET and the like
                log.debug("control connection from pid %d broke: %s", self._peer.pid, exc)
                return None
            else:
                self._last_activity = anyio.current_time()
                return data
            if self._in_flight:
                wait = self._idle
            else:
                wait = self._last_activity + self._idle - anyio.current_time()
            self._reads_without_wait = 0
            with anyio.move_on_after(wait):
                await anyio.wait_readable(self._sock)
                continue
            if not self._in_flight and (anyio.current_time() - self._last_activity >= self._idle):
                log.debug("closing idle control connection from pid %d", self._peer.pid)
                return None

    async def _dispatch(self, frame: Frame, tg: anyio.abc.TaskGroup) -> None:
        if isinstance(frame, TooLong):
            message = f"request line longer than {frame.limit} bytes; it was discarded"
            await self._send(encode_error(None, "too_large", message))
            return
        try:
            req = decode_request(frame)
        except ProtocolError as exc:
            await self._send(encode_error(exc.id, exc.code, exc.message))
            return
        op = _op(req)
        if op in MUTATING_OPS and self._peer.role != "admin":
            self._audit(req, "permission_denied")
            await self._send(encode_error(req.id, "permission_denied", self._denied(op)))
            return
        if op in INLINE_OPS:  # runs in the reader itself: adds no concurrency to bound
            self._in_flight += 1
            await self._handle(req, bounded=False)
            return
        await self._slots.acquire()
        self._in_flight += 1
        if op in MUTATING_OPS:
            # long ops (drain, swap, reload, run) take effect before they finish waiting: the
            # audit trail must not depend on the client waiting for the outcome line
            self._audit(req, "accepted")
        tg.start_soon(self._handle, req)

    def _denied(self, op: str) -> str:
        who = "only root and the daemon's own user"
        if self._admin_group is not None:
            who = f"only root, the daemon's own user and members of group '{self._admin_group}'"
        return f"{op!r} changes the daemon; {who} may do this"

    async def _handle(self, req: Request, bounded: bool = True) -> None:
        op = _op(req)
        outcome = "cancelled"

        async def emit(event: Any) -> None:
            await self._send(encode_event(req.id, event))

        try:
            try:
                reply = encode_ok(req.id, await self._handler(req, self._peer, emit))
                outcome = "ok"
            except Exception as raised:
                exc = _unwrap(raised)
                if isinstance(exc, OneiricError):
                    code, message, detail = exc.code, str(exc), getattr(exc, "detail", None)
                else:
                    log.exception("control request %r (id %d) failed", op, req.id)
                    code, message, detail = "internal", f"internal error: {exc!r}", None
                reply = encode_error(req.id, code, message, detail)
                outcome = code
            await self._send(reply)
        finally:
            self._in_flight -= 1
            self._last_activity = anyio.current_time()
            if bounded:
                self._slots.release()
            if op in MUTATING_OPS:
                self._audit(req, outcome)

    async def _send(self, data: bytes) -> None:
        """Write one line; a dead or stuck peer ends this connection, never the daemon."""
        if not self._send_lock.locked():
            # Fast path: nobody is mid-write and the kernel buffer takes the whole line.
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # the slow path below reports the broken peer
            if sent == len(data):
                return
            data = data[sent:]
        # A line, once begun, is finished whole or the connection is dropped: a cancelled
        # request must not leave half a line for the next reply to run into. Shielded, and
        # bounded by the idle timeout (a peer that stops reading is dropped).
        gone: BaseException | None = None
        with anyio.CancelScope(shield=True):
            async with self._send_lock:
                try:
                    with anyio.fail_after(self._idle):
                        await self._sendall(data)
                except (_PeerGone, TimeoutError) as exc:
                    gone = exc
        if gone is not None:
            log.debug("dropping control connection from pid %d: %r", self._peer.pid, gone)
            self._scope.cancel()
            await anyio.lowlevel.checkpoint()  # delivers the cancellation
            raise gone  # pragma: no cover - the checkpoint above raises the cancellation

    async def _sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                await anyio.wait_writable(self._sock)
                continue
            except OSError as exc:  # EPIPE, ECONNRESET
                raise _PeerGone(str(exc)) from exc
            view = view[sent:]

    def _audit(self, req: Request, outcome: str) -> None:
        if outcome == "permission_denied":
            self._denied_count += 1
            if self._denied_count > AUDIT_DENIED_PER_CONNECTION:
                return  # summarised when the connection ends
        target = _target(req)
        audit_log.info(
            "audit uid=%d pid=%d op=%s target=%s note=%r outcome=%s",
            self._peer.uid,
            self._peer.pid,
            _op(req),
            # quoted when it has a newline or other control characters: never a forged line
            target if target.isprintable() else repr(target),
            getattr(req, "note", None),
            outcome,
        )
