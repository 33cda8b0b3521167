"""oneiricd as a real process: real signals, systemd's real notify protocol, real oneiricctl."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import configs

VENV_BIN = Path(sys.executable).parent
TESTS = Path(__file__).parent
ONEIRICD = str(VENV_BIN / "oneiricd")
ONEIRICCTL = str(VENV_BIN / "oneiricctl")


def config(d: Path) -> str:
    """adapter/cache (a selected, b) and adapter/holder, a LeaseHolder on it controlled over
    ``d/hold.sock``."""
    return (
        configs.daemon(drain_timeout="5s", stop_timeout="10s", health_interval="1h", watch=False)
        + configs.CACHE_A_B
        + configs.component(
            "adapter",
            "holder",
            "h",
            "components:LeaseHolder",
            {"target": "adapter/cache", "control": f"{d}/hold.sock"},
        )
        + configs.SELECT_CACHE_A
    )


# the test environment's site-packages (whatever the venv is called: .venv, .venv-3.13, …)
SITE = sysconfig.get_paths()["purelib"]
AS_USER = (
    f"import sys; sys.path[:0] = [{str(TESTS.parent / 'src')!r}, {SITE!r}]; "
    "sys.argv[0] = 'oneiricctl'; from oneiric.cli.oneiricctl import main; main()"
)


@dataclass
class Proc:
    dir: Path
    proc: subprocess.Popen[bytes]
    notify: socket.socket
    messages: list[str] = field(default_factory=list)

    @property
    def socket(self) -> str:
        return str(self.dir / "oneiricd.sock")

    def expect(self, needle: str, timeout: float = 20) -> str:
        """Read notify datagrams until one contains ``needle`` (the timeout is a safety net)."""
        self.notify.settimeout(timeout)
        while True:
            for m in self.messages:
                if needle in m:
                    self.messages.remove(m)
                    return m
            try:
                data = self.notify.recv(4096)
            except TimeoutError:
                pytest.fail(
                    f"no {needle!r} from oneiricd; stderr:\n{self.stderr_text()}; "
                    f"seen: {self.messages}"
                )
            self.messages.append(data.decode())

    def stderr_text(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def ctl(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [ONEIRICCTL, "--socket", self.socket, *args]
        if user is not None:
            # The venv's interpreter lives under /root (0700): run the same client code on
            # Debian's own python3 as the unprivileged user.
            cmd = [
                "runuser",
                "-u",
                user,
                "--",
                "/usr/bin/python3",
                "-I",
                "-c",
                AS_USER,
                "--socket",
                self.socket,
                *args,
            ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def env_for(d: Path, notify: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(TESTS),
        NOTIFY_SOCKET=notify,
        ONEIRIC_CONFIG=str(d / "oneiricd.toml"),
        RUNTIME_DIRECTORY=str(d),
        STATE_DIRECTORY=str(d / "state"),
    )
    env.pop("JOURNAL_STREAM", None)
    return env


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="on", dir="/tmp"))
    os.chmod(d, 0o755)
    (d / "oneiricd.toml").write_text(config(d))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def spawn(d: Path, *extra: str, env_extra: dict[str, str] | None = None) -> Proc:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"\0oneiric-test-{os.getpid()}-{id(notify)}"
    notify.bind(name)
    env = env_for(d, "@" + name[1:])
    env.update(env_extra or {})
    proc = subprocess.Popen(
        [ONEIRICD, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    return Proc(d, proc, notify)


@pytest.fixture
def daemon(workdir: Path) -> Iterator[Proc]:
    p = spawn(workdir)
    p.expect("READY=1")
    yield p
    if p.proc.poll() is None:
        p.proc.kill()
        p.proc.wait()
    p.notify.close()


def test_notify_lifecycle_reload_and_clean_stop(daemon: Proc) -> None:
    out = daemon.ctl("--json", "status")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["state"] == "running" and doc["pid"] == daemon.proc.pid
    # SIGHUP = reload: RELOADING=1 then READY=1
    daemon.proc.send_signal(signal.SIGHUP)
    assert "MONOTONIC_USEC=" in daemon.expect("RELOADING=1")
    daemon.expect("READY=1")
    # SIGTERM: STOPPING=1, exit 0, socket removed, final health says stopped
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.expect("STOPPING=1")
    assert int(daemon.expect("EXTEND_TIMEOUT_USEC=").split("=")[1]) > 10_000_000
    assert daemon.proc.wait(timeout=30) == 0, daemon.stderr_text()
    # the log's last line says it stopped, and how
    assert daemon.stderr_text().splitlines()[-1].endswith("oneiricd stopped (exit 0)")
    assert not os.path.exists(daemon.socket)
    health = json.loads((daemon.dir / "health.json").read_bytes())
    assert health["state"] == "stopped"
    # status now falls back to the snapshot, exit 3
    out = daemon.ctl("status")
    assert out.returncode == 3


def test_ready_comes_with_a_status_line(workdir: Path) -> None:
    p = spawn(workdir)
    try:
        ready = p.expect("READY=1")
        assert "STATUS=running: 2/2 components ready" in ready
    finally:
        assert p.stop() == 0


def test_pause_survives_restart(daemon: Proc) -> None:
    out = daemon.ctl("pause", "adapter", "cache", "--note", "redis failover")
    assert out.returncode == 0, out.stderr
    assert daemon.stop() == 0
    again = spawn(daemon.dir)
    try:
        again.expect("READY=1")
        doc = json.loads(again.ctl("--json", "status", "adapter", "cache").stdout)
        comp = doc["components"][0]
        assert comp["admin"] == "paused" and comp["note"] == "redis failover"
        assert comp["intent_uid"] == os.getuid()
    finally:
        assert again.stop() == 0


def test_second_daemon_exits_75_and_first_is_undisturbed(daemon: Proc) -> None:
    second = spawn(daemon.dir)
    assert second.proc.wait(timeout=30) == 75
    assert "already" in second.stderr_text()
    assert daemon.ctl("ping").returncode == 0
    assert os.path.exists(daemon.socket)


def test_stale_socket_is_recovered(workdir: Path) -> None:
    first = spawn(workdir)
    first.expect("READY=1")
    first.proc.kill()  # leaves its socket file behind
    first.proc.wait()
    assert os.path.exists(first.socket)
    second = spawn(workdir)
    try:
        second.expect("READY=1")
        assert second.ctl("ping").returncode == 0
    finally:
        assert second.stop() == 0


def test_reader_is_refused_mutations_with_exit_4(workdir: Path) -> None:
    text = (workdir / "oneiricd.toml").read_text()
    (workdir / "oneiricd.toml").write_text(
        text.replace("[daemon]", '[daemon]\nsocket_mode = "0666"\nadmin_group = "nogroup-x"')
    )
    p = spawn(workdir)
    try:
        p.expect("READY=1")
        status = p.ctl("status", user="nobody")
        assert status.returncode == 0, status.stderr
        denied = p.ctl("pause", "adapter", "cache", user="nobody")
        assert denied.returncode == 4, denied.stderr
        assert "permission" in denied.stderr.lower()
        assert p.ctl("pause", "adapter", "cache").returncode == 0  # root is admin
    finally:
        assert p.stop() == 0


def test_bad_frames_get_errors_while_other_clients_carry_on(daemon: Proc) -> None:
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.connect(daemon.socket)
    bad.settimeout(20)
    bad.sendall(b"x" * (70 * 1024) + b"\n" + b"{not json\n" + b'{"id":7,"op":"nope"}\n')
    reader = bad.makefile("rb")
    replies = [json.loads(reader.readline()) for _ in range(3)]
    assert [r["error"]["code"] for r in replies] == ["too_large", "bad_request", "unknown_op"]
    assert replies[2]["id"] == 7
    # meanwhile another client is served, and the bad one can still talk
    assert daemon.ctl("ping").returncode == 0
    bad.sendall(b'{"id":8,"op":"ping"}\n')
    assert json.loads(reader.readline())["ok"] is True
    bad.close()


def hold_lease(d: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(d / "hold.sock"))
    s.settimeout(20)
    assert s.recv(16) == b"held\n"
    return s


def test_drain_completes_exactly_when_leases_end(daemon: Proc) -> None:
    held = hold_lease(daemon.dir)
    drain = subprocess.Popen(
        [ONEIRICCTL, "--socket", daemon.socket, "--json", "drain", "adapter", "cache"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the daemon reports the key draining with one lease in flight
    watch = subprocess.Popen(
        [ONEIRICCTL, "--socket", daemon.socket, "--json", "status", "--watch"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None
    for line in watch.stdout:
        comps = {c["key"]: c for c in json.loads(line)["components"]}
        if comps["cache"]["admin"] == "draining":
            assert comps["cache"]["in_flight"] == 1
            break
    watch.terminate()
    watch.wait()
    assert drain.poll() is None, "drain returned while a lease was in flight"
    held.close()  # the last lease ends
    out, err = drain.communicate(timeout=30)
    assert drain.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["drained"] is True
    doc = json.loads(daemon.ctl("--json", "status", "adapter", "cache").stdout)
    assert doc["components"][0]["admin"] == "drained"


def test_a_health_file_elsewhere_is_found_when_the_daemon_is_down(workdir: Path) -> None:
    """--health-file away from the socket: oneiricd links health.json beside the socket to it,
    so `oneiricctl status` finds the final snapshot without $ONEIRIC_HEALTH_FILE."""
    elsewhere = workdir / "elsewhere" / "h.json"
    elsewhere.parent.mkdir()
    p = spawn(workdir, "--health-file", str(elsewhere))
    try:
        p.expect("READY=1")
        assert os.path.realpath(workdir / "health.json") == str(elsewhere)
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(timeout=30) == 0, p.stderr_text()
        out = p.ctl("status")
        assert out.returncode == 3
        assert "oneiricd stopped cleanly; this is its final snapshot" in out.stdout
        assert str(workdir / "health.json") in out.stdout
    finally:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
        p.notify.close()


def test_drain_timeout_names_what_is_in_flight(daemon: Proc) -> None:
    held = hold_lease(daemon.dir)
    try:
        out = daemon.ctl("drain", "adapter", "cache", "--timeout", "0.2")
        assert out.returncode == 1
        assert "adapter/cache" in out.stdout + out.stderr
    finally:
        held.close()


def test_check_and_broken_config(workdir: Path) -> None:
    env = env_for(workdir, "")
    ok = subprocess.run([ONEIRICD, "--check"], env=env, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    (workdir / "oneiricd.toml").write_text(
        (workdir / "oneiricd.toml")
        .read_text()
        .replace('factory = "components:Thing"', 'factory = "components:Missing"', 1)
    )
    missing = subprocess.run(
        [ONEIRICD, "--check"], env=env, capture_output=True, text=True, check=False
    )
    assert missing.returncode == 78 and "components:Missing" in missing.stderr
    typo = (workdir / "oneiricd.toml").read_text().replace('cache = "a"', 'cache = "redis"')
    (workdir / "oneiricd.toml").write_text(typo)
    for argv in ([ONEIRICD, "--check"], [ONEIRICD]):  # a typo in a selection: 78, not ignored
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        assert out.returncode == 78 and "selections.adapter.cache" in out.stderr, out.stderr
    (workdir / "oneiricd.toml").write_text("[daemon]\nbogus = 1\n")
    broken = subprocess.run([ONEIRICD], env=env, capture_output=True, text=True, check=False)
    assert broken.returncode == 78 and "bogus" in broken.stderr


def test_daemonize_with_locked_pidfile(workdir: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"\0oneiric-test-daemonize-{os.getpid()}"
    notify.bind(name)
    env = env_for(workdir, "@" + name[1:])
    pidfile = workdir / "oneiricd.pid"
    log = workdir / "oneiricd.log"
    cmd = [ONEIRICD, "--daemonize", "--pidfile", str(pidfile), "--logfile", str(log)]
    started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert started.returncode == 0, started.stderr
    p = Proc(workdir, started, notify)  # type: ignore[arg-type]
    p.expect("READY=1")  # the detached child still speaks the notify protocol
    pid = int(pidfile.read_text().strip())
    ping = p.ctl("--json", "ping")
    assert ping.returncode == 0, ping.stderr
    assert json.loads(ping.stdout)["pid"] == pid
    # a second --daemonize finds the live daemon (socket answers) and refuses: 75
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert second.returncode == 75, second.stderr
    pidfd = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGTERM)
        p.expect("STOPPING=1")
        ready, _, _ = select.select([pidfd], [], [], 30)  # readable once the process exited
        assert ready, "the daemonized oneiricd did not exit on SIGTERM"
    finally:
        os.close(pidfd)
    assert not pidfile.exists()
    assert "ready" in log.read_text()
    notify.close()


def test_socket_activation(workdir: Path) -> None:
    sock = str(workdir / "act.sock")
    env = env_for(workdir, "")
    proc = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            sock,
            "-E",
            "PYTHONPATH",
            "-E",
            "ONEIRIC_CONFIG",
            "-E",
            "RUNTIME_DIRECTORY",
            "-E",
            "STATE_DIRECTORY",
            ONEIRICD,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        # systemd-socket-activate prints "Listening on ..." once the socket exists
        line = proc.stderr.readline().decode()
        assert "Listening" in line, line
        out = subprocess.run(
            [ONEIRICCTL, "--socket", sock, "--timeout", "30", "--json", "ping"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_watchdog_pings_come_from_the_event_loop(workdir: Path) -> None:
    p = spawn(workdir, env_extra={"WATCHDOG_USEC": "200000"})
    try:
        p.expect("READY=1")
        p.expect("WATCHDOG=1")
        p.expect("WATCHDOG=1")  # repeatedly, at half the interval
        # (that a SIGSTOPped daemon is restarted by systemd's watchdog is proven end to end
        # under a real systemd: tests/e2e/systemd.sh)
    finally:
        assert p.stop() == 0


def test_second_signal_exits_at_once_while_draining(daemon: Proc) -> None:
    held = hold_lease(daemon.dir)  # the first SIGTERM waits for this lease (stop_timeout 10s)
    try:
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.expect("STOPPING=1")
        assert daemon.proc.poll() is None
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=30) == 1
        assert daemon.stderr_text().splitlines()[-1].endswith("oneiricd stopped (exit 1)")
        assert not os.path.exists(daemon.socket)
    finally:
        held.close()


def test_socket_path_on_a_regular_file_is_a_config_error(workdir: Path) -> None:
    precious = workdir / "precious.txt"
    precious.write_text("keep me")
    p = spawn(workdir, "--socket", str(precious))
    assert p.proc.wait(timeout=30) == 78
    err = p.stderr_text()
    assert "not a socket" in err
    assert err.splitlines()[-1].endswith("oneiricd stopped (exit 78)")
    assert precious.read_text() == "keep me"
