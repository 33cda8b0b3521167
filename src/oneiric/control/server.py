"""The control socket server (SPEC §8): the accept loop and one byte pump per connection.

Everything a request *means* is decided by the sans-IO :class:`~oneiric.control.session.
Session` (framing, decoding, authorisation, inline vs task, audit, error replies); who the peer
is, by :mod:`oneiric.control.peers`; where the socket comes from, by
:mod:`oneiric.control.listen`. What is left here is I/O: accept connections within
:class:`~oneiric.control.peers.ConnectionLimits`, read bytes into the session, act on each
decision (send an answer, run the handler inline or in a task bounded per connection), write
replies whole, and drop peers that are gone, idle or stuck — so that no request, however
malformed, can hurt the daemon or another client.

Where fairness lives: :meth:`_Connection._read_loop` takes one decision at a time from the
session (a peer's pipelined input becomes work only as fast as the pump asks for it), and
:meth:`_Connection._receive` yields to other connections after :data:`FAIR_READS` reads;
:func:`serve`'s loop is the one place connections are accepted or refused.

Sockets are driven directly with anyio.wait_readable()/wait_writable() rather than through
anyio's SocketListener/UNIXSocketStream: on the asyncio backend those register
`future.set_result` as the selector callback, so cancelling a receive or accept in the same
loop iteration the socket turns readable (every server shutdown; an idle timeout racing a
request) raises InvalidStateError in the event loop (cf. agronholm/anyio#1267).
wait_readable()/wait_writable() tolerate that race, and work on any socket — also one
inherited from systemd (LISTEN_FDS).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
from typing import Final

import anyio
import anyio.abc
import anyio.lowlevel

from oneiric.control.peers import ConnectionLimits, Roles, peer_credentials
from oneiric.control.protocol import encode_error
from oneiric.control.session import (
    NEED_DATA,
    PEER_CLOSED,
    Answer,
    Dispatch,
    Handler,
    Session,
)

__all__ = ["MAX_IN_FLIGHT", "serve"]

log = logging.getLogger(__name__)

MAX_IN_FLIGHT: Final = 64
ACCEPT_BACKOFF: Final = 0.1
RECV_SIZE: Final = 65536
#: A connection that always has data ready yields to the loop after this many reads.
FAIR_READS: Final = 16


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
    :func:`~oneiric.control.listen.bind_control_socket`. ``max_in_flight`` bounds concurrent
    requests per connection: beyond it the connection simply stops being read (back-pressure).
    """
    sock.setblocking(False)
    roles = Roles(admin_group)
    limits = ConnectionLimits(roles)
    last_accept_error = ""

    async def run_connection(client: socket.socket, uid: int) -> None:
        try:
            peer = await roles.identify(client)
            log.debug("control connection from pid=%d uid=%d role=%s", peer.pid, uid, peer.role)
            session = Session(peer, admin_group=admin_group)
            conn = _Connection(client, session, handler, idle_timeout, max_in_flight)
            await conn.run()
        except Exception:
            log.exception("control connection from uid %d failed", uid)
        finally:
            client.close()
            limits.release(uid)

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
                    _pid, uid, _gid = peer_credentials(client)
                except OSError:
                    client.close()
                    continue
                refusal = limits.admit(uid)
                if refusal is not None:
                    _refuse(client, refusal)
                    continue
                tg.start_soon(run_connection, client, uid)
    finally:
        sock.close()


def _refuse(client: socket.socket, message: str) -> None:
    """One error line, best effort (the socket buffer takes it or it is lost), then close."""
    log.warning("refusing a control connection: %s", message)
    with contextlib.suppress(OSError):
        client.send(encode_error(None, "unavailable", message))
    client.close()


def _peer_hung_up(sock: socket.socket) -> bool:
    """After EOF: did the peer close entirely (POLLHUP), or only shut down its writing side?"""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in poller.poll(0))


class _PeerGone(Exception):
    """The connection broke, or the peer stopped reading for longer than the idle timeout.
    (Private to the pump: it never leaves this module.)"""


class _Connection:
    """The byte pump of one connection: a reader loop feeding the session, plus one task per
    long request in flight."""

    def __init__(
        self,
        sock: socket.socket,
        session: Session,
        handler: Handler,
        idle_timeout: float,
        max_in_flight: int,
    ) -> None:
        self._sock = sock
        self._session = session
        self._handler = handler
        self._idle = idle_timeout
        self._slots = anyio.Semaphore(max_in_flight)
        self._send_lock = anyio.Lock()
        self._last_activity = anyio.current_time()
        self._scope = anyio.CancelScope()
        self._reads_without_wait = 0

    @property
    def _pid(self) -> int:
        return self._session.peer.pid

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                if await self._read_loop(tg):
                    tg.cancel_scope.cancel()
                else:
                    # Half-closed (e.g. `echo … | socat`): let in-flight requests answer,
                    # but no longer than the idle timeout.
                    tg.cancel_scope.deadline = anyio.current_time() + self._idle
        finally:
            summary = self._session.close()
            if summary is not None:
                summary.log()

    async def _read_loop(self, tg: anyio.abc.TaskGroup) -> bool:
        """Read and act until EOF, idle or error; True means drop in-flight work now."""
        session = self._session
        while True:
            decision = session.next_decision()
            if decision is NEED_DATA:
                data = await self._receive()
                if data is None:
                    return True
                session.receive_data(data)
            elif decision is PEER_CLOSED:
                return _peer_hung_up(self._sock)
            elif isinstance(decision, Answer):
                if decision.audit is not None:
                    decision.audit.log()
                await self._send(decision.data)
            elif isinstance(decision, Dispatch):
                if decision.inline:  # runs in the reader itself: adds no concurrency to bound
                    await self._run(decision, bounded=False)
                    continue
                await self._slots.acquire()
                if decision.accepted is not None:
                    decision.accepted.log()
                tg.start_soon(self._run, decision, True)

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
                log.debug("control connection from pid %d broke: %s", self._pid, exc)
                return None
            else:
                self._last_activity = anyio.current_time()
                return data
            if self._session.in_flight:  # only a peer with nothing in flight can be idle
                wait = self._idle
            else:
                wait = self._last_activity + self._idle - anyio.current_time()
            self._reads_without_wait = 0
            with anyio.move_on_after(wait):
                await anyio.wait_readable(self._sock)
                continue
            if not self._session.in_flight and (
                anyio.current_time() - self._last_activity >= self._idle
            ):
                log.debug("closing idle control connection from pid %d", self._pid)
                return None

    async def _run(self, d: Dispatch, bounded: bool) -> None:
        """Run the handler for ``d`` and send its events and its one reply."""
        session = self._session

        async def emit(event: object) -> None:
            await self._send(session.event(d, event))

        try:
            try:
                result = await self._handler(d.request, session.peer, emit)
            except Exception as exc:
                reply = session.error(d, exc)
            else:
                reply = session.result(d, result)
            await self._send(reply)
        finally:
            self._last_activity = anyio.current_time()
            if bounded:
                self._slots.release()
            record = session.finish(d)
            if record is not None:
                record.log()

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
            log.debug("dropping control connection from pid %d: %r", self._pid, gone)
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
