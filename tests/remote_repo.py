"""Test helpers for remote manifests: a real HTTP server on loopback and TUF repositories.

``StaticServer`` is ``http.server`` in a thread serving a directory, with ETags (as nginx and
CDNs send them), request counting, and stop/start on the same port (the source going down and
coming back). Repositories are made with the publisher library itself (``oneiric.remote.
publish``), so tests exercise what operators run.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from oneiric.remote import publish


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx and CDNs: connections are reused

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_head(self) -> Any:
        self.server.requests.append(self.path)
        path = self.translate_path(self.path)
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                etag = '"' + hashlib.sha256(fh.read()).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return None
            self._etag = etag
        return super().send_head()

    def end_headers(self) -> None:
        etag = getattr(self, "_etag", None)
        if etag:
            self.send_header("ETag", etag)
            self._etag = None
        super().end_headers()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, directory: Path) -> None:
        self.requests: list[str] = []
        self.directory = directory
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        super().__init__(
            ("127.0.0.1", port),
            lambda *a: _Handler(*a, directory=str(self.directory)),  # type: ignore[misc]
        )

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """A server that goes down takes its kept-alive connections with it."""
        with self.lock:
            for conn in list(self.connections):
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class StaticServer:
    """Serves ``directory`` on 127.0.0.1:<ephemeral port> until ``stop()``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.requests: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self._server = _Server(self.port, self.directory)
        self._server.requests = self.requests
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            assert self._thread is not None
            self._thread.join()
            self._server = None


@contextmanager
def serving(directory: Path) -> Iterator[StaticServer]:
    server = StaticServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def manifest(*entries: dict[str, Any], select: dict[str, str] | None = None) -> bytes:
    """TOML for components (dicts of component fields; domain defaults to adapter) and
    adapter selections."""
    out = []
    for entry in entries:
        fields = {"domain": "adapter", **entry}
        out.append("[[component]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in fields.items()))
    if select:
        out.append("[selections.adapter]\n" + "".join(f'{k} = "{v}"\n' for k, v in select.items()))
    return "\n".join(out).encode()


def thing(key: str, provider: str, **settings: Any) -> dict[str, Any]:
    """A ``components:Thing`` candidate named ``provider``."""
    return {
        "key": key,
        "provider": provider,
        "factory": "components:Thing",
        "settings": {"name": provider, **settings},
    }


MEM = "oneiric.builtin.cache:MemoryCache"


def new_repo(path: Path, *, keys: int = 1, threshold: int = 1) -> Path:
    """A repository; returns the root.json hosts install (copied beside it, mode 0644)."""
    root = publish.init(path, keys=keys, threshold=threshold)
    anchor = path.parent / "root.json"
    shutil.copyfile(root, anchor)
    os.chmod(anchor, 0o644)
    return anchor


def remote_config(url: str, root: Path, **extra: str) -> str:
    fields = {"url": f'"{url}"', "root": f'"{root}"', "refresh": '"1h"', "refresh_max": '"2h"'}
    fields.update(extra)
    lines = [f"{k} = {v}" for k, v in fields.items()]
    return "[remote]\n" + "\n".join(lines) + "\n"


def snapshot_repo(path: Path) -> Path:
    """A copy of the repository as it is now (to serve later: a rollback attack)."""
    dest = path.parent / f"{path.name}.copy{len(list(path.parent.glob(path.name + '.copy*')))}"
    shutil.copytree(path, dest)
    return dest


def make_wheel(dest: Path, dist: str, version: str, modules: dict[str, str]) -> Path:
    """A minimal pure-Python wheel with ``modules`` (relative path -> source)."""
    name = f"{dist}-{version}-py3-none-any.whl"
    wheel = dest / name
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        for rel, src in modules.items():
            zf.writestr(rel, src)
        zf.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        )
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")
    return wheel


def publish_signed_by(
    path: Path,
    manifests: dict[str, bytes],
    signers: list[Any],
    *,
    mutate: Any = None,
) -> None:
    """Publish with exactly ``signers`` on targets (maybe none, maybe foreign keys) and
    optionally rewrite the signed targets JSON; snapshot and timestamp are signed properly.
    This is what an attacker or a broken pipeline would put on the server."""
    from tuf.api.serialization.json import JSONSerializer

    repo = publish.Repo.load(path)
    for name, data in manifests.items():
        repo.add_target(name, data)
    t = repo.targets.signed
    t.version += 1
    t.expires = publish._expiry(86400)
    repo.targets.signatures.clear()
    for s in signers:
        repo.targets.sign(s, append=True)
    data = repo.targets.to_bytes(JSONSerializer(compact=False))
    target = path / "metadata" / f"{t.version}.targets.json"
    if mutate is not None:
        # the publisher's own copy stays loadable: repair() puts it back before republishing
        (path / "metadata" / f".{target.name}.clean").write_bytes(data)
        data = mutate(data)
    target.write_bytes(data)
    repo.bump_snapshot(publish.default_signers(path), expires=None)


def duplicate_signatures(data: bytes) -> bytes:
    doc = json.loads(data)
    doc["signatures"] = doc["signatures"] * 2
    return json.dumps(doc).encode()


def repair(path: Path) -> None:
    """Undo ``publish_signed_by(mutate=...)`` in the publisher's files (not what hosts saw)."""
    for clean in (path / "metadata").glob(".*.clean"):
        clean.replace(path / "metadata" / clean.name[1:].removesuffix(".clean"))
