"""The blocking control client against a real server and against scripted fake daemons."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import anyio
import pytest

from oneiric.control.client import (
    AccessDenied,
    ControlClient,
    ControlError,
    DaemonNotRunning,
    RemoteError,
)
from oneiric.control.listen import bind_control_socket
from oneiric.control.peers import Peer
from oneiric.control.protocol import (
    ExplainRequest,
    PingRequest,
    ReloadRequest,
    Request,
    RunRequest,
    WatchRequest,
)
from oneiric.control.server import serve
from oneiric.control.session import Emit
from oneiric.errors import ConfigError, NotFound

pytestmark = pytest.mark.both_backends  # the async ones: on asyncio and on trio

WAIT = 10


class Handler:
    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.requests: list[Request] = []

    async def __call__(self, request: Request, peer: Peer, emit: Emit) -> Any:
        self.requests.append(request)
        match request:
            case PingRequest():
                return {"pong": True}
            case WatchRequest():
                for n in range(3):
                    await emit({"n": n})
                return {"done": True}
            case ExplainRequest():
                raise NotFound(f"no candidates for {request.domain}/{request.key}")
            case ReloadRequest():
                raise ConfigError("expected an integer", file="d.toml", path="daemon.x")
            case RunRequest():
                await self.gate.wait()
                return {"ran": request.key}
            case _:
                return {"op": type(request).__struct_config__.tag}


@contextmanager
def tmpdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="on", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@asynccontextmanager
async def daemon(handler: Handler, *, mode: int = 0o600) -> AsyncIterator[str]:
    with tmpdir() as d:
        path = os.path.join(d, "c.sock")
        sock = bind_control_socket(path, mode=mode, group=None)
        async with anyio.create_task_group() as tg:
            await tg.start(partial(serve, sock, handler, admin_group=None, idle_timeout=30))
            yield path
            tg.cancel_scope.cancel()


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with anyio.fail_after(WAIT):
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))


# --- against the real server -----------------------------------------------------------------


@pytest.mark.anyio
async def test_call_returns_result_and_reuses_the_connection() -> None:
    handler = Handler()
    async with daemon(handler) as path:
        with ControlClient(path) as client:
            assert await in_thread(client.call, "ping") == {"pong": True}
            assert await in_thread(client.call, "status", domain="adapter") == {"op": "status"}
        assert [r.id for r in handler.requests] == [1, 2]
        assert client._sock is None  # closed by the context manager
        client.close()  # and closing again is harmless


@pytest.mark.anyio
async def test_none_arguments_are_omitted() -> None:
    async with daemon(Handler()) as path:
        with ControlClient(path) as client, pytest.raises(RemoteError) as info:
            await in_thread(client.call, "explain", domain="adapter", key=None)
    assert info.value.code == "bad_request"
    assert "missing required field `key`" in info.value.message  # not "got `null`"


@pytest.mark.anyio
async def test_error_replies_become_remote_errors() -> None:
    async with daemon(Handler()) as path:
        with ControlClient(path) as client:
            with pytest.raises(RemoteError) as info:
                await in_thread(client.call, "explain", domain="adapter", key="cache")
            assert (info.value.code, info.value.detail) == ("not_found", None)
            assert info.value.message == "no candidates for adapter/cache"
            assert str(info.value) == "no candidates for adapter/cache [not_found]"
            with pytest.raises(RemoteError) as info:
                await in_thread(client.call, "reload")
            assert info.value.code == "bad_request"
            assert info.value.detail == "expected an integer"
            with pytest.raises(RemoteError) as info:
                await in_thread(client.call, "frobnicate")
            assert info.value.code == "unknown_op"
            assert await in_thread(client.call, "ping") == {"pong": True}  # still usable


@pytest.mark.anyio
async def test_stream_passes_events_then_returns_result() -> None:
    async with daemon(Handler()) as path:
        events: list[Any] = []
        with ControlClient(path) as client:
            result = await in_thread(client.stream, "watch", events.append)
            assert result == {"done": True}
            assert events == [{"n": 0}, {"n": 1}, {"n": 2}]
            assert await in_thread(client.call, "watch") == {"done": True}  # call ignores events


@pytest.mark.anyio
async def test_reply_timeout_drops_the_connection_and_next_call_reconnects() -> None:
    handler = Handler()
    async with daemon(handler) as path:
        with ControlClient(path, timeout=0.2) as client:
            with pytest.raises(RemoteError) as info:
                await in_thread(client.call, "run", domain="task", key="slow")
            assert info.value.code == "timeout"
            assert "'run'" in info.value.message and path in info.value.message
            assert client._sock is None
            handler.gate.set()
            assert await in_thread(client.call, "ping") == {"pong": True}


# --- connection failures ---------------------------------------------------------------------


def test_no_socket_file() -> None:
    with tmpdir() as d:
        path = os.path.join(d, "missing.sock")
        with pytest.raises(DaemonNotRunning) as info:
            ControlClient(path).call("ping")
    err = info.value
    assert err.path == path
    assert "no socket file" in err.reason
    assert path in str(err) and "systemctl status oneiricd" in str(err)
    assert isinstance(err, ControlError)


def test_missing_directory() -> None:
    with tmpdir() as d:
        path = os.path.join(d, "nope", "c.sock")
        with pytest.raises(DaemonNotRunning, match="does not exist"):
            ControlClient(path).connect()


def test_connection_refused() -> None:
    with tmpdir() as d:
        path = os.path.join(d, "stale.sock")
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(path)
        dead.close()
        with pytest.raises(DaemonNotRunning) as info:
            ControlClient(path).call("ping")
    assert "refused" in info.value.reason


def test_overlong_path_is_reported() -> None:
    path = "/tmp/" + "x" * 200
    with pytest.raises(DaemonNotRunning) as info:
        ControlClient(path).connect()
    assert "too long" in info.value.reason


def test_full_backlog_is_unavailable() -> None:
    with tmpdir() as d:
        path = os.path.join(d, "busy.sock")
        busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        busy.bind(path)
        busy.listen(0)
        queued: list[socket.socket] = []
        while True:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(path)
            except BlockingIOError:
                c.close()
                break
            queued.append(c)
        with pytest.raises(RemoteError) as info:
            ControlClient(path).connect()
        assert info.value.code == "unavailable"
        for c in queued:
            c.close()
        busy.close()


_AS_NOBODY = """
import os, sys
from oneiric.control.client import ControlClient, AccessDenied
os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    ControlClient(sys.argv[1]).call("ping")
except AccessDenied as exc:
    print("AccessDenied:", exc)
"""


@pytest.mark.anyio
async def test_eacces_is_access_denied() -> None:
    async with daemon(Handler(), mode=0o666) as path:
        assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700  # root's, closed
        # Imports as root, then drops to nobody: the venv interpreter lives under /root.
        proc = await anyio.run_process([sys.executable, "-c", _AS_NOBODY, path], check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.startswith("AccessDenied:"), out
    assert path in out and "group membership" in out


# --- scripted fake daemons -------------------------------------------------------------------


@contextmanager
def fake_daemon(script: bytes | None) -> Iterator[tuple[str, list[bytes]]]:
    """Accept one connection, read one request line, write ``script`` (None: just close)."""
    received: list[bytes] = []
    with tmpdir() as d:
        path = os.path.join(d, "f.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen()

        def run() -> None:
            conn, _ = srv.accept()
            with conn:
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                received.append(buf)
                if script is not None:
                    conn.sendall(script)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        try:
            yield path, received
        finally:
            t.join(WAIT)
            srv.close()


def test_request_line_format() -> None:
    with fake_daemon(b'{"id":1,"ok":true,"result":null}\n') as (path, received):
        assert ControlClient(path).call("drain", domain="task", note=None, wait=False) is None
    assert json.loads(received[0]) == {"id": 1, "op": "drain", "domain": "task", "wait": False}
    assert received[0].count(b"\n") == 1


def test_skips_blank_lines_stale_ids_and_events_then_takes_its_reply() -> None:
    script = (
        b"\n"
        b'{"id":99,"ok":true,"result":"stale"}\n'
        b'{"id":1,"event":{"n":1}}\r\n'
        b'{"id":1,"ok":true,"result":"mine"}\n'
    )
    with fake_daemon(script) as (path, _):
        assert ControlClient(path).call("ping") == "mine"


def test_reply_arriving_in_pieces() -> None:
    with fake_daemon(b'{"id":1,"ok":true,' + b'"result":[1,2]}\n') as (path, _):
        assert ControlClient(path).call("ping") == [1, 2]


def test_error_with_null_id_is_raised() -> None:
    script = b'{"id":null,"ok":false,"error":{"code":"too_large","message":"too long"}}\n'
    with fake_daemon(script) as (path, _), pytest.raises(RemoteError) as info:
        ControlClient(path).call("ping")
    assert (info.value.code, info.value.message) == ("too_large", "too long")


def test_error_reply_without_error_object() -> None:
    with fake_daemon(b'{"id":1,"ok":false}\n') as (path, _), pytest.raises(RemoteError) as info:
        ControlClient(path).call("ping")
    assert info.value.code == "internal"


def test_unreadable_reply() -> None:
    with fake_daemon(b"<html>\n") as (path, _), pytest.raises(RemoteError) as info:
        ControlClient(path).call("ping")
    assert info.value.code == "internal"
    assert "unreadable reply" in info.value.message


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"[1,2]", "expected a JSON object, got list"),
        (b'{"id":"1","ok":true,"result":1}', "'id' must be an integer or null, got str"),
        (b'{"id":true,"ok":true,"result":1}', "'id' must be an integer or null, got bool"),
        (b'{"id":1,"ok":"yes","result":1}', "'ok' must be a boolean or null, got str"),
        (b'{"id":1,"ok":false,"error":"boom"}', "'error' must be an object or null, got str"),
        (b'{"id":1,"ok":false,"error":{"code":5}}', "'error.code' must be a string, got int"),
        (b'{"id":1,"ok":false,"error":{"message":[]}}', "'error.message' must be a string"),
        (b'{"id":1,"ok":true,"result":NaN}', "NaN is not valid JSON"),
        (b'{"id":1,"ok":true,"result":"\xff"}', "can't decode byte 0xff"),
    ],
)
def test_malformed_replies_are_unreadable(line: bytes, why: str) -> None:
    """The same checks the typed decoder made: a reply whose fields have the wrong types is
    refused (and the connection dropped), not half-interpreted."""
    with fake_daemon(line + b"\n") as (path, _):
        client = ControlClient(path)
        with pytest.raises(RemoteError) as info:
            client.call("ping")
    assert info.value.code == "internal"
    assert info.value.message.startswith("unreadable reply from oneiricd: ")
    assert why in info.value.message
    assert client._sock is None


def test_error_object_fields_default() -> None:
    script = b'{"id":1,"ok":false,"error":{"detail":{"n":1}},"extra":"ignored"}\n'
    with fake_daemon(script) as (path, _), pytest.raises(RemoteError) as info:
        ControlClient(path).call("ping")
    assert (info.value.code, info.value.message, info.value.detail) == ("internal", "", {"n": 1})


def test_null_event_is_still_an_event() -> None:
    """``"event": null`` is an event (its value is null); only a missing field is not one."""
    script = b'{"id":1,"event":null}\n{"id":1,"event":[1]}\n{"id":1,"ok":true,"result":2}\n'
    events: list[Any] = []
    with fake_daemon(script) as (path, _):
        assert ControlClient(path).stream("watch", events.append) == 2
    assert events == [None, [1]]


def test_request_line_is_compact_utf8() -> None:
    with fake_daemon(b'{"id":1,"ok":true,"result":null}\n') as (path, received):
        ControlClient(path).call("pause", domain="adapter", key="cache", note="maintenance ✓")
    assert received == [
        '{"id":1,"op":"pause","domain":"adapter","key":"cache","note":"maintenance ✓"}\n'.encode()
    ]


def test_unencodable_arguments_raise_before_sending() -> None:
    """NaN is not JSON: refuse it rather than write a line the daemon cannot read."""
    with tmpdir() as d:
        path = os.path.join(d, "n.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen()
        with ControlClient(path, timeout=WAIT) as client:
            with pytest.raises(ValueError, match="not JSON compliant"):
                client.call("run", payload=float("nan"))
            with pytest.raises(TypeError, match="not JSON serializable"):
                client.call("run", payload=object())
        srv.close()


def test_daemon_closing_mid_request() -> None:
    with fake_daemon(None) as (path, _):
        client = ControlClient(path)
        with pytest.raises(DaemonNotRunning) as info:
            client.call("ping")
    assert "closed the connection" in info.value.reason
    assert client._sock is None


def test_broken_connection_on_send() -> None:
    with tmpdir() as d:
        path = os.path.join(d, "b.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen()
        client = ControlClient(path)
        client.connect()
        client.connect()  # idempotent
        conn, _ = srv.accept()
        conn.close()  # the daemon goes away before the request is written
        srv.close()
        with pytest.raises(DaemonNotRunning) as info:
            client.call("ping", payload="x" * 1_000_000)
    assert "connection broke" in info.value.reason


# --- import weight ---------------------------------------------------------------------------


def test_client_import_is_light() -> None:
    code = (
        "import sys, oneiric.control.client\n"
        "heavy = ('anyio', 'watchfiles', 'click', 'oneiric.control.server', "
        "'oneiric.control.protocol', 'msgspec', 'socket', 'selectors', 'dataclasses', "
        "'pathlib')\n"
        "print([m for m in sys.modules if m.split('.')[0] in heavy or m in heavy])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    assert out.stdout.strip() == "[]"


def test_access_denied_and_remote_error_are_control_errors() -> None:
    assert issubclass(AccessDenied, ControlError)
    assert issubclass(RemoteError, ControlError)
    assert isinstance(AccessDenied("/x").path, str)
