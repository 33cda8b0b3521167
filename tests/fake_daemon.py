"""A scripted stand-in for oneiricd: a real Unix-socket NDJSON server on a thread.

Tests of clients (``oneiricctl``) script the reply per op, then assert exactly which requests
arrived. Each scripted reply can stream events first (``watch`` snapshots, ``drain`` progress),
hold the request open without replying (to test Ctrl-C and reply timeouts), or drop the
connection. Replies echo the request's ``id`` as the real daemon does (SPEC §8).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any


@dataclass
class Script:
    result: Any = None
    error: dict[str, Any] | None = None
    events: list[Any] = field(default_factory=list)
    hold: bool = False  # after the events: no reply, keep the connection open
    drop: bool = False  # after the events: close the connection without a reply


class FakeDaemon:
    """``with FakeDaemon() as fake: fake.on("status", doc); ...; fake.sent == [...]``."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="on", dir="/tmp")
        self.path = os.path.join(self.dir, "oneiricd.sock")
        self.requests: list[dict[str, Any]] = []
        self.holding = threading.Event()  # set when a ``hold`` script has sent its events
        self._scripts: dict[str, Script] = {}
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)

    # --- scripting -----------------------------------------------------------------------------

    def on(
        self,
        op: str,
        result: Any = None,
        *,
        events: list[Any] | None = None,
        hold: bool = False,
        drop: bool = False,
    ) -> None:
        self._scripts[op] = Script(result=result, events=events or [], hold=hold, drop=drop)

    def fail(
        self,
        op: str,
        code: str,
        message: str,
        detail: Any = None,
        *,
        events: list[Any] | None = None,
    ) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if detail is not None:
            error["detail"] = detail
        self._scripts[op] = Script(error=error, events=events or [])

    @property
    def sent(self) -> list[dict[str, Any]]:
        """The requests received, without their ``id`` (the client numbers them)."""
        with self._lock:
            return [{k: v for k, v in r.items() if k != "id"} for r in self.requests]

    # --- serving -------------------------------------------------------------------------------

    def start(self) -> FakeDaemon:
        self._spawn(self._accept_loop)
        return self

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # the listener was shut down
            with self._lock:
                self._conns.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            for line in reader:
                request = json.loads(line)
                with self._lock:
                    self.requests.append(request)
                if not self._answer(conn, reader, request):
                    return

    def _answer(self, conn: socket.socket, reader: Any, request: dict[str, Any]) -> bool:
        req_id = request.get("id")
        script = self._scripts.get(request.get("op", ""))
        if script is None:
            error = {"code": "unknown_op", "message": f"unknown op {request.get('op')!r}"}
            return self._send(conn, {"id": req_id, "ok": False, "error": error})
        for event in script.events:
            if not self._send(conn, {"id": req_id, "event": event}):
                return False
        if script.hold:
            self.holding.set()
            reader.read()  # until the client goes away or the fake is closed
            return False
        if script.drop:
            conn.shutdown(socket.SHUT_RDWR)
            return False
        if script.error is not None:
            return self._send(conn, {"id": req_id, "ok": False, "error": script.error})
        return self._send(conn, {"id": req_id, "ok": True, "result": script.result})

    @staticmethod
    def _send(conn: socket.socket, message: dict[str, Any]) -> bool:
        try:
            conn.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):  # never started, or already gone
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):  # the client may have closed it already
                conn.shutdown(socket.SHUT_RDWR)
        if self._threads:
            self._threads[0].join(timeout=10)  # the accept loop: no new threads after this
        for thread in self._threads[1:]:
            thread.join(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> FakeDaemon:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
