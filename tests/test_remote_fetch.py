"""The remote fetcher against a hostile HTTP server on loopback: a slow drip (TUF's
slow-retrieval attack) must meet the download deadline, not hold the worker thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from tuf.api import exceptions

from oneiric.remote.fetch import Fetcher


class Drip:
    """Answers one GET with headers promising a megabyte, then sends one byte at a time
    until the client goes away (or ``limit`` bytes, a backstop): ``finished`` is set only
    when it sent them all."""

    def __init__(self, limit: int = 3000) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.limit = limit
        self.finished = threading.Event()
        self.client_gone = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n"
                b"Content-Type: application/octet-stream\r\n\r\n"
            )
            gone = threading.Event()
            for _ in range(self.limit):
                try:
                    conn.sendall(b"x")
                except OSError:
                    self.client_gone.set()
                    return
                if gone.wait(0.01):  # pacing of the drip itself, not a wait for the test
                    return
            self.finished.set()


@pytest.fixture
def drip() -> Iterator[Drip]:
    server = Drip()
    yield server
    server.listener.close()


def test_a_dripping_server_meets_the_deadline(drip: Drip) -> None:
    fetcher = Fetcher(connect_timeout=5, read_timeout=5, deadline=0.5)
    url = f"http://127.0.0.1:{drip.port}/metadata/timestamp.json"
    with pytest.raises(exceptions.SlowRetrievalError, match="not complete after"):
        list(fetcher.fetch(url))
    # cut off while the server was still dripping: a buffered read would have waited for
    # the whole drip (3,000 bytes) before looking at the deadline
    assert not drip.finished.is_set()
