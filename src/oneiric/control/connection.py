"""One control connection's byte pump: a reader loop feeding the sans-IO session, a task per
long request in flight, and replies written whole.

The accept loop (:func:`oneiric.control.server.serve`) makes one :class:`Connection` per peer;
everything a request *means* is the :class:`~oneiric.control.session.Session`'s decision, and
this module acts on the decisions: send an answer, run the handler inline or in a task bounded
per connection, and drop a peer that is gone, idle or stuck.

Where fairness lives: :meth:`Connection._read_loop` takes one decision at a time from the
session (a peer's pipelined input becomes work only as fast as the pump asks for it) and serves
a bounded share per loop turn, admins first (:class:`Turns`); :meth:`Connection._receive`
yields to other connections after :data:`FAIR_READS` reads. Sockets are driven with
anyio.wait_readable()/wait_writable(); server.py's docstring says why. The pump's own clock
(activity, turn budgets) is ``time.monotonic()``: it only measures spans (at ~0.1 µs, against
~0.6 µs for ``anyio.current_time()``, read several times per request).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from typing import Final

import anyio
import anyio.abc
import anyio.lowlevel

from oneiric.control.replies import StreamEvent
from oneiric.control.session import NEED_DATA, PEER_CLOSED, Answer, Dispatch, Handler, Session

__all__ = ["Connection", "Turns"]

log = logging.getLogger(__name__)

RECV_SIZE: Final = 65536
#: A connection that always has data ready yields to the loop after this many reads.
FAIR_READS: Final = 16
#: Requests a connection serves per loop turn before it lets every other task run: its fair
#: share. Admins get more, and readers also wait (briefly) while an admin is being served.
READER_TURN: Final = 4
ADMIN_TURN: Final = 64
#: ... and no connection keeps the loop longer than this per turn, however cheap or costly
#: its requests (the watchdog is pinged from the loop).
TURN_SECONDS: Final = 0.002
#: The longest a reader's request waits for admins to be served (then it goes anyway).
ADMIN_FIRST_WAIT: Final = 0.05


class Turns:
    """Admins first: while any admin connection is working through requests, readers hold
    their next request (up to :data:`ADMIN_FIRST_WAIT`), so an operator is answered ahead of
    any number of readers."""

    def __init__(self) -> None:
        self._admins_busy = 0
        # made only when a reader waits: an admin's request alone allocates nothing
        self._admins_idle: anyio.Event | None = None

    def admin_busy(self) -> None:
        self._admins_busy += 1

    def admin_done(self) -> None:
        self._admins_busy -= 1
        idle = self._admins_idle
        if not self._admins_busy and idle is not None:
            self._admins_idle = None
            idle.set()

    async def reader_turn(self) -> None:
        if self._admins_busy:
            idle = self._admins_idle
            if idle is None:
                idle = self._admins_idle = anyio.Event()
            with anyio.move_on_after(ADMIN_FIRST_WAIT):
                await idle.wait()


def _peer_hung_up(sock: socket.socket) -> bool:
    """After EOF: did the peer close entirely (POLLHUP), or only shut down its writing side?"""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in poller.poll(0))


class _PeerGone(Exception):
    """The connection broke, or the peer stopped reading for longer than the idle timeout.
    (Private to the pump: it never leaves this module.)"""


class Connection:
    """The byte pump of one connection: a reader loop feeding the session, plus one task per
    long request in flight."""

    def __init__(
        self,
        sock: socket.socket,
        session: Session,
        handler: Handler,
        idle_timeout: float,
        max_in_flight: int,
        turns: Turns | None = None,
    ) -> None:
        self._sock = sock
        self._session = session
        self._handler = handler
        self._idle = idle_timeout
        self._slots = anyio.Semaphore(max_in_flight)
        self._send_lock = anyio.Lock()
        self._last_activity = time.monotonic()
        self._scope = anyio.CancelScope()
        self._reads_without_wait = 0
        self._turns = turns or Turns()
        self._admin = session.peer.role == "admin"
        self._drained = anyio.Event()  # set when nothing is in flight (after a half-close)
        self._reading = False  # parked in _receive, waiting for the peer to send
        self._idled = False  # closed by the idle reaper (see close_if_idle)

    @property
    def _pid(self) -> int:
        return self._session.peer.pid

    def close_if_idle(self, now: float) -> None:
        """The server's idle reaper looks at every connection now and then: a peer that sent
        nothing, and had nothing in flight, for ``idle_timeout`` (by ``time.monotonic()``) is
        dropped. Done from outside, not with a timeout around every read: a cancel scope and a
        timer per request were ~8 % of a durable pause's CPU at 64 connections."""
        if (
            self._reading
            and not self._session.in_flight
            and now - self._last_activity >= self._idle
        ):
            self._idled = True
            anyio.notify_closing(self._sock)  # wakes the read with ClosedResourceError

    def abort(self) -> None:
        """The daemon is stopping: break the connection now, so that nothing (a shielded send
        to a peer that stopped reading) waits on the peer."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                if await self._read_loop(tg):
                    tg.cancel_scope.cancel()
                else:
                    # Half-closed (e.g. `echo … | socat`): every request in flight gets its
                    # reply, however long it takes, while the peer is still there to read it.
                    await self._until_drained_or_gone()
        finally:
            summary = self._session.close()
            if summary is not None:
                summary.log()

    async def _until_drained_or_gone(self) -> None:
        """After a half-close: return when nothing is in flight; cancel the work when the
        peer closed entirely (looked at every ``idle_timeout``, as no event announces it)."""
        while self._session.in_flight:
            with anyio.move_on_after(self._idle):
                await self._drained.wait()
                return
            if _peer_hung_up(self._sock):
                log.debug("half-closed control peer pid %d went away", self._pid)
                self._scope.cancel()
                return

    async def _read_loop(self, tg: anyio.abc.TaskGroup) -> bool:
        """Read and act until EOF, idle or error; True means drop in-flight work now.

        Fair share: at most :data:`READER_TURN` (admins :data:`ADMIN_TURN`) requests, and
        :data:`TURN_SECONDS`, per loop turn; a reader's request also waits while an admin is
        being served. So a peer pipelining thousands of requests delays others by a turn,
        never by its backlog, and the loop (and the watchdog) keeps turning."""
        session = self._session
        budget = ADMIN_TURN if self._admin else READER_TURN
        served = 0
        turn_started = time.monotonic()
        busy = False
        try:
            while True:
                decision = session.next_decision()
                if decision is NEED_DATA:
                    if busy:
                        busy = False
                        self._turns.admin_done()
                    data = await self._receive()
                    if data is None:
                        return True
                    session.receive_data(data)
                    continue
                if decision is PEER_CLOSED:
                    return _peer_hung_up(self._sock)
                if self._admin:
                    if not busy:
                        busy = True
                        self._turns.admin_busy()
                else:
                    await self._turns.reader_turn()
                served += 1
                if served > budget or time.monotonic() - turn_started > TURN_SECONDS:
                    await anyio.lowlevel.checkpoint()
                    served, turn_started = 1, time.monotonic()
                    self._reads_without_wait = 0
                if isinstance(decision, Answer):
                    if decision.audit is not None:
                        decision.audit.log()
                    await self._send(decision.data)
                elif isinstance(decision, Dispatch):
                    if decision.inline:  # runs in the reader itself: adds no concurrency
                        await self._run(decision, bounded=False)
                        continue
                    await self._slots.acquire()
                    if decision.accepted is not None:
                        decision.accepted.log()
                    tg.start_soon(self._run, decision, True)
        finally:
            if busy:
                self._turns.admin_done()

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
                self._last_activity = time.monotonic()
                return data
            self._reads_without_wait = 0
            self._reading = True
            try:
                await anyio.wait_readable(self._sock)
            except anyio.ClosedResourceError:
                pass  # close_if_idle (nothing else closes it while it is read)
            finally:
                self._reading = False
            if self._idled:
                log.debug("closing idle control connection from pid %d", self._pid)
                return None

    async def _run(self, d: Dispatch, bounded: bool) -> None:
        """Run the handler for ``d`` and send its events and its one reply."""
        session = self._session

        async def emit(event: StreamEvent) -> None:
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
            self._last_activity = time.monotonic()
            if bounded:
                self._slots.release()
            record = session.finish(d)
            if record is not None:
                record.log()
            if not session.in_flight:
                self._drained.set()

    async def _send(self, data: bytes | memoryview) -> None:
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
            data = memoryview(data)[sent:]  # not a copy of the rest (5.8 MB at 10k keys)
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

    async def _sendall(self, data: bytes | memoryview) -> None:
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
