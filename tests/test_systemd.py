"""sd_notify, watchdog, LISTEN_FDS and JOURNAL_STREAM against real sockets and processes."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import oneiric
from oneiric import systemd
from oneiric.systemd import Notifier, listen_fds, under_journal, watchdog_loop

SRC_DIR = str(Path(oneiric.__file__).resolve().parent.parent)


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def short_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="on", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, short_dir: str) -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket standing in for systemd, and its NOTIFY_SOCKET value."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(10)
    if request.param == "path":
        address = os.path.join(short_dir, "notify")
        sock.bind(address)
        value = address
    else:
        name = f"oneiric-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        value = "@" + name
    yield sock, value
    sock.close()


def recv(sock: socket.socket) -> str:
    return sock.recv(65536).decode()


@pytest.fixture
def notifier(receiver: tuple[socket.socket, str]) -> Iterator[Notifier]:
    n = Notifier.from_environ({"NOTIFY_SOCKET": receiver[1]})
    yield n
    n.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --------------------------------------------------------------------------- notify


def test_ready_with_status_is_one_datagram(
    receiver: tuple[socket.socket, str], notifier: Notifier
) -> None:
    assert notifier.enabled
    notifier.ready("serving 3 components")
    assert recv(receiver[0]) == "READY=1\nSTATUS=serving 3 components"


def test_ready_without_status(receiver: tuple[socket.socket, str], notifier: Notifier) -> None:
    notifier.ready()
    assert recv(receiver[0]) == "READY=1"


def test_status_is_one_line(receiver: tuple[socket.socket, str], notifier: Notifier) -> None:
    notifier.status("draining\nREADY=1\r\n  3 left  ")
    assert recv(receiver[0]) == "STATUS=draining READY=1 3 left"


def test_reloading_carries_monotonic_usec(
    receiver: tuple[socket.socket, str], notifier: Notifier
) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = recv(receiver[0]).split("\n")
    assert first == "RELOADING=1"
    match = re.fullmatch(r"MONOTONIC_USEC=(\d+)", second)
    assert match is not None
    assert before <= int(match.group(1)) <= after


def test_stopping(receiver: tuple[socket.socket, str], notifier: Notifier) -> None:
    notifier.stopping()
    assert recv(receiver[0]) == "STOPPING=1"
    notifier.stopping("draining 2 leases")
    assert recv(receiver[0]) == "STOPPING=1\nSTATUS=draining 2 leases"


def test_extend_timeout_watchdog_mainpid(
    receiver: tuple[socket.socket, str], notifier: Notifier
) -> None:
    notifier.extend_timeout(2.5)
    assert recv(receiver[0]) == "EXTEND_TIMEOUT_USEC=2500000"
    notifier.extend_timeout(-1)
    assert recv(receiver[0]) == "EXTEND_TIMEOUT_USEC=0"
    notifier.watchdog()
    assert recv(receiver[0]) == "WATCHDOG=1"
    notifier.mainpid(4242)
    assert recv(receiver[0]) == "MAINPID=4242"
    assert notifier.notify("A=1", "B=2") is True
    assert recv(receiver[0]) == "A=1\nB=2"


def test_one_socket_is_kept_open(receiver: tuple[socket.socket, str], notifier: Notifier) -> None:
    notifier.status("warm up")  # opens the socket
    recv(receiver[0])
    baseline = open_fds()
    for i in range(20):
        notifier.status(f"tick {i}")
        assert recv(receiver[0]) == f"STATUS=tick {i}"
    assert open_fds() == baseline
    notifier.close()
    assert open_fds() == baseline - 1
    notifier.close()  # idempotent
    # A closed notifier reopens on demand rather than dropping updates.
    notifier.watchdog()
    assert recv(receiver[0]) == "WATCHDOG=1"


def test_context_manager_closes(receiver: tuple[socket.socket, str]) -> None:
    with Notifier.from_environ({"NOTIFY_SOCKET": receiver[1]}) as n:
        n.ready()
        assert recv(receiver[0]) == "READY=1"
        baseline = open_fds()
    assert open_fds() == baseline - 1
    assert receiver[1] in repr(n)


def test_notify_without_lines_sends_nothing(
    receiver: tuple[socket.socket, str], notifier: Notifier
) -> None:
    assert notifier.notify() is False
    notifier.ready()
    assert recv(receiver[0]) == "READY=1"  # the first datagram, so the empty call sent none


@pytest.mark.parametrize(
    "environ",
    [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}, {"NOTIFY_SOCKET": "@"}],
    ids=["unset", "empty", "vsock", "bare-at"],
)
def test_disabled_notifier_is_a_noop(environ: dict[str, str]) -> None:
    environ = {**environ, "WATCHDOG_USEC": "1000000"}
    baseline = open_fds()
    n = Notifier.from_environ(environ)
    assert not n.enabled
    assert n.notify("READY=1") is False
    n.ready("x")
    n.status("x")
    n.reloading()
    n.stopping("x")
    n.extend_timeout(1)
    n.watchdog()
    n.mainpid(1)
    assert n.watchdog_interval() is None
    n.close()
    assert open_fds() == baseline  # never even opened a socket


def test_notify_to_vanished_socket_returns_false(
    short_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = os.path.join(short_dir, "gone")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    n = Notifier.from_environ({"NOTIFY_SOCKET": path})
    sock.close()  # the file remains but nobody listens: ECONNREFUSED
    with caplog.at_level(logging.DEBUG, logger="oneiric.systemd"):
        assert n.notify("READY=1") is False
        os.unlink(path)  # now the path itself is gone: ENOENT
        assert n.notify("READY=1") is False
        n.ready("still fine")  # no exception from the convenience methods either
    assert sum("sd_notify" in r.getMessage() for r in caplog.records) == 3
    n.close()


def test_abstract_address_is_not_a_path(short_dir: str) -> None:
    """`@name` must go to the abstract namespace, never to a file called "@name"."""
    name = f"oneiric-test-{uuid.uuid4().hex}"
    file_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract_sock.settimeout(10)
    old_cwd = os.getcwd()
    try:
        os.chdir(short_dir)
        file_sock.bind("@" + name)  # a decoy relative path "@name"
        abstract_sock.bind("\0" + name)
        with Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}) as n:
            n.ready()
        assert recv(abstract_sock) == "READY=1"
        file_sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            file_sock.recv(100)
    finally:
        os.chdir(old_cwd)
        file_sock.close()
        abstract_sock.close()


# --------------------------------------------------------------------------- watchdog


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"WATCHDOG_USEC": "2000000"}, 1.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({}, None),
    ],
    ids=["plain", "our-pid", "other-pid", "malformed", "zero", "empty", "unset"],
)
def test_watchdog_interval(extra: dict[str, str], expected: float | None) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": "/run/systemd/notify", **extra})
    assert n.watchdog_interval() == expected


@pytest.mark.anyio
async def test_watchdog_loop_pings_repeatedly(receiver: tuple[socket.socket, str]) -> None:
    sock, value = receiver
    n = Notifier.from_environ({"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "2000"})
    assert n.watchdog_interval() == 0.001
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(watchdog_loop, n)
            first = await anyio.to_thread.run_sync(recv, sock)
            second = await anyio.to_thread.run_sync(recv, sock)
            tg.cancel_scope.cancel()
    assert first == second == "WATCHDOG=1"
    n.close()


@pytest.mark.anyio
async def test_watchdog_loop_returns_without_watchdog(
    receiver: tuple[socket.socket, str],
) -> None:
    sock, value = receiver
    n = Notifier.from_environ({"NOTIFY_SOCKET": value})
    with anyio.fail_after(10):
        await watchdog_loop(n)  # returns: nothing to ping
        async with anyio.create_task_group() as tg:
            await tg.start(watchdog_loop, n)  # started() is still reported
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(100)  # and nothing was sent
    n.close()


# --------------------------------------------------------------------------- listen_fds

LISTEN_VARS = {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"}


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"LISTEN_FDS": "1"},
        {"LISTEN_PID": "self", "LISTEN_FDS": "one"},
        {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "ctl"},
        {"LISTEN_PID": "self", "LISTEN_FDS": "0"},
        {"LISTEN_PID": "self", "LISTEN_FDS": "-2"},
    ],
    ids=["none", "no-pid", "malformed", "other-pid", "zero", "negative"],
)
def test_listen_fds_without_fds(environ: dict[str, str]) -> None:
    environ = {k: str(os.getpid()) if v == "self" else v for k, v in environ.items()}
    environ["OTHER"] = "kept"
    kept = dict(environ)
    assert listen_fds(kept, unset=False) == []
    assert kept == environ
    assert listen_fds(environ) == []
    assert environ == {"OTHER": "kept"}


def _free_fd_range(count: int) -> int:
    """The start of ``count`` consecutive unused descriptors, well above anything pytest holds."""
    start = 700
    while True:
        for fd in range(start, start + count):
            try:
                fcntl.fcntl(fd, fcntl.F_GETFD)
            except OSError:
                continue
            start = fd + 1
            break
        else:
            return start


def test_listen_fds_in_process(monkeypatch: pytest.MonkeyPatch, short_dir: str) -> None:
    """The real fd 3 is pytest's; point the start at free fds to observe the parsing in-process."""
    start = _free_fd_range(3)
    monkeypatch.setattr(systemd, "SD_LISTEN_FDS_START", start)
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.bind(os.path.join(short_dir, "s"))
    stream.listen()
    dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dgram.bind(("127.0.0.1", 0))
    read_end, write_end = os.pipe()
    for src, dst in ((stream.fileno(), start), (dgram.fileno(), start + 1), (read_end, start + 2)):
        os.dup2(src, dst, inheritable=True)
    stream.close()
    dgram.close()
    os.close(read_end)
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "3", "LISTEN_FDNAMES": "a:b:c"}
    socks: list[socket.socket] = []
    try:
        socks = listen_fds(environ)
        assert [(s.fileno(), s.family, s.type) for s in socks] == [
            (start, socket.AF_UNIX, socket.SOCK_STREAM),
            (start + 1, socket.AF_INET, socket.SOCK_DGRAM),
        ]  # the pipe was skipped, not wrapped
        for fd in range(start, start + 3):
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert environ == {}
    finally:
        owned = {s.fileno() for s in socks}
        for s in socks:
            s.close()
        os.close(write_end)
        for fd in set(range(start, start + 3)) - owned:
            with contextlib.suppress(OSError):
                os.close(fd)


def test_listen_fds_with_a_closed_fd(monkeypatch: pytest.MonkeyPatch) -> None:
    start = _free_fd_range(1)
    monkeypatch.setattr(systemd, "SD_LISTEN_FDS_START", start)
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}
    assert listen_fds(environ) == []
    assert environ == {}


# The activated program: report what listen_fds() saw, then serve one connection.
SERVE = r"""
import fcntl, json, os, socket, sys
from oneiric.systemd import listen_fds
socks = listen_fds()
print(json.dumps({
    "sockets": [[s.fileno(), int(s.family), int(s.type)] for s in socks],
    "cloexec": [bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for s in socks],
    "env_left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
}), flush=True)
conn, _ = socks[0].accept()
with conn:
    conn.sendall(b"pong:" + conn.recv(100))
"""

# What systemd does before exec: the passed fds land on 3.. and LISTEN_PID names the child.
PASS_FDS_PRELUDE = r"""
import fcntl, os, sys
srcs = [fcntl.fcntl(int(a), fcntl.F_DUPFD, 100) for a in sys.argv[1:]]
for a in sys.argv[1:]:
    os.close(int(a))
for i, fd in enumerate(srcs):
    os.dup2(fd, 3 + i, inheritable=True)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(srcs))
"""


def _exchange(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(path)
        client.sendall(b"ping")
        return client.recv(100)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    env["PYTHONPATH"] = SRC_DIR
    return env


def test_listen_fds_in_a_child_on_fd_3(short_dir: str) -> None:
    path = os.path.join(short_dir, "ctl")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    with (
        listener,
        subprocess.Popen(
            [sys.executable, "-c", PASS_FDS_PRELUDE + SERVE, str(listener.fileno())],
            pass_fds=[listener.fileno()],
            env=_child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc,
    ):
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            report = json.loads(line)
            assert report["sockets"] == [[3, int(socket.AF_UNIX), int(socket.SOCK_STREAM)]]
            assert report["cloexec"] == [True]
            assert report["env_left"] == []
            assert _exchange(path) == b"pong:ping"
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:  # a failed assertion leaves it blocked in accept()
                proc.kill()


def test_listen_fds_under_systemd_socket_activate(short_dir: str) -> None:
    path = os.path.join(short_dir, "ctl")
    activate = shutil.which("systemd-socket-activate")
    assert activate is not None
    with subprocess.Popen(
        [activate, "-l", path, "-E", f"PYTHONPATH={SRC_DIR}", sys.executable, "-c", SERVE],
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            # It logs "Listening on <path> as 3." once bound, then execs us on the first connection.
            for line in proc.stderr:
                if "Listening on" in line:
                    break
            else:
                pytest.fail(f"systemd-socket-activate exited: {proc.wait(timeout=30)}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(10)
                client.connect(path)
                report = json.loads(proc.stdout.readline())
                assert report["sockets"] == [[3, int(socket.AF_UNIX), int(socket.SOCK_STREAM)]]
                assert report["cloexec"] == [True]
                assert report["env_left"] == []
                client.sendall(b"ping")
                assert client.recv(100) == b"pong:ping"
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


# --------------------------------------------------------------------------- under_journal


def test_under_journal_matches_the_stream() -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb"), os.fdopen(write_end, "w") as stream:
        st = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert under_journal(env, stream=stream)
        assert under_journal(env, stream=stream.fileno())
        assert not under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, stream=stream)
        assert not under_journal({}, stream=stream)
        assert not under_journal({"JOURNAL_STREAM": "garbage"}, stream=stream)
        assert not under_journal({"JOURNAL_STREAM": "a:b"}, stream=stream)


def test_under_journal_without_a_real_fd() -> None:
    assert not under_journal({"JOURNAL_STREAM": "1:2"}, stream=io.StringIO())
    read_end, write_end = os.pipe()
    os.close(read_end)
    closed = os.fdopen(write_end, "w")
    closed.close()
    assert not under_journal({"JOURNAL_STREAM": "1:2"}, stream=closed)


def test_under_journal_defaults_to_stderr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with open(tmp_path / "err", "w") as fake_stderr:
        monkeypatch.setattr(sys, "stderr", fake_stderr)
        st = os.fstat(fake_stderr.fileno())
        assert under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
