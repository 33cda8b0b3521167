"""The control server over real Unix sockets: framing, errors, concurrency, roles, audit."""

from __future__ import annotations

import fcntl
import grp
import json
import logging
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import anyio
import anyio.abc
import pytest

from clocks import FakeClock
from oneiric import systemd
from oneiric.control import listen as listen_mod
from oneiric.control import peers as peers_mod
from oneiric.control.listen import bind_control_socket, open_control_socket
from oneiric.control.peers import Peer, Roles
from oneiric.control.protocol import (
    EmitRequest,
    ExplainRequest,
    HealthRequest,
    ListRequest,
    PingRequest,
    ReloadRequest,
    Request,
    RunRequest,
    StatusRequest,
    SyncRequest,
    WatchRequest,
)
from oneiric.control.server import serve
from oneiric.control.session import Emit
from oneiric.errors import AlreadyRunning, ConfigError, Conflict, NotFound, OneiricError

pytestmark = pytest.mark.both_backends  # the async ones: on asyncio and on trio

NOBODY = 65534
WAIT = 10  # seconds: an upper bound on waiting for an event, never a sleep


class FakeHandler:
    """Answers per op; ``watch`` and ``run`` are gated on events the test controls."""

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.streaming = anyio.Event()
        self.running = anyio.Event()
        self.cancelled = anyio.Event()
        self.log: list[tuple[str, str]] = []

    async def __call__(self, request: Request, peer: Peer, emit: Emit) -> Any:
        op = type(request).__name__
        self.log.append(("start", op))
        try:
            return await self._answer(request, peer, emit)
        except anyio.get_cancelled_exc_class():
            self.cancelled.set()
            raise
        finally:
            self.log.append(("end", op))

    async def _answer(self, request: Request, peer: Peer, emit: Emit) -> Any:
        match request:
            case PingRequest():
                return {"pong": True, "role": peer.role, "uid": peer.uid, "pid": peer.pid}
            case StatusRequest():
                return {"domain": request.domain, "role": peer.role}
            case WatchRequest():
                await emit({"n": 1})
                await emit({"n": 2})
                self.streaming.set()
                await self.gate.wait()
                await emit({"n": 3})
                return {"done": True}
            case RunRequest(key="big"):
                await emit({"blob": "x" * 2_000_000})  # far more than a socket buffer
                return {"sent": True}
            case RunRequest(key="flood"):
                self.running.set()
                while True:
                    await emit({"blob": "x" * 100_000})
            case RunRequest():
                self.running.set()
                await self.gate.wait()
                return {"ran": request.key}
            case ExplainRequest():
                raise NotFound(f"no candidates for {request.domain}/{request.key}")
            case HealthRequest():
                raise RuntimeError("boom")
            case ListRequest():
                return object()  # not encodable
            case SyncRequest():
                raise ExceptionGroup("wrapped", [Conflict("a sync is already running")])
            case ReloadRequest():
                raise ConfigError("expected an integer", file="d.toml", path="daemon.x")
            case EmitRequest(topic="fail"):
                raise Conflict("nope")
            case _:
                return {"op": type(request).__struct_config__.tag}


def _tmpdir() -> str:
    return tempfile.mkdtemp(prefix="on", dir="/tmp")


@asynccontextmanager
async def running_server(
    handler: FakeHandler,
    *,
    admin_group: str | None = None,
    idle_timeout: float = 30.0,
    mode: int = 0o600,
    max_in_flight: int = 64,
) -> AsyncIterator[str]:
    d = _tmpdir()
    path = os.path.join(d, "c.sock")
    sock = bind_control_socket(path, mode=mode, group=None)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(
                partial(
                    serve,
                    sock,
                    handler,
                    admin_group=admin_group,
                    idle_timeout=idle_timeout,
                    max_in_flight=max_in_flight,
                )
            )
            yield path
            tg.cancel_scope.cancel()
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Raw:
    """A bare NDJSON connection, like socat."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    @classmethod
    async def open(cls, path: str) -> Raw:
        return cls(await anyio.connect_unix(path))

    async def send(self, data: bytes | dict[str, Any]) -> None:
        if isinstance(data, dict):
            data = json.dumps(data).encode() + b"\n"
        await self.stream.send(data)

    async def recv(self) -> dict[str, Any]:
        with anyio.fail_after(WAIT):
            while b"\n" not in self.buf:
                self.buf += await self.stream.receive()
        line, _, self.buf = self.buf.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def call(self, req: dict[str, Any]) -> dict[str, Any]:
        await self.send(req)
        return await self.recv()

    async def wait_eof(self) -> None:
        with anyio.fail_after(WAIT):
            while True:
                try:
                    self.buf += await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return

    @property
    def raw(self) -> socket.socket:
        return self.stream.extra(anyio.abc.SocketAttribute.raw_socket)

    async def aclose(self) -> None:
        await self.stream.aclose()


# --- request/reply ---------------------------------------------------------------------------


async def reached(event: anyio.Event) -> None:
    """Wait for the handler to get there (bounded generously: the machine may be loaded)."""
    with anyio.fail_after(WAIT):
        await event.wait()


async def serves_a_new_connection(path: str) -> bool:
    """Whether a fresh connection gets its ``ping`` answered: the server still serves."""
    conn = await Raw.open(path)
    try:
        return bool((await conn.call({"id": 1, "op": "ping"}))["ok"] is True)
    finally:
        await conn.aclose()


@pytest.mark.anyio
async def test_ping_reports_admin_peer_credentials() -> None:
    async with running_server(FakeHandler()) as path:
        conn = await Raw.open(path)
        reply = await conn.call({"id": 1, "op": "ping"})
        assert reply == {
            "id": 1,
            "ok": True,
            "result": {"pong": True, "role": "admin", "uid": os.getuid(), "pid": os.getpid()},
        }
        await conn.aclose()


@pytest.mark.anyio
async def test_error_replies_have_the_spec_shape_and_the_connection_survives() -> None:
    cases: list[tuple[bytes, Any, str, str]] = [
        (b"this is not json\n", None, "bad_request", "invalid JSON"),
        (b"[1, 2]\n", None, "bad_request", "JSON object"),
        (b'{"op":"ping"}\n', None, "bad_request", "`id`"),
        (b'{"id":7,"op":"frobnicate"}\n', 7, "unknown_op", "known ops: ping"),
        (b'{"id":8,"op":"explain","domain":"adapter"}\n', 8, "bad_request", "key"),
        (b'{"id":9,"op":"explain","domain":"adapter","key":"k"}\n', 9, "not_found", "adapter/k"),
        (b'{"id":10,"op":"health"}\n', 10, "internal", "boom"),
        (b'{"id":11,"op":"list"}\n', 11, "internal", "internal error"),
        (b'{"id":12,"op":"sync"}\n', 12, "conflict", "already running"),
        (b'{"id":13,"op":"emit","topic":"fail"}\n', 13, "conflict", "nope"),
    ]
    async with running_server(FakeHandler()) as path:
        conn = await Raw.open(path)
        for line, rid, code, fragment in cases:
            await conn.send(line)
            reply = await conn.recv()
            assert set(reply) == {"id", "ok", "error"}, line
            assert reply["id"] == rid and reply["ok"] is False
            assert set(reply["error"]) == {"code", "message"}
            assert reply["error"]["code"] == code, line
            assert fragment in reply["error"]["message"], reply
        # A OneiricError with a detail carries it.
        reply = await conn.call({"id": 14, "op": "reload"})
        assert reply["error"] == {
            "code": "bad_request",
            "message": "d.toml, at daemon.x: expected an integer",
            "detail": "expected an integer",
        }
        assert (await conn.call({"id": 15, "op": "ping"}))["ok"] is True
        await conn.aclose()


@pytest.mark.anyio
async def test_handler_traceback_is_logged_for_internal_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_server(FakeHandler()) as path:
        conn = await Raw.open(path)
        await conn.call({"id": 1, "op": "health"})
        await conn.aclose()
    [record] = [r for r in caplog.records if r.name == "oneiric.control.session" and r.exc_info]
    assert "'health'" in record.getMessage()


@pytest.mark.anyio
async def test_oversized_line_from_one_client_does_not_disturb_another() -> None:
    async with running_server(FakeHandler()) as path:
        bad, good = await Raw.open(path), await Raw.open(path)
        chunk = b"z" * 16384
        for _ in range(6):  # 96 KiB of one unterminated line
            await bad.send(chunk)
        reply = await bad.recv()
        assert reply == {
            "id": None,
            "ok": False,
            "error": {
                "code": "too_large",
                "message": "request line longer than 65536 bytes; it was discarded",
            },
        }
        assert (await good.call({"id": 1, "op": "ping"}))["result"]["pong"] is True
        await bad.send(
            chunk + b'"}\n{"id":2,"op":"ping"}\n'
        )  # end of the long line, then a good one
        assert (await bad.recv())["id"] == 2
        await good.send(b'{"id":2,"op"\r\n{"id":3,"op":"ping"}\r\n')
        assert (await good.recv())["error"]["code"] == "bad_request"
        assert (await good.recv())["id"] == 3
        await bad.aclose()
        await good.aclose()


@pytest.mark.anyio
async def test_pending_stream_does_not_block_a_later_request() -> None:
    handler = FakeHandler()
    async with running_server(handler) as path:
        conn = await Raw.open(path)
        await conn.send({"id": 1, "op": "watch"})
        assert await conn.recv() == {"id": 1, "event": {"n": 1}}
        assert await conn.recv() == {"id": 1, "event": {"n": 2}}
        assert (await conn.call({"id": 2, "op": "ping"}))["id"] == 2  # watch still pending
        handler.gate.set()
        assert await conn.recv() == {"id": 1, "event": {"n": 3}}
        assert await conn.recv() == {"id": 1, "ok": True, "result": {"done": True}}
        await conn.aclose()


@pytest.mark.anyio
async def test_in_flight_limit_applies_back_pressure() -> None:
    handler = FakeHandler()
    async with running_server(handler, max_in_flight=1) as path:
        conn = await Raw.open(path)
        # (emit is not answered inline, so it counts against the in-flight limit)
        await conn.send(b'{"id":1,"op":"watch"}\n{"id":2,"op":"emit","topic":"t"}\n')
        first = [await conn.recv(), await conn.recv()]
        assert first == [{"id": 1, "event": {"n": 1}}, {"id": 1, "event": {"n": 2}}]
        assert ("start", "EmitRequest") not in handler.log
        handler.gate.set()
        rest = [await conn.recv() for _ in range(3)]
        assert [r["id"] for r in rest] == [1, 1, 2]
        assert rest[2]["ok"] is True
        await conn.aclose()


# --- connection lifetime ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("read_events_first", [True, False])
async def test_client_closing_cancels_its_requests(read_events_first: bool) -> None:
    """Seen as POLLHUP after EOF, or (unread data left behind) as ECONNRESET."""
    handler = FakeHandler()
    async with running_server(handler) as path:
        conn = await Raw.open(path)
        await conn.send({"id": 1, "op": "watch"})
        await reached(handler.streaming)
        if read_events_first:
            assert (await conn.recv())["event"] == {"n": 1}
            assert (await conn.recv())["event"] == {"n": 2}
        await conn.aclose()
        await reached(handler.cancelled)
        assert not handler.gate.is_set()


@pytest.mark.anyio
async def test_half_closed_client_still_gets_its_reply() -> None:
    """`echo '{…}' | socat - UNIX-CONNECT:…` shuts down its write side before the reply."""
    handler = FakeHandler()
    async with running_server(handler) as path:
        conn = await Raw.open(path)
        await conn.send({"id": 1, "op": "run", "domain": "task", "key": "job"})
        await reached(handler.running)
        await conn.stream.send_eof()
        handler.gate.set()
        assert await conn.recv() == {"id": 1, "ok": True, "result": {"ran": "job"}}
        await conn.wait_eof()
        assert not handler.cancelled.is_set()
        await conn.aclose()


@pytest.mark.anyio
async def test_lines_sent_with_the_end_of_stream_are_all_answered() -> None:
    """Requests, a line cut short, then EOF in one burst (`printf '…' | socat`): every complete
    line is decided before the end of stream is acted on; the fragment is dropped."""
    async with running_server(FakeHandler()) as path:
        conn = await Raw.open(path)
        await conn.send(
            b'{"id":1,"op":"ping"}\n{"id":2,"op":"emit","topic":"t"}\nnot json\n{"id":3,"op":"pi'
        )
        await conn.stream.send_eof()
        replies = [await conn.recv() for _ in range(3)]
        await conn.wait_eof()
        by_id = {r["id"]: r for r in replies}
        assert by_id[1]["ok"] is True and by_id[2]["result"] == {"op": "emit"}
        assert by_id[None]["error"]["code"] == "bad_request"
        assert conn.buf == b""  # nothing for the fragment
        await conn.aclose()


@pytest.mark.anyio
async def test_half_closed_client_work_ends_once_the_peer_is_gone() -> None:
    handler = FakeHandler()
    async with running_server(handler, idle_timeout=0.2) as path:
        conn = await Raw.open(path)
        await conn.send({"id": 1, "op": "run", "domain": "task", "key": "job"})
        await reached(handler.running)
        await conn.stream.send_eof()
        await conn.aclose()  # now closed entirely: nobody will read the reply
        await reached(handler.cancelled)


@pytest.mark.anyio
async def test_write_to_dead_peer_drops_only_that_connection() -> None:
    handler = FakeHandler()
    async with running_server(handler) as path:
        conn = await Raw.open(path)
        await conn.send({"id": 1, "op": "watch"})
        await reached(handler.streaming)
        conn.raw.shutdown(socket.SHUT_RD)  # the next write from the daemon gets EPIPE
        handler.gate.set()
        await reached(handler.cancelled)
        assert await serves_a_new_connection(path)
        await conn.aclose()


@pytest.mark.anyio
async def test_large_event_is_written_in_pieces_as_the_peer_reads() -> None:
    async with running_server(FakeHandler()) as path:
        conn = await Raw.open(path)
        await conn.send({"id": 1, "op": "run", "domain": "task", "key": "big"})
        event = await conn.recv()
        assert len(event["event"]["blob"]) == 2_000_000
        assert await conn.recv() == {"id": 1, "ok": True, "result": {"sent": True}}
        await conn.aclose()


@pytest.mark.anyio
async def test_peer_that_stops_reading_is_dropped() -> None:
    handler = FakeHandler()
    async with running_server(handler, idle_timeout=0.2) as path:
        conn = await Raw.open(path)
        await conn.send({"id": 1, "op": "run", "domain": "task", "key": "flood"})
        await reached(handler.cancelled)  # its send blocked past the timeout
        assert await serves_a_new_connection(path)
        await conn.aclose()


@pytest.mark.anyio
async def test_idle_connection_is_closed_but_a_streaming_one_is_not() -> None:
    handler = FakeHandler()
    async with running_server(handler, idle_timeout=0.1) as path:
        streaming = await Raw.open(path)
        await streaming.send({"id": 1, "op": "watch"})
        await reached(handler.streaming)
        idle = await Raw.open(path)  # connected after the stream's last input
        await idle.wait_eof()
        # The streaming connection outlived a full idle period; it still answers.
        assert [await streaming.recv() for _ in range(2)] == [
            {"id": 1, "event": {"n": 1}},
            {"id": 1, "event": {"n": 2}},
        ]
        assert (await streaming.call({"id": 2, "op": "ping"}))["ok"] is True
        handler.gate.set()
        assert await streaming.recv() == {"id": 1, "event": {"n": 3}}
        assert await streaming.recv() == {"id": 1, "ok": True, "result": {"done": True}}
        await streaming.wait_eof()  # idle once nothing is in flight
        await idle.aclose()
        await streaming.aclose()


# --- roles and audit -------------------------------------------------------------------------

_AS_NOBODY = """
import json, os, sys
from oneiric.control.client import ControlClient, ControlError, RemoteError
path, ops = sys.argv[1], json.loads(sys.argv[2])
groups = json.loads(sys.argv[3]) if len(sys.argv) > 3 else []
os.setgroups(groups); os.setgid(65534); os.setuid(65534)
out = []
try:
    with ControlClient(path, timeout=10) as client:
        for op, args in ops:
            try:
                out.append({"result": client.call(op, **args)})
            except RemoteError as exc:
                out.append({"code": exc.code, "message": exc.message})
except ControlError as exc:
    out.append({"exc": type(exc).__name__, "message": str(exc)})
print(json.dumps(out))
"""


async def run_as_nobody(
    path: str, ops: list[tuple[str, dict[str, Any]]], groups: list[int] | None = None
) -> list[Any]:
    """A real unprivileged client process. It imports as root, then drops to nobody (holding
    the supplementary ``groups``): the venv's interpreter lives under /root (0700), which
    nobody could not exec."""
    proc = await anyio.run_process(
        [sys.executable, "-c", _AS_NOBODY, path, json.dumps(ops), json.dumps(groups or [])],
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    result: list[Any] = json.loads(proc.stdout)
    return result


@pytest.mark.anyio
async def test_reader_may_read_but_not_mutate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="oneiric.audit")
    async with running_server(FakeHandler(), admin_group="daemon", mode=0o666) as path:
        os.chmod(os.path.dirname(path), 0o755)
        out = await run_as_nobody(
            path,
            [
                ("status", {"domain": "adapter"}),
                ("pause", {"domain": "adapter", "key": "cache", "note": "x"}),
                ("ping", {}),
            ],
        )
    assert out[0] == {"result": {"domain": "adapter", "role": "reader"}}
    assert out[1]["code"] == "permission_denied"
    assert "members of group 'daemon' may do this" in out[1]["message"]
    assert out[2]["result"]["uid"] == NOBODY
    audit = [r.getMessage() for r in caplog.records if r.name == "oneiric.audit"]
    assert len(audit) == 1
    assert audit[0].startswith(f"audit uid={NOBODY} pid=")
    assert audit[0].endswith('op=pause target=adapter/cache note="x" outcome=permission_denied')


@pytest.mark.anyio
async def test_admin_group_member_may_mutate() -> None:
    async with running_server(FakeHandler(), admin_group="nogroup", mode=0o666) as path:
        os.chmod(os.path.dirname(path), 0o755)
        out = await run_as_nobody(path, [("pause", {}), ("ping", {})])
    assert out == [
        {"result": {"op": "pause"}},
        {"result": {"pong": True, "role": "admin", "uid": NOBODY, "pid": out[1]["result"]["pid"]}},
    ]


@pytest.mark.anyio
async def test_without_admin_group_only_root_and_own_uid_are_admins() -> None:
    async with running_server(FakeHandler(), admin_group=None, mode=0o666) as path:
        os.chmod(os.path.dirname(path), 0o755)
        out = await run_as_nobody(path, [("reload", {})])
    assert out[0]["code"] == "permission_denied"
    assert "only root and the daemon's own user may do this" in out[0]["message"]


@pytest.mark.anyio
async def test_role_lookup() -> None:
    roles = Roles("nogroup")
    assert await roles.role(0, 0) == "admin"
    assert await roles.role(os.getuid(), 0) == "admin"
    assert await roles.role(NOBODY, NOBODY) == "admin"  # primary group
    assert await roles.role(NOBODY, 1) == "admin"  # running under another gid: via passwd
    assert await roles.role(54321, 1) == "reader"  # no such user
    assert await roles.role(54321, NOBODY) == "admin"  # no passwd entry, but the right gid
    assert await roles.role(NOBODY, 1) == "admin"  # cached
    assert await Roles("daemon").role(NOBODY, NOBODY) == "reader"
    assert await Roles("no-such-group-oneiric").role(NOBODY, NOBODY) == "reader"
    assert await Roles(None).role(NOBODY, NOBODY) == "reader"


@pytest.mark.anyio
async def test_role_cache_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_in_group(group: str, uid: int, gid: int, groups: object = None) -> bool:
        calls.append(uid)
        return len(calls) > 1

    monkeypatch.setattr(peers_mod, "_in_group", fake_in_group)
    clock = FakeClock()
    cached = Roles("g", ttl=30, clock=clock)
    assert [await cached.role(1000, 1000) for _ in range(2)] == ["reader", "reader"]
    clock.advance(29.9)
    assert await cached.role(1000, 1000) == "reader"
    assert calls == [1000]  # one lookup while the entry is fresh
    clock.advance(0.1)
    assert await cached.role(1000, 1000) == "admin"  # expired: looked up again
    assert calls == [1000, 1000]
    for uid in range(2000, 3100):  # the cache stays bounded
        await cached.role(uid, uid)
    assert len(cached._cache) <= 1025


@pytest.mark.anyio
async def test_audit_log_for_mutating_requests(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="oneiric.audit")
    async with running_server(FakeHandler()) as path:
        conn = await Raw.open(path)
        for req in [
            {"id": 1, "op": "ping"},
            {"id": 2, "op": "pause", "domain": "adapter", "key": "cache", "note": "maint"},
            {"id": 3, "op": "drain"},
            {"id": 4, "op": "resume", "domain": "service"},
            {"id": 5, "op": "emit", "topic": "orders.created", "data": {"n": 1}},
            {"id": 6, "op": "sync"},
            {"id": 7, "op": "status"},
        ]:
            await conn.call(req)
        await conn.aclose()
    uid, pid = os.getuid(), os.getpid()
    assert [r.getMessage() for r in caplog.records if r.name == "oneiric.audit"] == [
        f'audit uid={uid} pid={pid} op=pause target=adapter/cache note="maint" outcome=ok',
        f"audit uid={uid} pid={pid} op=drain target=* note=None outcome=accepted",
        f"audit uid={uid} pid={pid} op=drain target=* note=None outcome=ok",
        f"audit uid={uid} pid={pid} op=resume target=service note=None outcome=ok",
        # not asked to wait: queued, accepted, audited once
        f"audit uid={uid} pid={pid} op=emit target=orders.created note=None outcome=accepted",
        f"audit uid={uid} pid={pid} op=sync target=* note=None outcome=accepted",
        f"audit uid={uid} pid={pid} op=sync target=* note=None outcome=conflict",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "oneiric.audit")


@pytest.mark.anyio
async def test_cancelled_mutating_request_is_audited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="oneiric.audit")
    handler = FakeHandler()
    async with running_server(handler) as path:
        conn = await Raw.open(path)
        await conn.send({"id": 1, "op": "run", "domain": "workflow", "key": "etl"})
        await reached(handler.running)
        await conn.aclose()
        await reached(handler.cancelled)
    audit = [r.getMessage() for r in caplog.records if r.name == "oneiric.audit"]
    # accepted when dispatched (it may already have taken effect), then how it ended
    assert audit == [
        f"audit uid={os.getuid()} pid={os.getpid()} op=run target=workflow/etl note=None "
        "outcome=accepted",
        f"audit uid={os.getuid()} pid={os.getpid()} op=run target=workflow/etl note=None "
        "outcome=cancelled",
    ]


# --- binding ---------------------------------------------------------------------------------


@contextmanager
def scratch() -> Iterator[str]:
    d = _tmpdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_bind_refuses_when_a_live_daemon_answers() -> None:
    with scratch() as d:
        path = os.path.join(d, "s")
        live = bind_control_socket(path, mode=0o600, group=None)
        with pytest.raises(AlreadyRunning) as info:
            bind_control_socket(path, mode=0o600, group=None)
        assert info.value.path == path and info.value.code == "conflict"
        assert path in str(info.value)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)  # left alone
        live.close()


def test_bind_treats_a_full_backlog_as_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    with scratch() as d:
        path = os.path.join(d, "s")
        live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        live.bind(path)
        live.listen(0)
        queued = []
        for _ in range(4):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(path)
            except BlockingIOError:
                c.close()
                break
            queued.append(c)
        with pytest.raises(AlreadyRunning):
            bind_control_socket(path, mode=0o600, group=None)
        for c in queued:
            c.close()
        live.close()


def test_bind_removes_a_stale_socket_file(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with scratch() as d:
        path = os.path.join(d, "s")
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(path)
        dead.close()  # the file stays behind, nothing listens
        sock = bind_control_socket(path, mode=0o600, group=None)
        assert "removing stale control socket" in caplog.text
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(path)  # the new socket listens
        probe.close()
        sock.close()


def test_bind_never_removes_a_non_socket_file_or_a_directory() -> None:
    """A mistyped --socket must not delete, say, the config file it points at."""
    with scratch() as d:
        path = os.path.join(d, "s")
        with open(path, "w") as f:
            f.write("precious")
        with pytest.raises(OneiricError, match="not a socket; refusing to remove it"):
            bind_control_socket(path, mode=0o600, group=None)
        with open(path) as f:
            assert f.read() == "precious"
        os.unlink(path)
        os.mkdir(path)
        with pytest.raises(OneiricError, match="is a directory"):
            bind_control_socket(path, mode=0o600, group=None)


def test_bind_rejects_overlong_paths() -> None:
    with scratch() as d:
        path = os.path.join(d, "x" * 120)
        with pytest.raises(OneiricError, match="at most 107 bytes"):
            bind_control_socket(path, mode=0o600, group=None)


def test_bind_creates_the_parent_directory_0755() -> None:
    with scratch() as d:
        path = os.path.join(d, "run", "s")
        old = os.umask(0o077)
        try:
            sock = bind_control_socket(path, mode=0o600, group=None)
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.stat(os.path.join(d, "run")).st_mode) == 0o755
        sock.close()


@pytest.mark.parametrize("mode", [0o600, 0o660, 0o666])
def test_bind_applies_mode_with_no_wider_window(mode: int, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    class Spy(socket.socket):
        def bind(self, address: Any) -> None:
            super().bind(address)
            seen.append(stat.S_IMODE(os.lstat(address).st_mode))

    monkeypatch.setattr(socket, "socket", Spy)
    old = os.umask(0)  # the most permissive process umask
    try:
        with scratch() as d:
            path = os.path.join(d, "s")
            sock = bind_control_socket(path, mode=mode, group=None)
            assert seen == [mode]  # right after bind(), before any chmod
            assert stat.S_IMODE(os.lstat(path).st_mode) == mode
            sock.close()
    finally:
        assert os.umask(old) == 0  # restored


def test_bind_applies_an_existing_group_and_skips_a_missing_one() -> None:
    nogroup = grp.getgrnam("nogroup").gr_gid
    with scratch() as d:
        path = os.path.join(d, "s")
        sock = bind_control_socket(path, mode=0o660, group="nogroup")
        assert os.lstat(path).st_gid == nogroup
        sock.close()
        os.unlink(path)
        sock = bind_control_socket(path, mode=0o660, group="no-such-group-oneiric")
        assert os.lstat(path).st_gid == os.getgid()
        sock.close()


def test_bind_failure_in_bind_leaves_the_path_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    class Failing(socket.socket):
        def bind(self, address: Any) -> None:
            raise PermissionError("simulated")

    with scratch() as d:
        path = os.path.join(d, "s")
        with open(path, "w"):
            pass
        monkeypatch.setattr(socket, "socket", Failing)
        monkeypatch.setattr(listen_mod, "_clear_stale", lambda path: None)
        with pytest.raises(PermissionError):
            bind_control_socket(path, mode=0o600, group=None)
        assert os.path.exists(path)  # not ours: not removed


def test_bind_reports_an_unprobeable_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unprobeable(socket.socket):
        def connect(self, address: Any) -> None:
            raise PermissionError(13, "Permission denied")

    with scratch() as d:
        path = os.path.join(d, "s")
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(path)
        monkeypatch.setattr(socket, "socket", Unprobeable)
        with pytest.raises(OneiricError, match="cannot tell whether a daemon answers"):
            bind_control_socket(path, mode=0o600, group=None)
        other.close()


def test_bind_survives_a_refused_chown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chown", refuse)
    with scratch() as d:
        sock = bind_control_socket(os.path.join(d, "s"), mode=0o660, group="nogroup")
        sock.close()
    assert "cannot give control socket" in caplog.text


def test_probe_live() -> None:
    with scratch() as d:
        path = os.path.join(d, "s")
        listen_mod.probe_live(path)  # nothing there: fine
        live = bind_control_socket(path, mode=0o600, group=None)
        with pytest.raises(AlreadyRunning):
            listen_mod.probe_live(path)
        live.close()
        listen_mod.probe_live(path)  # stale file: fine, and left for bind to remove
        assert os.path.exists(path)


def test_bind_failure_after_bind_removes_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_chown(path: str, group: str | None) -> None:
        raise OSError("simulated")

    monkeypatch.setattr(listen_mod, "_apply_group", broken_chown)
    with scratch() as d:
        path = os.path.join(d, "s")
        with pytest.raises(OSError, match="simulated"):
            bind_control_socket(path, mode=0o600, group="x")
        assert not os.path.lexists(path)


def _free_fd() -> int:
    """An unused descriptor number well above anything pytest holds."""
    fd = 700
    while True:
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            return fd
        fd += 1


def test_open_control_socket_prefers_the_one_systemd_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LISTEN_FDS: the passed socket is used as is (its file is systemd's: not ours to remove),
    the variables are consumed, and nothing is bound at the configured path."""
    with scratch() as d:
        fd = _free_fd()
        monkeypatch.setattr(systemd, "SD_LISTEN_FDS_START", fd)
        passed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        passed.bind(os.path.join(d, "activated"))
        passed.listen()
        os.dup2(passed.fileno(), fd, inheritable=True)
        passed.close()
        environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", "KEEP": "x"}
        opened = open_control_socket(
            os.path.join(d, "configured"), mode=0o600, group=None, environ=environ
        )
        try:
            assert (opened.sock.fileno(), opened.owns_file) == (fd, False)
            assert opened.sock.getsockname() == os.path.join(d, "activated")
            assert environ == {"KEEP": "x"}
            assert not os.path.exists(os.path.join(d, "configured"))
        finally:
            opened.sock.close()
        # without LISTEN_FDS: bound at the path, and the file is ours
        bound = open_control_socket(
            os.path.join(d, "configured"), mode=0o600, group=None, environ=environ
        )
        try:
            assert bound.owns_file and stat.S_ISSOCK(os.lstat(bound.sock.getsockname()).st_mode)
        finally:
            bound.sock.close()


@pytest.mark.anyio
async def test_serve_accepts_a_socket_handed_over_as_is() -> None:
    """As with systemd's LISTEN_FDS: a plain bound, listening socket."""
    with scratch() as d:
        path = os.path.join(d, "s")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen()
        inherited = socket.socket(fileno=os.dup(sock.fileno()))
        sock.close()
        async with anyio.create_task_group() as tg:
            await tg.start(
                partial(serve, inherited, FakeHandler(), admin_group=None, idle_timeout=5)
            )
            assert await serves_a_new_connection(path)
            tg.cancel_scope.cancel()
        assert inherited.fileno() == -1  # serve() owned and closed it


@pytest.mark.anyio
async def test_admin_by_a_supplementary_group_the_peer_really_holds() -> None:
    """nobody is not listed in group 'daemon', but a process holding it (SupplementaryGroups=,
    containers) is an admin: the kernel's SO_PEERGROUPS decides, not /etc/group."""
    import grp

    gid = grp.getgrnam("daemon").gr_gid
    async with running_server(FakeHandler(), admin_group="daemon", mode=0o666) as path:
        os.chmod(os.path.dirname(path), 0o755)
        as_member = await run_as_nobody(path, [("pause", {})], groups=[gid])
        assert as_member == [{"result": {"op": "pause"}}]
        plain = await run_as_nobody(path, [("pause", {})])
        assert plain[0]["code"] == "permission_denied"


@pytest.mark.anyio
async def test_connections_beyond_the_cap_get_one_error_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(peers_mod, "MAX_CONNECTIONS", 2)
    async with running_server(FakeHandler()) as path:
        first, second = await Raw.open(path), await Raw.open(path)
        for conn in (first, second):  # both accepted and served
            assert (await conn.call({"id": 1, "op": "ping"}))["ok"] is True
        third = await Raw.open(path)
        reply = await third.recv()
        assert reply["error"]["code"] == "unavailable" and "too many" in reply["error"]["message"]
        await third.wait_eof()
        await first.aclose()
        await anyio.wait_all_tasks_blocked()  # the server has seen the close
        fourth = await Raw.open(path)  # a slot freed up
        assert (await fourth.call({"id": 2, "op": "ping"}))["ok"] is True
        for conn in (second, fourth):
            await conn.aclose()


@pytest.mark.anyio
async def test_deeply_nested_json_is_a_bad_request_not_a_dropped_connection() -> None:
    async with running_server(FakeHandler()) as path:
        conn = await Raw.open(path)
        nested = b'{"id":7,"op":"ping","x":' + b"[" * 5000 + b"]" * 5000 + b"}\n"
        await conn.send(nested)
        reply = await conn.recv()
        assert reply["error"]["code"] == "bad_request" and "nested" in reply["error"]["message"]
        assert (await conn.call({"id": 8, "op": "ping"}))["ok"] is True
        await conn.aclose()


@pytest.mark.anyio
async def test_audit_line_cannot_be_forged_through_a_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="oneiric.audit")
    async with running_server(FakeHandler()) as path:
        conn = await Raw.open(path)
        evil = "x\n2026 INFO oneiric.audit: audit uid=0 op=resume target=* outcome=ok"
        reply = await conn.call({"id": 1, "op": "pause", "domain": "adapter", "key": evil})
        await conn.aclose()
    assert reply["error"]["code"] == "bad_request" and "$.key" in reply["error"]["message"]
    assert [r for r in caplog.records if r.name == "oneiric.audit"] == []  # never decoded
