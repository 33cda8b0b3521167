"""Who is on the other end of a control connection, and how many of them the daemon serves.

The kernel tells us (``SO_PEERCRED``, ``SO_PEERGROUPS``); :class:`Roles` turns that into the
``admin`` or ``reader`` role of SPEC §8, and :class:`ConnectionLimits` decides whether one more
connection from a uid is served at all. Pure policy plus two ``getsockopt`` calls: the byte
accept loop in :mod:`oneiric.control.server` asks, this module answers.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import socket
import struct
import time
from collections.abc import Callable
from typing import Final, Literal

import anyio
import anyio.to_thread
import msgspec

__all__ = [
    "ADMIN_RESERVE",
    "MAX_CONNECTIONS",
    "MAX_PER_UID",
    "ConnectionLimits",
    "Peer",
    "Role",
    "Roles",
    "peer_credentials",
    "peer_groups",
]

log = logging.getLogger(__name__)

#: Connections served at once, and per unprivileged uid: a reader who can connect must not be
#: able to use up the daemon's file descriptors (beyond the cap: one `unavailable` line, close).
MAX_CONNECTIONS: Final = 256
MAX_PER_UID: Final = 32
#: Of MAX_CONNECTIONS, this many are only for admins (root, the daemon's own uid, members of
#: ``admin_group``): however many readers fill their caps, an operator always gets in.
ADMIN_RESERVE: Final = 32
#: Refusals are logged once per uid per this many seconds, then counted in a summary line.
REFUSAL_LOG_INTERVAL: Final = 10.0
ROLE_CACHE_TTL: Final = 60.0
_SO_PEERGROUPS: Final = getattr(socket, "SO_PEERGROUPS", 59)  # Linux ≥ 4.13
_UCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid

Role = Literal["admin", "reader"]


class Peer(msgspec.Struct, frozen=True):
    """Who is on the other end of a connection, from ``SO_PEERCRED`` at connect time."""

    pid: int
    uid: int
    gid: int
    role: Role


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process that connected (``SO_PEERCRED``)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def peer_groups(sock: socket.socket) -> tuple[int, ...] | None:
    """The supplementary groups the peer process really holds (SO_PEERGROUPS), or None when
    the kernel cannot say (then the user database decides)."""
    try:
        raw = sock.getsockopt(
            socket.SOL_SOCKET, _SO_PEERGROUPS, 1024
        )  # 256 gids: the most Python allows
    except OSError:
        return None
    return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])


def _group_gid(group: str) -> int | None:
    """The gid of ``group``, or None when there is no such group. Blocking (NSS)."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def _holds(target: int, gid: int, groups: tuple[int, ...]) -> bool:
    """Whether a peer whose groups the kernel told us holds ``target`` (pure, no NSS)."""
    return gid == target or target in groups


def _in_group(group: str, uid: int, gid: int, groups: tuple[int, ...] | None) -> bool:
    """Whether the peer belongs to ``group``: its primary ``gid`` or, when the kernel told us
    (SO_PEERGROUPS), the supplementary groups it really holds; otherwise the user database's
    view of ``uid``. Blocking (NSS)."""
    target = _group_gid(group)
    if target is None:
        return False
    if gid == target:
        return True
    if groups is not None:
        return _holds(target, gid, groups)
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return False
    return target in os.getgrouplist(pw.pw_name, pw.pw_gid)


class Roles:
    """Decides admin vs reader; caches group lookups briefly so a membership change is
    picked up without a restart, yet a busy client does not hammer NSS. ``clock`` measures
    the ``ttl`` (monotonic, so a wall-clock jump neither pins nor flushes the cache)."""

    def __init__(
        self,
        admin_group: str | None,
        ttl: float = ROLE_CACHE_TTL,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.admin_group = admin_group
        self._ttl = ttl
        self._clock = clock
        self._own_uid = os.getuid()
        self._cache: dict[tuple[int, int, tuple[int, ...] | None], tuple[float, bool]] = {}
        #: (until when, gid) of admin_group, so that the accept loop can tell a member from
        #: the kernel's groups alone (:meth:`admin_now`), without a blocking NSS lookup
        self._admin_gid: tuple[float, int | None] | None = None

    def privileged(self, uid: int) -> bool:
        """Root and the daemon's own uid: admins whatever the group says."""
        return uid in (0, self._own_uid)

    async def refresh(self) -> None:
        """Look the admin group's gid up again when it is unknown or older than the ttl
        (a worker thread: NSS may block)."""
        if self.admin_group is None:
            return
        if self._admin_gid is None or self._admin_gid[0] <= self._clock():
            gid = await anyio.to_thread.run_sync(_group_gid, self.admin_group)
            self._admin_gid = (self._clock() + self._ttl, gid)

    def admin_now(self, uid: int, gid: int, groups: tuple[int, ...] | None) -> bool | None:
        """Whether the peer is an admin, answered at once (the accept loop cannot wait for
        NSS): from the uid, a cached answer, or the kernel's groups and the admin group's
        known gid. None when only a user-database lookup could tell (:meth:`role` does it)."""
        if self.privileged(uid):
            return True
        if self.admin_group is None:
            return False
        hit = self._cache.get((uid, gid, groups))
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        if self._admin_gid is None or groups is None:
            return None
        target = self._admin_gid[1]
        return target is not None and _holds(target, gid, groups)

    async def role(self, uid: int, gid: int, groups: tuple[int, ...] | None = None) -> Role:
        if self.privileged(uid):
            return "admin"
        if self.admin_group is None:
            return "reader"
        key = (uid, gid, groups)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self._clock():
            is_admin = hit[1]
        else:
            is_admin = await anyio.to_thread.run_sync(_in_group, self.admin_group, uid, gid, groups)
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[key] = (self._clock() + self._ttl, is_admin)
            await self.refresh()  # keeps admin_now's view of the group as fresh as this one
        return "admin" if is_admin else "reader"

    async def identify(self, sock: socket.socket) -> Peer:
        """The connected peer with its role (may look up groups in a worker thread)."""
        pid, uid, gid = peer_credentials(sock)
        return Peer(pid=pid, uid=uid, gid=gid, role=await self.role(uid, gid, peer_groups(sock)))


class ConnectionLimits:
    """How many connections each uid holds, and whether one more is served.

    Admins — root, the daemon's own uid, and members of ``admin_group`` as far as the accept
    loop can tell at once (:meth:`Roles.admin_now`: the kernel's ``SO_PEERGROUPS`` and the
    group's gid; a member the kernel cannot vouch for counts as a reader here) — are exempt
    from the per-uid cap and have :data:`ADMIN_RESERVE` connections that nobody else may take
    (an operator can always get in); everyone is bound by the total. The accept loop calls
    :meth:`admit` for each new connection and :meth:`release` with the same ``admin`` when it
    ends; :meth:`log_refusal` keeps a flood of refusals from flooding the log.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_uid: dict[int, int] = {}
        self._total = 0
        self._unprivileged = 0
        self._clock = clock
        #: uid -> (when its last refusal was logged, refusals since then not logged)
        self._refusals: dict[int, tuple[float, int]] = {}

    @property
    def total(self) -> int:
        return self._total

    @property
    def full(self) -> bool:
        """Every connection of the total is taken."""
        return self._total >= MAX_CONNECTIONS

    def refusal(self, uid: int, admin: bool) -> str | None:
        """Why a new connection from ``uid`` (an admin or not) is refused, or None."""
        if self._total >= MAX_CONNECTIONS:
            return f"too many control connections ({MAX_CONNECTIONS}); try again shortly"
        if admin:
            return None
        if self._per_uid.get(uid, 0) >= MAX_PER_UID:
            return f"too many control connections from uid {uid} (at most {MAX_PER_UID})"
        if self._unprivileged >= MAX_CONNECTIONS - ADMIN_RESERVE:
            return (
                f"too many control connections ({MAX_CONNECTIONS - ADMIN_RESERVE} for users "
                "other than admins); try again shortly"
            )
        return None

    def admit(self, uid: int, admin: bool) -> str | None:
        """Count a new connection from ``uid``; or say why it is refused (then not counted)."""
        refusal = self.refusal(uid, admin)
        if refusal is None:
            self._per_uid[uid] = self._per_uid.get(uid, 0) + 1
            self._total += 1
            if not admin:
                self._unprivileged += 1
        return refusal

    def release(self, uid: int, admin: bool) -> None:
        self._total -= 1
        if not admin:
            self._unprivileged -= 1
        self._per_uid[uid] -= 1
        if not self._per_uid[uid]:
            del self._per_uid[uid]

    def log_refusal(self, uid: int, message: str) -> None:
        """Log a refusal: the first per uid in each :data:`REFUSAL_LOG_INTERVAL`, then one
        summary of how many more there were (a connect/close loop must not fill the disk)."""
        now = self._clock()
        last, hidden = self._refusals.get(uid, (float("-inf"), 0))
        if now - last < REFUSAL_LOG_INTERVAL:
            self._refusals[uid] = (last, hidden + 1)
            return
        if hidden:
            log.warning(
                "refused %d more control connection(s) from uid %d in the last %gs",
                hidden,
                uid,
                REFUSAL_LOG_INTERVAL,
            )
        log.warning("refusing a control connection from uid %d: %s", uid, message)
        if len(self._refusals) > 4096:  # bounded, whatever the number of uids
            self._refusals.clear()
        self._refusals[uid] = (now, 0)
