"""The transport under python-tuf's ngclient: HTTP(S) with timeouts and size caps, or files.

Runs only in worker threads (ngclient is synchronous); the event loop never calls it. Size
caps are enforced twice: ngclient's ``download_file`` stops at the length TUF expects, and
every response here is cut off at a hard ceiling as well, so neither a lying server nor a
slow drip can hold a worker thread or fill memory. A whole download also has a deadline, not
just each socket read.

``conditional_get`` is the cheap path of a refresh that brings nothing new: one request for
``timestamp.json`` with ``If-None-Match``, answered ``304 Not Modified`` by any static server
or CDN. Local directories (air-gapped hosts, tests) are read as files, a missing file being a
404 as TUF expects.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, BinaryIO
from urllib.parse import unquote, urlsplit

import urllib3
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface

from oneiric._const import VERSION

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


class Fetcher(FetcherInterface):
    """Thread-safe (urllib3's pool is); one per source, shared by its checks."""

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        deadline: float = 60.0,
        ceiling: int = 64 * 1024 * 1024,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self.deadline = deadline
        self.ceiling = ceiling
        self.requests = 0  # counted for status and the fleet simulation
        self.bytes = 0
        self.etags: dict[str, str] = {}
        self._primed: dict[str, bytes] = {}
        self._pool = pool or urllib3.PoolManager(
            num_pools=4,
            maxsize=2,
            # one retry for a kept-alive connection the server closed meanwhile (GETs are
            # idempotent); no redirects, no retries on HTTP statuses
            retries=urllib3.Retry(total=1, connect=1, read=1, redirect=0, status=0, other=0),
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            headers={"User-Agent": f"oneiricd/{VERSION}"},
        )

    # -- FetcherInterface ----------------------------------------------------------------------
    def _fetch(self, url: str) -> Iterator[bytes]:
        body = self._primed.pop(url, None)
        if body is not None:
            return iter((body,))
        if _is_local(url):
            return self._file_chunks(_local_path(url))
        resp = self._get(url, {})
        if resp.status != 200:
            resp.drain_conn()
            resp.release_conn()
            raise exceptions.DownloadHTTPError(f"GET {url}: HTTP {resp.status}", resp.status)
        etag = resp.headers.get("ETag")
        if etag:
            self.etags[url] = etag
        return self._chunks(url, resp)

    @contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """ngclient's download into memory instead of a temporary file: metadata is small and
        a target is bounded by ``[remote] max_bytes``, while a temporary file costs several
        filesystem calls per download (measured: over a third of a host's refresh CPU)."""
        buf = io.BytesIO()
        got = 0
        for chunk in self.fetch(url):
            got += len(chunk)
            if got > max_length:
                raise exceptions.DownloadLengthMismatchError(
                    f"Downloaded {got} bytes exceeding the maximum allowed length of {max_length}"
                )
            buf.write(chunk)
        buf.seek(0)
        yield buf

    # -- the one-request check -----------------------------------------------------------------
    def conditional_get(self, url: str, max_length: int) -> bytes | None:
        """The body of ``url``, or None when the server says it is unchanged (304) since the
        ETag remembered from the last download of this URL."""
        if _is_local(url):
            return b"".join(self._file_chunks(_local_path(url), max_length))
        headers = {}
        if url in self.etags:
            headers["If-None-Match"] = self.etags[url]
        resp = self._get(url, headers)
        if resp.status == 304:
            resp.drain_conn()  # an unread response poisons the kept-alive connection
            resp.release_conn()
            return None
        if resp.status != 200:
            resp.drain_conn()
            resp.release_conn()
            raise exceptions.DownloadHTTPError(f"GET {url}: HTTP {resp.status}", resp.status)
        etag = resp.headers.get("ETag")
        if etag:
            self.etags[url] = etag
        return b"".join(self._chunks(url, resp, max_length))

    def prime(self, url: str, body: bytes) -> None:
        """The next fetch of ``url`` returns ``body`` (just received from the server by
        :meth:`conditional_get`) instead of asking again; once only. The caller must
        :meth:`unprime` when its check ends, so no later check ever sees these bytes."""
        self._primed[url] = body

    def unprime(self) -> None:
        self._primed.clear()

    # -- internals -----------------------------------------------------------------------------
    def _get(self, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        self.requests += 1
        try:
            return self._pool.request(
                "GET", url, headers=headers, preload_content=False, redirect=False
            )
        except urllib3.exceptions.HTTPError as exc:
            raise exceptions.DownloadError(f"GET {url}: {_short(exc)}") from exc

    def _chunks(
        self, url: str, resp: urllib3.BaseHTTPResponse, limit: int | None = None
    ) -> Iterator[bytes]:
        cap = self.ceiling if limit is None else min(limit, self.ceiling)
        end = time.monotonic() + self.deadline
        got = 0
        try:
            while True:
                # read1: whatever one recv brings, so a server that drips a byte at a time
                # (TUF's slow-retrieval attack) meets the deadline check on every byte; a
                # buffered read(CHUNK) would wait for 64 KiB, the deadline never consulted
                chunk = resp.read1(CHUNK)
                if not chunk:
                    break
                got += len(chunk)
                self.bytes += len(chunk)
                if got > cap:
                    raise exceptions.DownloadLengthMismatchError(
                        f"GET {url}: more than {cap} bytes; refusing the rest"
                    )
                if time.monotonic() > end:
                    raise exceptions.SlowRetrievalError(
                        f"GET {url}: not complete after {self.deadline:g}s"
                    )
                yield chunk
        except urllib3.exceptions.HTTPError as exc:
            raise exceptions.DownloadError(f"GET {url}: {_short(exc)}") from exc
        finally:
            resp.release_conn()

    def _file_chunks(self, path: str, limit: int | None = None) -> Iterator[bytes]:
        self.requests += 1
        cap = self.ceiling if limit is None else min(limit, self.ceiling)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by the generator below
        except (FileNotFoundError, NotADirectoryError):
            raise exceptions.DownloadHTTPError(f"{path}: no such file", 404) from None
        except OSError as exc:
            raise exceptions.DownloadError(f"{path}: {exc.strerror or exc}") from exc
        return _read_file(fh, path, cap, self)


def _read_file(fh: BinaryIO, path: str, cap: int, fetcher: Fetcher) -> Iterator[bytes]:
    with fh:
        got = 0
        while chunk := fh.read(CHUNK):
            got += len(chunk)
            fetcher.bytes += len(chunk)
            if got > cap:
                raise exceptions.DownloadLengthMismatchError(
                    f"{path}: more than {cap} bytes; refusing the rest"
                )
            yield chunk


def _is_local(url: str) -> bool:
    return url.startswith(("file://", "/"))


def _local_path(url: str) -> str:
    if url.startswith("file://"):
        return unquote(urlsplit(url).path)
    return os.path.normpath(unquote(url))


def _short(exc: BaseException) -> str:
    """urllib3 wraps the cause several times; the innermost reason is what an operator needs."""
    reason = getattr(exc, "reason", None)
    return str(reason or exc)
