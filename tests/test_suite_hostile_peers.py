"""Standing suite (issue 12): hostile peers against a real oneiricd whose socket anyone may
open (``socket_mode = "0666"``, as docs/deployment.md describes for read-only access).

Attacks, from reader uids (tests/hostile_peers.py under uids 60001…, and nobody) and from root:
property-based frames (hypothesis, as root; seeded random frames as readers), slowloris, idle
floods filling every reader's cap, half-closed and non-reading clients, watch floods, connect /
close churn, and pipelined floods. Throughout, an admin probe pings (and pauses / resumes a
key) and the watchdog is followed on the notify socket.

Asserted: every admin request succeeds, every frame gets a well-formed answer, the daemon
still serves and stops cleanly (0). Printed and recorded: frames tried, admin latency p50 / p99
/ max under attack, the watchdog's largest gap, peak RSS. No timing is asserted (a loaded
2-core machine decides those); ``make soak`` runs more of everything.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oneiric.control.client import ControlClient
from suite_support import Daemon, fresh_dir, percentile, record, running, scale

PEERS = Path(__file__).with_name("hostile_peers.py")
NOBODY = 65534
CODES = {
    "bad_request",
    "unknown_op",
    "not_found",
    "permission_denied",
    "conflict",
    "timeout",
    "too_large",
    "unavailable",
    "internal",
}

CONFIG = """
[daemon]
socket_mode = "0666"
drain_timeout = "2s"
stop_timeout = "5s"
idle_timeout = "30s"
health_interval = "1s"
watch = false

[[component]]
domain = "adapter"
key = "cache"
provider = "memory"
factory = "oneiric.builtin.cache:MemoryCache"

[[component]]
domain = "adapter"
key = "probe"
provider = "memory"
factory = "oneiric.builtin.cache:MemoryCache"
"""


class Prober:
    """An admin (root) pinging, and pausing/resuming a key, all along: latencies and errors."""

    def __init__(self, sock: str) -> None:
        self.sock = sock
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            op: tuple[str, dict[str, Any]] = ("ping", {})
            if n % 10 == 0:
                op = ("pause" if n % 20 == 0 else "resume", {"domain": "adapter", "key": "probe"})
            started = time.perf_counter()
            try:
                with ControlClient(self.sock, timeout=60) as c:  # a fresh connection each time
                    c.call(op[0], **op[1])
            except Exception as exc:
                self.errors.append(f"{op[0]}: {exc}")
            self.latencies.append(time.perf_counter() - started)
            self.stop.wait(0.01)  # a sampler's pace, not a wait for something

    def __enter__(self) -> Prober:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(120)


class Peers:
    """Hostile peer processes; each prints one JSON line, and holds until released."""

    def __init__(self, sock: str) -> None:
        self.sock = sock
        self.procs: list[subprocess.Popen[str]] = []

    def run(self, uid: int, mode: str, *args: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(PEERS), "--uid", str(uid), self.sock, mode, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def report(proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        result: dict[str, Any] = json.loads(line)
        return result

    def release_all(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


@contextlib.contextmanager
def peers(sock: str) -> Iterator[Peers]:
    p = Peers(sock)
    try:
        yield p
    finally:
        p.release_all()


def root_frames(sock: str, examples: int) -> int:
    """Property-based frames from root: every line gets exactly one well-formed reply."""
    tried = [0]
    conns: list[socket.socket] = []
    buf = bytearray()
    json_value = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    )
    read_only = st.sampled_from(["ping", "status", "health", "explain", "list", "nope", "", "x"])
    request = st.fixed_dictionaries(
        {"id": st.one_of(st.integers(), st.none(), st.text(max_size=3)), "op": read_only},
        optional={
            "domain": json_value,
            "key": json_value,
            "shadowed": json_value,
            "capability": json_value,
        },
    ).map(lambda d: json.dumps(d).encode())
    garbage = st.binary(min_size=1, max_size=300).map(lambda b: b.replace(b"\n", b" "))

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(frame=st.one_of(request, garbage))
    def one(frame: bytes) -> None:
        if not frame.strip():
            return  # blank lines are skipped by design (socat users press Enter)
        tried[0] += 1
        if not conns:  # opened at the first frame: hypothesis may take a while to start
            conns.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            conns[0].settimeout(60)
            conns[0].connect(sock)
        conn = conns[0]
        conn.sendall(frame + b"\n")
        while b"\n" not in buf:
            chunk = conn.recv(65536)
            assert chunk, f"the daemon closed the connection after {frame!r}"
            buf.extend(chunk)
        line, _, rest = bytes(buf).partition(b"\n")
        buf[:] = rest
        reply = json.loads(line)
        assert isinstance(reply, dict)
        assert reply.get("ok") is True or reply["error"]["code"] in CODES, reply

    one()
    for conn in conns:
        conn.close()
    return tried[0]


def codes(report: dict[str, Any]) -> list[str]:
    return [o.split(":")[0] for o in report["outcomes"]]


def served_connections(sock: str) -> int:
    """Connections the daemon holds open on ``sock`` right now: its accepted sockets carry the
    socket's path in /proc/net/unix (state 03, connected)."""
    with open("/proc/net/unix") as fh:
        return sum(1 for line in fh if line.rstrip().endswith(" " + sock) and " 03 " in line)


def wait_for_reader_room(sock: str) -> None:
    """After the peers hung up: wait until the daemon has closed their connections too (no
    event tells the test; the kernel's table is polled, bounded)."""
    deadline = time.monotonic() + 120
    while served_connections(sock) > 4:  # the admin probe's, at most
        assert time.monotonic() < deadline, "reader connections were never released"
        threading.Event().wait(0.05)


def attack(daemon: Daemon, rounds: int) -> dict[str, Any]:
    sock = daemon.socket
    figures: dict[str, Any] = {"frames_tried": 0, "reader_fuzz_codes": {}}
    for _ in range(rounds):
        uids = [60001 + i for i in range(7)]
        with peers(sock) as p:
            # readers fill their whole share with idle connections, plus slowloris lines
            holds = [p.run(uid, "hold", 32) for uid in uids[:6]]
            slow = p.run(uids[6], "slowloris", 32)
            for proc in holds:
                assert codes(Peers.report(proc)) == ["ok"] * 32
            assert Peers.report(slow)["held"] == 32
            late = p.run(NOBODY, "hold", 1)  # readers' share used up: refused
            assert codes(Peers.report(late)) == ["unavailable"]
            # root still gets in, with frames of every kind
            figures["frames_tried"] += root_frames(sock, scale(150, 1500))
        wait_for_reader_room(sock)
        uids = [60011 + i for i in range(7)]
        with peers(sock) as p:
            fuzzers = [p.run(uid, "fuzz", scale(300, 3000), seed) for seed, uid in enumerate(uids)]
            for proc in fuzzers:
                rep = Peers.report(proc)
                figures["frames_tried"] += rep["frames"]
                for code, n in rep["codes"].items():
                    tally = figures["reader_fuzz_codes"]
                    tally[code] = tally.get(code, 0) + n
            floods = [
                p.run(uids[0], "pipeline", 8, scale(1000, 5000), "ping"),
                p.run(uids[1], "pipeline", 8, scale(200, 1000), "health"),
            ]
            noread = [p.run(uid, "noread", 20000, "status") for uid in uids[2:4]]
            watches = [p.run(uid, "watch", 16) for uid in uids[4:6]]
            half = p.run(uids[6], "halfclose", scale(50, 500))
            for proc in floods:
                rep = Peers.report(proc)
                assert rep["error"] == 0, rep
            for proc in noread:
                assert Peers.report(proc)["sent"] > 0
            for proc in watches:
                rep = Peers.report(proc)
                assert codes(rep) == ["event"] * 16, rep
            assert Peers.report(half)["replies"] == scale(50, 500)
            # churn last, while the watch and non-reading connections are still held (root's
            # churn may take every connection for a moment: root is trusted, readers are not)
            churn = [p.run(NOBODY, "churn", scale(500, 5000)), p.run(0, "churn", scale(500, 5000))]
            for proc in churn:
                assert Peers.report(proc)["connects"] == scale(500, 5000)
        wait_for_reader_room(sock)
    return figures


def test_hostile_peers_cannot_hurt_the_daemon_or_lock_out_admins() -> None:
    rounds = scale(1, 3)
    with fresh_dir() as d:
        (d / "oneiricd.toml").write_text(CONFIG)
        with running(d, watchdog_usec=1_000_000) as daemon:
            since = time.monotonic()
            with Prober(daemon.socket) as prober:
                figures = attack(daemon, rounds)
            gaps = daemon.watchdog_gaps(since)
            rss = daemon.peak_rss_kib()
            with ControlClient(daemon.socket, timeout=60) as c:
                assert c.call("ping")["state"] == "running"
            assert daemon.stop() == 0, daemon.stderr()
    assert prober.errors == [], prober.errors[:5]
    assert prober.latencies, "the admin probe never ran"
    assert gaps, "no watchdog pings were seen"
    lat = prober.latencies
    record(
        "hostile_peers",
        {
            **figures,
            "attack_rounds": rounds,
            "admin_requests": len(lat),
            "admin_errors": len(prober.errors),
            "admin_p50_ms": round(percentile(lat, 50) * 1000, 2),
            "admin_p99_ms": round(percentile(lat, 99) * 1000, 2),
            "admin_max_ms": round(max(lat) * 1000, 2),
            "watchdog_interval_s": 0.5,
            "watchdog_max_gap_s": round(max(gaps), 3),
            "peak_rss_mib": round(rss / 1024, 1),
        },
    )
