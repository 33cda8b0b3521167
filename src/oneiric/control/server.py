"""The control socket server (SPEC §8): the accept loop and one byte pump per connection.

Everything a request *means* is decided by the sans-IO :class:`~oneiric.control.session.
Session` (framing, decoding, authorisation, inline vs task, audit, error replies); who the peer
is, by :mod:`oneiric.control.peers`; where the socket comes from, by
:mod:`oneiric.control.listen`. What is left here is I/O: accept connections within
:class:`~oneiric.control.peers.ConnectionLimits` and hand each to its byte pump
(:mod:`oneiric.control.connection`), which reads bytes into the session, acts on each
decision, writes replies whole and drops peers that are gone, idle or stuck — so that no
request, however malformed, can hurt the daemon or another client.

Where fairness lives: each connection's pump (:class:`~oneiric.control.connection.Connection`)
serves a bounded share per loop turn, admins first; :func:`serve`'s loop is the one place
connections are accepted (all that are queued, each turn) or refused (logged at a bounded
rate), and on the way out it breaks every connection so no peer holds the daemon's stop up.

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
import socket
import time
from collections import Counter
from typing import Final

import anyio
import anyio.abc
import anyio.lowlevel

from oneiric.control.connection import Connection, Turns
from oneiric.control.peers import ConnectionLimits, Roles, peer_credentials, peer_groups
from oneiric.control.protocol import encode_error
from oneiric.control.session import Handler, RequestStats, Session

# Turns is re-exported: it has always been importable from here
__all__ = ["MAX_IN_FLIGHT", "Turns", "serve"]

log = logging.getLogger(__name__)

MAX_IN_FLIGHT: Final = 64
ACCEPT_BACKOFF: Final = 0.1
#: Connections accepted per loop turn at most (then the loop serves everyone else once).
ACCEPT_BATCH: Final = 256
#: At the total cap, loop turns to let closed connections go before refusing one.
FULL_RETRIES: Final = 3
#: Idle connections are looked for every ``idle_timeout`` × this: one is closed between
#: ``idle_timeout`` and 1.25 × ``idle_timeout`` after its last activity.
REAP_EVERY: Final = 0.25


async def serve(
    sock: socket.socket,
    handler: Handler,
    *,
    admin_group: str | None,
    idle_timeout: float,
    max_in_flight: int = MAX_IN_FLIGHT,
    stats: RequestStats | None = None,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve control connections on an already-bound listening socket until cancelled.

    Takes ownership of ``sock`` (closed on return; the file is the caller's to unlink), so a
    socket passed in by systemd (``LISTEN_FDS``) works the same as one from
    :func:`~oneiric.control.listen.bind_control_socket`. ``max_in_flight`` bounds concurrent
    requests per connection: beyond it the connection simply stops being read (back-pressure).
    """
    sock.setblocking(False)
    stats = Counter() if stats is None else stats
    roles = Roles(admin_group)
    limits = ConnectionLimits()
    turns = Turns()
    conns: set[Connection] = set()
    last_accept_error = ""

    async def run_connection(client: socket.socket, uid: int, admin: bool) -> None:
        conn: Connection | None = None
        try:
            peer = await roles.identify(client)
            log.debug("control connection from pid=%d uid=%d role=%s", peer.pid, uid, peer.role)
            session = Session(peer, admin_group=admin_group, stats=stats)
            conn = Connection(client, session, handler, idle_timeout, max_in_flight, turns)
            conns.add(conn)
            await conn.run()
        except Exception:
            log.exception("control connection from uid %d failed", uid)
        finally:
            if conn is not None:
                conns.discard(conn)
            client.close()
            limits.release(uid, admin)

    try:
        await roles.refresh()  # the admin group's gid, for telling its members at accept time
        async with anyio.create_task_group() as tg:
            tg.start_soon(_reap_idle, conns, idle_timeout)
            task_status.started()
            try:
                while True:
                    await anyio.wait_readable(sock)
                    # Everything queued, not one connection per loop turn: under a connect
                    # flood an operator's connection waits one turn, not the whole backlog.
                    for _ in range(ACCEPT_BATCH):
                        try:
                            client, _ = sock.accept()
                        except BlockingIOError:
                            break
                        except OSError as exc:  # e.g. EMFILE: keep serving, back off
                            if str(exc) != last_accept_error:  # once per distinct problem
                                log.warning("control socket accept failed: %s", exc)
                                last_accept_error = str(exc)
                            await anyio.sleep(ACCEPT_BACKOFF)
                            break
                        last_accept_error = ""
                        client.setblocking(False)
                        try:
                            _pid, uid, gid = peer_credentials(client)
                            groups = peer_groups(client)
                        except OSError:
                            client.close()
                            continue
                        admin = roles.admin_now(uid, gid, groups) is True
                        refusal = limits.admit(uid, admin)
                        for _ in range(FULL_RETRIES):
                            if refusal is None or not limits.full:
                                break
                            # at the total cap: connections whose peers already left (a
                            # connect/close burst) are released once their tasks run
                            await anyio.lowlevel.checkpoint()
                            refusal = limits.admit(uid, admin)
                        if refusal is not None:
                            limits.log_refusal(uid, refusal)
                            _refuse(client, refusal)
                            continue
                        tg.start_soon(run_connection, client, uid, admin)
                    await anyio.lowlevel.checkpoint()
            finally:
                # Stopping: no peer may hold the daemon's exit up (a client that stopped
                # reading would keep a reply's shielded send waiting for idle_timeout).
                for conn in list(conns):
                    conn.abort()
    finally:
        sock.close()


async def _reap_idle(conns: set[Connection], idle_timeout: float) -> None:
    """Drop connections idle for ``idle_timeout`` (see :meth:`Connection.close_if_idle`); one
    wake-up per quarter of it (75 s by default) whatever the number of connections."""
    while True:
        await anyio.sleep(max(idle_timeout * REAP_EVERY, 0.001))
        now = time.monotonic()
        for conn in list(conns):
            conn.close_if_idle(now)


def _refuse(client: socket.socket, message: str) -> None:
    """One error line, best effort (the socket buffer takes it or it is lost), then close."""
    with contextlib.suppress(OSError):
        client.send(encode_error(None, "unavailable", message))
    client.close()
