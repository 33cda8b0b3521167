"""Issue 12 regressions at the control server: forged audit lines (defect 10); more are added
with the server defects (admins always get in, fair share, watch amplification, SIGTERM with
non-reading clients, half-closed clients)."""

from __future__ import annotations

import contextlib
import grp
import json
import linecache
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from oneiric.control import peers as peers_mod
from test_server import (
    NOBODY,
    FakeHandler,
    Raw,
    reached,
    run_as_nobody,
    running_server,
    serves_a_new_connection,
)

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]  # control protocol: asyncio and trio


async def test_a_reader_cannot_forge_or_bloat_audit_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="oneiric.audit")
    forged_key = "cache note='approved by ops' outcome=ok uid=0 pid=1"
    forged_note = "ok' outcome=ok uid=0 pid=1\nINFO oneiric.audit: audit uid=0 op=resume"
    async with running_server(FakeHandler(), admin_group=None, mode=0o666) as path:
        os.chmod(os.path.dirname(path), 0o755)
        out = await run_as_nobody(
            path,
            [
                ("pause", {"domain": "adapter", "key": forged_key}),
                ("pause", {"domain": "adapter", "key": "k" * 60_000}),
                ("swap", {"domain": "adapter", "key": "cache", "provider": "a b=c"}),
                ("emit", {"topic": "t" * 300}),
                ("pause", {"domain": "adapter", "key": "cache", "note": forged_note}),
                ("pause", {"domain": "adapter", "key": "cache", "note": "n" * 5000}),
            ],
        )
    assert [o.get("code") for o in out] == ["bad_request"] * 4 + [
        "permission_denied",
        "bad_request",
    ], out
    assert "$.key" in out[0]["message"] and "$.note" in out[5]["message"]
    lines = [r.getMessage() for r in caplog.records if r.name == "oneiric.audit"]
    assert len(lines) == 1, lines
    line = lines[0]
    assert "\n" not in line and len(line) < 512
    fields = [tok.split("=", 1) for tok in shlex.split(line)[1:]]
    names = [name for name, _ in fields]
    assert names == ["uid", "pid", "op", "target", "note", "outcome"], line
    values = dict(fields)
    assert values["uid"] == str(NOBODY) and values["outcome"] == "permission_denied"
    assert values["note"].startswith("ok' outcome=ok") and "\\n" in values["note"]


# -- defect 12: a half-closed client keeps its reply to a long op -----------------------------


async def test_a_half_closed_client_gets_its_reply_after_idle_timeout() -> None:
    handler = FakeHandler()
    async with running_server(handler, idle_timeout=0.2) as path:
        conn = await Raw.open(path)
        await conn.send({"id": 1, "op": "run", "domain": "task", "key": "job"})
        await reached(handler.running)
        await conn.stream.send_eof()  # like `echo '{...}' | socat - UNIX-CONNECT:...`
        # a witness of the server's clock: a connection opened after the half-close, closed
        # for idleness — by then idle_timeout has passed for the half-closed one too
        witness = await Raw.open(path)
        await witness.wait_eof()
        await witness.aclose()
        assert not handler.cancelled.is_set(), "the half-closed client's request was dropped"
        handler.gate.set()  # the long op finishes...
        reply = await conn.recv()  # ...and its reply still reaches the client
        assert reply == {"id": 1, "ok": True, "result": {"ran": "job"}}
        await conn.wait_eof()
        await conn.aclose()


# -- hostile peers in other processes, under other uids ---------------------------------------

PEERS = Path(__file__).with_name("hostile_peers.py")


class PeerProc:
    """A hostile peer process (tests/hostile_peers.py) running as ``uid``."""

    def __init__(
        self, uid: int, path: str, mode: str, *args: object, groups: tuple[int, ...] = ()
    ) -> None:
        member = ["--groups", ",".join(map(str, groups))] if groups else []
        self.proc = subprocess.Popen(
            [sys.executable, str(PEERS), "--uid", str(uid), *member, path, mode, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def report(self) -> dict[str, Any]:
        """The peer's JSON line (after its attack, or once it holds its connections)."""
        assert self.proc.stdout is not None
        with anyio.fail_after(120):
            line = await anyio.to_thread.run_sync(self.proc.stdout.readline)
        assert line, self.proc.stderr.read() if self.proc.stderr else ""
        result: dict[str, Any] = json.loads(line)
        return result

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        with anyio.fail_after(120):
            await anyio.to_thread.run_sync(self.proc.wait)


@contextlib.asynccontextmanager
async def peer(
    uid: int, path: str, mode: str, *args: object, groups: tuple[int, ...] = ()
) -> AsyncIterator[PeerProc]:
    p = PeerProc(uid, path, mode, *args, groups=groups)
    try:
        yield p
    finally:
        if p.proc.poll() is None:
            p.proc.kill()
            await anyio.to_thread.run_sync(p.proc.wait)


@contextlib.asynccontextmanager
async def open_server(handler: Any, **kw: Any) -> AsyncIterator[str]:
    async with running_server(handler, mode=0o666, **kw) as path:
        os.chmod(os.path.dirname(path), 0o755)  # readers may reach the socket
        yield path


# -- defect 1: admins always get in ----------------------------------------------------------


async def test_readers_filling_every_cap_leave_room_for_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(peers_mod, "MAX_CONNECTIONS", 8)
    monkeypatch.setattr(peers_mod, "ADMIN_RESERVE", 2, raising=False)
    monkeypatch.setattr(peers_mod, "MAX_PER_UID", 3)
    async with open_server(FakeHandler()) as path:
        async with peer(60001, path, "hold", 3) as a, peer(60002, path, "hold", 3) as b:
            assert (await a.report())["outcomes"] == ["ok"] * 3
            assert (await b.report())["outcomes"] == ["ok"] * 3
            async with peer(60003, path, "hold", 1) as c:  # the readers' share is used up
                assert (await c.report())["outcomes"] == ["unavailable"]
                await c.close()
            admins = [await Raw.open(path) for _ in range(2)]  # the reserve is root's
            for conn in admins:
                assert (await conn.call({"id": 1, "op": "ping"}))["ok"] is True
            for conn in admins:
                await conn.aclose()
            await a.close()
            await b.close()


async def test_admin_group_members_share_the_admins_reserve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A member of admin_group (a real unprivileged uid holding the group as a supplementary
    group, which the kernel reports with SO_PEERGROUPS) gets in when readers have taken their
    whole share, like root."""
    monkeypatch.setattr(peers_mod, "MAX_CONNECTIONS", 8)
    monkeypatch.setattr(peers_mod, "ADMIN_RESERVE", 2, raising=False)
    monkeypatch.setattr(peers_mod, "MAX_PER_UID", 3)
    nogroup = grp.getgrnam("nogroup").gr_gid
    async with open_server(FakeHandler(), admin_group="nogroup") as path:
        async with peer(60001, path, "hold", 3) as a, peer(60002, path, "hold", 3) as b:
            assert (await a.report())["outcomes"] == ["ok"] * 3
            assert (await b.report())["outcomes"] == ["ok"] * 3
            async with peer(60003, path, "hold", 1) as c:  # the readers' share is used up
                assert (await c.report())["outcomes"] == ["unavailable"]
                await c.close()
            async with peer(60004, path, "hold", 2, groups=(nogroup,)) as member:
                assert (await member.report())["outcomes"] == ["ok"] * 2
                await member.close()
            await a.close()
            await b.close()


async def test_the_accept_loop_tells_admins_without_waiting_for_nss() -> None:
    nogroup = grp.getgrnam("nogroup").gr_gid
    roles = peers_mod.Roles("nogroup")
    assert roles.admin_now(0, 0, None) is True  # root: always
    assert roles.admin_now(60004, 60004, (nogroup,)) is None  # the group's gid not looked up
    await roles.refresh()
    assert roles.admin_now(60004, 60004, (nogroup,)) is True  # the kernel's groups suffice
    assert roles.admin_now(60004, nogroup, ()) is True  # primary group
    assert roles.admin_now(60005, 60005, ()) is False
    assert roles.admin_now(60005, 60005, None) is None  # only NSS could tell: a reader here
    assert await roles.role(60005, 60005, None) == "reader"
    assert roles.admin_now(60005, 60005, None) is False  # that lookup is remembered
    missing = peers_mod.Roles("no-such-group-here")
    await missing.refresh()
    assert missing.admin_now(60004, 60004, (nogroup,)) is False
    assert peers_mod.Roles(None).admin_now(60004, nogroup, (nogroup,)) is False


async def test_refusals_are_logged_at_a_bounded_rate(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(peers_mod, "MAX_PER_UID", 2)
    caplog.set_level(logging.WARNING, logger="oneiric.control")
    async with open_server(FakeHandler()) as path:
        async with peer(60001, path, "hold", 2) as holder:
            assert (await holder.report())["outcomes"] == ["ok", "ok"]
            async with peer(60001, path, "churn", 300) as churn:
                assert (await churn.report())["connects"] == 300
                await churn.close()
            assert await serves_a_new_connection(path)  # root is still served at once
            await holder.close()
    refusals = [r for r in caplog.records if "refus" in r.getMessage()]
    assert 1 <= len(refusals) <= 3, [r.getMessage() for r in refusals]


# -- defect 2: a fair share per peer, admins first -------------------------------------------


class OrderHandler:
    """Records which role each ``ping`` came from, in the order they were handled."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.first_reader = anyio.Event()

    async def __call__(self, request: Any, peer: Any, emit: Any) -> Any:
        self.order.append(peer.role)
        if peer.role == "reader":
            self.first_reader.set()
        return {"pong": True}


async def test_a_reader_pipelining_thousands_of_requests_cannot_starve_an_admin() -> None:
    handler = OrderHandler()
    async with open_server(handler) as path:
        async with peer(NOBODY, path, "pipeline", 8, 3000, "ping") as flood:
            with anyio.fail_after(120):
                await handler.first_reader.wait()
            admin = await Raw.open(path)
            before = len(handler.order)
            assert (await admin.call({"id": 1, "op": "ping"}))["ok"] is True
            overtaken = handler.order.index("admin", before) - before
            # a fair share per turn, admins first: a handful of turns at most, not a backlog
            assert overtaken < 8 * 3000 // 10, overtaken
            await admin.aclose()
            report = await flood.report()
            assert report == {"ok": 8 * 3000, "error": 0}, report
    print(f"\nreader pings handled ahead of the admin's: {overtaken} (of {8 * 3000} queued)")


# -- defect 3: watch streams are encoded once per change and bounded per uid ------------------

WATCHED = """
[daemon]
socket_mode = "0666"
stop_timeout = "5s"
drain_timeout = "5s"
watch = false

[[component]]
domain = "adapter"
key = "cache"
provider = "memory"
factory = "oneiric.builtin.cache:MemoryCache"
"""


async def test_watch_streams_share_one_encoding_per_change_and_are_bounded_per_uid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from harness import running_daemon
    from oneiric.streams import MAX_WATCHES_PER_READER as limit

    async with running_daemon(WATCHED) as h:
        os.chmod(h.dir, 0o755)
        async with peer(NOBODY, h.socket, "watch", limit + 1) as reader:
            outcomes = (await reader.report())["outcomes"]
            assert outcomes == ["event"] * limit + ["unavailable"], outcomes
            streams = [await Raw.open(h.socket) for _ in range(20)]
            for i, conn in enumerate(streams):
                await conn.send({"id": i, "op": "watch"})
                assert "event" in await conn.recv()
            health = h.daemon.health
            assert health is not None
            built = [0]
            real = health.snapshot

            def counting(*args: Any, **kw: Any) -> Any:
                built[0] += 1
                return real(*args, **kw)

            monkeypatch.setattr(health, "snapshot", counting)
            assert (await h.call("pause", domain="adapter", key="cache"))["state"] == "paused"
            for conn in streams:  # every stream sees the change...
                while (await conn.recv())["event"]["snapshot"]["components"][0][
                    "admin"
                ] != "paused":
                    pass
            # ...built once per version seen (and by the health file), not once per stream
            assert built[0] < len(streams) // 2, built[0]
            print(f"\n{len(streams)} watch streams, one change: {built[0]} snapshot build(s)")
            for conn in streams:
                await conn.aclose()
            await reader.close()


def _in_connect_backoff(thread: threading.Thread) -> bool:
    """Whether ``thread`` is waiting in ControlClient.connect's retry pause."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "connect" and frame.f_code.co_filename.endswith("client.py"):
            return "sleep" in linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return False


def test_the_client_retries_a_full_listen_backlog_until_it_is_accepted() -> None:
    from oneiric.control.client import ControlClient

    d = tempfile.mkdtemp(prefix="on", dir="/tmp")
    path = os.path.join(d, "s.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(0)
    fillers = []
    try:
        while True:  # fill the backlog, as a connect flood does
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(path)
            except BlockingIOError:
                c.close()
                break
            fillers.append(c)
        result: dict[str, Any] = {}

        def call() -> None:
            try:
                result["reply"] = ControlClient(path, timeout=60).call("ping")
            except Exception as exc:
                result["error"] = exc

        client = threading.Thread(target=call)
        client.start()
        deadline = time.monotonic() + 60
        while not _in_connect_backoff(client):  # no event says so: the thread's stack is polled
            assert client.is_alive(), f"the client gave up at once: {result}"
            assert time.monotonic() < deadline
            threading.Event().wait(0.005)
        for _ in fillers:  # the daemon catches up: the queued connections are accepted...
            srv.accept()[0].close()
        conn, _ = srv.accept()  # ...and then the retrying client's
        with conn:
            request = json.loads(conn.makefile("rb").readline())
            conn.sendall(json.dumps({"id": request["id"], "ok": True, "result": "pong"}).encode())
            conn.sendall(b"\n")
            client.join(60)
        assert result == {"reply": "pong"}, result
    finally:
        for c in fillers:
            c.close()
        srv.close()
        shutil.rmtree(d, ignore_errors=True)
