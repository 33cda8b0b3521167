"""configure_logging: the line format with and without journald, multiline records, levels."""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import pytest

from configs import CACHE_A_B, SELECT_CACHE_A, daemon
from oneiric.logging_setup import LEVELS, configure_logging, fields

# 2026-11-25T10:00:00.123Z in UTC
FIXED_TIME = 1795600800.123


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
def journal_stream(tmp_path: Path) -> Iterator[tuple[TextIO, dict[str, str]]]:
    """A real file standing in for the journald stream, and the JOURNAL_STREAM naming it."""
    with open(tmp_path / "journal", "w+") as stream:
        st = os.fstat(stream.fileno())
        yield stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def emit(level: int, msg: str, *args: object, name: str = "oneiric.test") -> None:
    """Log through the logger tree (up to the root handler) with a fixed creation time."""
    record = logging.getLogger(name).makeRecord(name, level, __file__, 1, msg, args, None)
    record.created = FIXED_TIME
    record.msecs = 123.0
    logging.getLogger(name).handle(record)


def read(stream: TextIO) -> str:
    stream.flush()
    stream.seek(0)
    return stream.read()


def test_plain_format() -> None:
    out = io.StringIO()
    configure_logging("info", environ={}, stream=out)
    emit(logging.INFO, "hello %s", "world")
    emit(logging.WARNING, "careful")
    assert out.getvalue() == (
        "2026-11-25T10:00:00.123Z INFO oneiric.test: hello world\n"
        "2026-11-25T10:00:00.123Z WARNING oneiric.test: careful\n"
    )


def test_plain_format_real_clock() -> None:
    out = io.StringIO()
    configure_logging("debug", environ={}, stream=out)
    logging.getLogger("component.x").debug("from a plug-in logger")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z DEBUG component\.x: from a plug-in logger\n",
        out.getvalue(),
    )


NO_JOURNAL_SOCKET = "/nonexistent/oneiric-test/journal.socket"


def test_journal_format(journal_stream: tuple[TextIO, dict[str, str]]) -> None:
    """Without journald's native socket, records go to the stream with their priority."""
    stream, env = journal_stream
    configure_logging("debug", environ=env, stream=stream, journal_socket=NO_JOURNAL_SOCKET)
    emit(logging.DEBUG, "d")
    emit(logging.INFO, "i")
    emit(logging.WARNING, "w")
    emit(logging.ERROR, "e")
    emit(logging.CRITICAL, "c")
    emit(logging.INFO + 5, "custom level rounds down")
    assert read(stream) == (
        "<7>oneiric.test: d\n"
        "<6>oneiric.test: i\n"
        "<4>oneiric.test: w\n"
        "<3>oneiric.test: e\n"
        "<2>oneiric.test: c\n"
        "<6>oneiric.test: custom level rounds down\n"
    )


def test_journal_stream_must_match_the_actual_stream(
    journal_stream: tuple[TextIO, dict[str, str]],
) -> None:
    """Inherited JOURNAL_STREAM with stderr redirected elsewhere: plain format."""
    _, env = journal_stream
    out = io.StringIO()
    configure_logging("info", environ=env, stream=out)
    emit(logging.INFO, "hi")
    assert out.getvalue() == "2026-11-25T10:00:00.123Z INFO oneiric.test: hi\n"


def test_multiline_plain_is_indented() -> None:
    out = io.StringIO()
    configure_logging("info", environ={}, stream=out)
    emit(logging.ERROR, "first\nsecond\r\nthird\n")
    assert out.getvalue() == (
        "2026-11-25T10:00:00.123Z ERROR oneiric.test: first\n  second\n  third\n"
    )


def test_traceback_plain_stays_one_record() -> None:
    out = io.StringIO()
    configure_logging("info", environ={}, stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("oneiric.test").exception("activation failed")
    head, *rest = out.getvalue().splitlines()
    assert re.fullmatch(r"\S+Z ERROR oneiric\.test: activation failed", head)
    assert rest[0] == "  Traceback (most recent call last):"
    assert rest[-1] == "  RuntimeError: boom"
    assert all(line.startswith("  ") for line in rest)


def test_traceback_under_journal_keeps_priority(
    journal_stream: tuple[TextIO, dict[str, str]],
) -> None:
    stream, env = journal_stream
    configure_logging("info", environ=env, stream=stream, journal_socket=NO_JOURNAL_SOCKET)
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("oneiric.test").exception("swap failed")
    lines = read(stream).splitlines()
    assert lines[0] == "<3>oneiric.test: swap failed"
    assert lines[1] == "<3>  Traceback (most recent call last):"
    assert lines[-1] == "<3>  ValueError: bad"
    assert all(line.startswith("<3>  ") for line in lines[1:])


def test_empty_message() -> None:
    out = io.StringIO()
    configure_logging("info", environ={}, stream=out)
    emit(logging.INFO, "")
    assert out.getvalue() == "2026-11-25T10:00:00.123Z INFO oneiric.test: \n"


def test_level_filters() -> None:
    out = io.StringIO()
    configure_logging("WARNING", environ={}, stream=out)
    logging.getLogger("oneiric.test").info("hidden")
    logging.getLogger("oneiric.test").warning("shown")
    assert "hidden" not in out.getvalue()
    assert "shown" in out.getvalue()
    assert logging.getLogger().level == logging.WARNING


@pytest.mark.parametrize("bad", ["verbose", "", "warn", "10", "notset"])
def test_unknown_level_is_rejected(bad: str) -> None:
    before = logging.getLogger().handlers[:]
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(bad, environ={}, stream=io.StringIO())
    assert logging.getLogger().handlers == before  # nothing half-configured


def test_every_advertised_level_is_accepted() -> None:
    for name in LEVELS:
        configure_logging(name, environ={}, stream=io.StringIO())
        assert logging.getLogger().level == logging.getLevelName(name.upper())
    configure_logging(" Debug ", environ={}, stream=io.StringIO())
    assert logging.getLogger().level == logging.DEBUG


def test_idempotent() -> None:
    first, second = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    count = len(root.handlers)
    configure_logging("info", environ={}, stream=first)
    configure_logging("info", environ={}, stream=first)
    configure_logging("info", environ={}, stream=second)
    assert len(root.handlers) == count + 1
    emit(logging.INFO, "once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1


def test_default_stream_is_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake)
    configure_logging(environ={})
    emit(logging.INFO, "to stderr")
    assert fake.getvalue().endswith("INFO oneiric.test: to stderr\n")


# --- journald's native protocol ------------------------------------------------------------


def parse_journal_datagram(data: bytes) -> dict[str, str]:
    """journald's parser, in short: NAME=value lines, or NAME, newline, 64-bit LE length, raw."""
    out: dict[str, str] = {}
    while data:
        nl = data.index(b"\n")
        head = data[:nl]
        if b"=" in head:
            name, _, value = head.partition(b"=")
            data = data[nl + 1 :]
        else:
            name = head
            (size,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            value = data[nl + 9 : nl + 9 + size]
            assert data[nl + 9 + size : nl + 10 + size] == b"\n"
            data = data[nl + 10 + size :]
        out[name.decode()] = value.decode()
    return out


@pytest.fixture
def journald() -> Iterator[socket.socket]:
    """A real datagram socket standing in for /run/systemd/journal/socket."""
    directory = tempfile.mkdtemp(prefix="jd", dir="/tmp")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(f"{directory}/socket")
    sock.settimeout(10)
    yield sock
    sock.close()
    os.unlink(f"{directory}/socket")
    os.rmdir(directory)


def test_journal_native_fields(
    journal_stream: tuple[TextIO, dict[str, str]], journald: socket.socket
) -> None:
    stream, env = journal_stream
    configure_logging("info", environ=env, stream=stream, journal_socket=journald.getsockname())
    logging.getLogger("oneiric.audit").info(
        "paused %s", "adapter/cache", extra=fields(key="adapter/cache", op="pause", uid=0)
    )
    entry = parse_journal_datagram(journald.recv(65536))
    assert entry["MESSAGE"] == "oneiric.audit: paused adapter/cache"
    assert entry["PRIORITY"] == "6"
    assert entry["SYSLOG_IDENTIFIER"] == "oneiricd"
    assert entry["LOGGER"] == "oneiric.audit"
    assert (entry["ONEIRIC_KEY"], entry["ONEIRIC_OP"], entry["ONEIRIC_UID"]) == (
        "adapter/cache",
        "pause",
        "0",
    )
    assert entry["CODE_FILE"] == __file__
    assert read(stream) == ""  # sent to the journal, not also written as a line


def test_journal_multiline_message_and_traceback_use_the_length_form(
    journal_stream: tuple[TextIO, dict[str, str]], journald: socket.socket
) -> None:
    stream, env = journal_stream
    configure_logging("info", environ=env, stream=stream, journal_socket=journald.getsockname())
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("oneiric.test").exception("swap of %s failed", "adapter/x=y\nz")
    entry = parse_journal_datagram(journald.recv(65536))
    assert entry["MESSAGE"].startswith("oneiric.test: swap of adapter/x=y\nz failed\nTraceback")
    assert entry["MESSAGE"].endswith("ValueError: bad")
    assert entry["PRIORITY"] == "3"
    assert "ONEIRIC_KEY" not in entry  # no fields() given


def test_records_without_fields_and_plain_lines_off_journal(journald: socket.socket) -> None:
    """Not under journald (no matching JOURNAL_STREAM): plain lines, nothing sent."""
    out = io.StringIO()
    configure_logging("info", environ={}, stream=out, journal_socket=journald.getsockname())
    logging.getLogger("oneiric.test").info("x", extra=fields(key="adapter/cache"))
    assert "INFO oneiric.test: x" in out.getvalue()
    journald.setblocking(False)
    with pytest.raises(BlockingIOError):
        journald.recv(65536)


def test_watchfiles_chatter_is_not_logged() -> None:
    out = io.StringIO()
    configure_logging("info", environ={}, stream=out)
    logging.getLogger("watchfiles.main").info("1 change detected: {(<Change.modified: 2>, 'x')}")
    logging.getLogger("watchfiles.main").warning("watch failed")
    assert "change detected" not in out.getvalue() and "watch failed" in out.getvalue()


# --- the call sites: a real daemon's records carry their fields ----------------------------

SWAP_CONFIG = (
    daemon(drain_timeout="5s", stop_timeout="5s", watch=False) + CACHE_A_B + SELECT_CACHE_A
)


class JournalReader:
    """Reads the stand-in journal socket in a thread, as journald would: a Unix datagram socket
    queues only ~10 datagrams (net.unix.max_dgram_qlen) before a sender gets EAGAIN, and the
    daemon then falls back to its stream line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.entries: list[dict[str, str]] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        self.sock.settimeout(None)
        while True:
            data = self.sock.recv(65536)
            if not data:
                return  # shut down by close()
            with self.changed:
                self.entries.append(parse_journal_datagram(data))
                self.changed.notify_all()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RD)  # wakes the blocked recv
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()

    def wait_for(self, predicate: Callable[[dict[str, str]], bool]) -> dict[str, str]:
        with self.changed:
            assert self.changed.wait_for(
                lambda: any(predicate(e) for e in self.entries), timeout=30
            ), self.entries
            return next(e for e in self.entries if predicate(e))


def audit_of(op: str) -> Callable[[dict[str, str]], bool]:
    return lambda e: (
        e["LOGGER"] == "oneiric.audit"
        and f" op={op} " in e["MESSAGE"]
        and (e["MESSAGE"].endswith("outcome=ok"))
    )


@pytest.mark.anyio
async def test_a_real_swap_reaches_the_journal_with_its_key(
    journal_stream: tuple[TextIO, dict[str, str]], journald: socket.socket
) -> None:
    """``journalctl -u oneiricd ONEIRIC_KEY=adapter/cache`` finds the swap, its audit lines and
    the pause's: a real daemon, real requests over its control socket, a real datagram socket
    as journald's."""
    from anyio.to_thread import run_sync

    from harness import running_daemon

    stream, env = journal_stream
    configure_logging("info", environ=env, stream=stream, journal_socket=journald.getsockname())
    journal = JournalReader(journald)
    try:
        async with running_daemon(SWAP_CONFIG) as h:
            await run_sync(journal.wait_for, lambda e: "ready" in e["MESSAGE"])
            await h.call("swap", domain="adapter", key="cache", provider="b")
            await run_sync(journal.wait_for, audit_of("swap"))
            await h.call("pause", domain="adapter", key="cache", note="maintenance")
            await run_sync(journal.wait_for, audit_of("pause"))
    finally:
        journal.close()
    entries = journal.entries
    of_cache = [e for e in entries if e.get("ONEIRIC_KEY") == "adapter/cache"]
    messages = [e["MESSAGE"] for e in of_cache]
    assert "oneiric.runtime.reconciler: adapter/cache: swapped to provider 'b'" in "\n".join(
        messages
    )
    assert any(m.startswith("oneiric.runtime.lifecycle: adapter/cache: retired") for m in messages)
    audit = [e for e in of_cache if e["LOGGER"] == "oneiric.audit"]
    assert [e["ONEIRIC_OP"] for e in audit] == ["swap", "swap", "pause"]  # accepted, ok; ok
    assert {e["ONEIRIC_UID"] for e in audit} == {str(os.getuid())}
    assert 'note="maintenance"' in audit[-1]["MESSAGE"]
    assert "outcome=" not in read(stream)  # every audit line went to the journal, none fell back


@pytest.mark.anyio
async def test_a_service_restart_reaches_the_journal_with_its_key(
    journal_stream: tuple[TextIO, dict[str, str]],
    journald: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``journalctl ONEIRIC_KEY=service/s`` finds the crash and its restart."""
    from anyio.to_thread import run_sync

    import domain_components as dc
    from harness import running_daemon
    from oneiric.domains import service

    dc.reset()
    monkeypatch.setattr(service, "DEFAULT_BACKOFF", service.BackoffPolicy(initial=0, maximum=0))
    config = """
[daemon]
drain_timeout = "5s"
stop_timeout = "5s"
watch = false

[[component]]
domain = "service"
key = "s"
provider = "a"
factory = "domain_components:CooperativeService"
settings = { name = "a", crashes = 1 }
"""
    stream, env = journal_stream
    configure_logging("info", environ=env, stream=stream, journal_socket=journald.getsockname())
    journal = JournalReader(journald)
    try:
        async with running_daemon(config):
            await dc.passed("a.run.2")  # crashed once, restarted
            crash = await run_sync(journal.wait_for, lambda e: "run() crashed" in e["MESSAGE"])
    finally:
        journal.close()
    assert crash["ONEIRIC_KEY"] == "service/s"
    assert crash["PRIORITY"] == "3"
    assert "restart 1" in crash["MESSAGE"]
