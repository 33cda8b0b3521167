"""The click-free fast path of oneiricctl (oneiric.cli._ctl_fast) prints exactly what click
prints: the same stdout, stderr and exit status, byte for byte, against a real oneiricd over its
real socket, for every spelling the fast path accepts; and it leaves everything else to click.

Each case runs twice in fresh interpreters: once through the entry point ``main`` (the fast path
when it takes the command line) and once through the click group directly. The clock both read
for "3s ago" is pinned to the same instant, and the daemon's intent is reset before each run, so
a difference is a difference between the two paths.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs import component, daemon
from fake_daemon import FakeDaemon
from oneiric.control import wirejson
from oneiric.control.client import ControlClient
from suite_support import VENV_BIN, fresh_dir, running

pytestmark = pytest.mark.slow

MEMORY = "oneiric.builtin.cache:MemoryCache"
#: A healthy adapter and service, and an adapter whose start fails with a message that needs
#: JSON escapes (quotes, backslashes) and is not ASCII.
CONFIG = (
    daemon(health_interval="1h")
    + component("adapter", "cache", "memory", MEMORY)
    + component(
        "adapter",
        "broken",
        "thing",
        "components:Thing",
        {"name": 'bröken "db" \\ at C:\\tmp', "fail": "start"},
    )
    + component("service", "idle", "memory", MEMORY)
)

_HOOK = """
import atexit, os, sys
def _modules():
    with open(os.environ["CTL_MODULES"], "w") as out:
        out.write(" ".join(sorted(sys.modules)))
atexit.register(_modules)
import oneiric.cli._ctl_base as base
base.now = lambda: float(os.environ["CTL_NOW"])
"""
#: The entry point, as the console script runs it.
FAST = _HOOK + "from oneiric.cli.oneiricctl import main\nmain(sys.argv[1:])\n"
#: The click group, as main() runs it when the fast path declines.
CLICK = _HOOK + (
    "from oneiric.cli.ctl_group import cli\n"
    "from oneiric.cli.oneiricctl import help_width\n"
    "cli.main(args=sys.argv[1:], prog_name='oneiricctl', terminal_width=help_width(os.environ))\n"
)

#: Modules the fast path must never load (each costs a share of the 2.5× budget).
HEAVY = ("click", "json", "re", "typing", "collections", "datetime", "msgspec", "anyio")


def _base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COV_CORE", "COVERAGE", "ONEIRIC_", "_ONEIRICCTL"))
        and k not in ("RUNTIME_DIRECTORY", "NO_COLOR", "TERM", "COLUMNS")
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[bytes], modules: list[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.modules = modules

    def seen(self) -> tuple[int, bytes, bytes]:
        return self.code, self.out, self.err


class World:
    """The daemon under test, and running oneiricctl against it both ways."""

    def __init__(self, socket: str, scratch: Path) -> None:
        self.socket = socket
        self.scratch = scratch
        self.now = time.time() + 5

    def reset(self) -> None:
        """No pause or drain anywhere."""
        with ControlClient(self.socket) as client:
            client.call("resume")

    def run(self, code: str, args: list[str], env: dict[str, str] | None = None) -> Run:
        modules = self.scratch / "modules"
        full = {**_base_env(), "CTL_MODULES": str(modules), "CTL_NOW": repr(self.now)}
        full.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            check=False,
            env=full,
            cwd=self.scratch,
            timeout=120,
        )
        return Run(proc, modules.read_text().split())

    def both(self, args: list[str], env: dict[str, str] | None = None) -> tuple[Run, Run]:
        self.reset()
        fast = self.run(FAST, args, env)
        self.reset()
        slow = self.run(CLICK, args, env)
        assert "click" in slow.modules
        fast.out, slow.out = _timing(fast.out), _timing(slow.out)
        return fast, slow


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with fresh_dir() as d:
        (d / "oneiricd.toml").write_text(CONFIG)
        scratch = d / "scratch"
        scratch.mkdir()
        with running(d) as daemon:
            yield World(daemon.socket, scratch)


def _timing(text: bytes) -> bytes:
    """What two runs cannot share: the live document's ``updated_at`` (the time of the
    request), how long a drain took, the daemon's uptime in ``ping``."""
    text = re.sub(rb"updated (just now|in \w+|\w+ ago)", b"updated <t>", text)
    text = re.sub(rb"in \d+\.\d+s", b"in <t>s", text)
    text = re.sub(rb", up \w+$", b", up <t>", text)
    return re.sub(rb'"(elapsed_s|uptime_s|updated_at)":[0-9.e+-]+', rb'"\1":<t>', text)


# --- every spelling the fast path takes ----------------------------------------------------------

S = "SOCKET"  # replaced by the daemon's socket

TAKEN: list[list[str]] = [
    ["--socket", S, "status"],
    [f"--socket={S}", "status"],
    ["--socket", S, "--json", "status"],
    ["--socket", S, "status", "--json"],
    ["--socket", S, "--no-headers", "status"],
    ["--socket", S, "status", "--no-headers"],
    ["--socket", S, "--json", "--no-headers", "status", "--json", "--no-headers"],
    ["--socket", S, "status", "adapter"],
    ["--socket", S, "status", "adapter", "cache"],
    ["--socket", S, "status", "--json", "adapter", "cache"],
    ["--socket", S, "status", "adapter", "--no-headers", "broken"],
    ["--socket", S, "status", "service"],
    ["--socket", S, "status", "adapter", "nope"],
    ["--socket", S, "status", "adapter", ""],
    ["--socket", S, "--json", "status", "adapter", "nope"],
    ["--socket", S, "--timeout", "5s", "status"],
    ["--socket", S, "--reply-timeout=2", "status"],
    ["--timeout", "500ms", "--socket", S, "--reply-timeout", "1m", "status", "adapter"],
    ["--socket", "/elsewhere.sock", "--socket", S, "status"],
    ["--socket", S, "ping"],
    ["--socket", S, "ping", "--json"],
    ["--socket", S, "--json", "ping"],
    ["--socket", S, "pause", "adapter", "cache"],
    ["--socket", S, "pause", "adapter", "cache", "--note", 'db migration, ünïcode "q"'],
    ["--socket", S, "pause", "--note=", "adapter"],
    ["--socket", S, "pause", "--all"],
    ["--socket", S, "--json", "pause", "service"],
    ["--socket", S, "pause", "adapter", "nope", "--json"],
    ["--socket", S, "resume", "adapter", "cache"],
    ["--socket", S, "resume", "--all"],
    ["--socket", S, "resume", "adapter", "--json"],
    ["--socket", S, "drain", "adapter", "cache"],
    ["--socket", S, "drain", "adapter", "cache", "--timeout", "5s", "--note", "host work"],
    ["--socket", S, "drain", "service", "--no-wait"],
    ["--socket", S, "drain", "--json", "adapter", "cache"],
    ["--socket", S, "drain", "adapter", "nope"],
]


def _args(world: World, spelled: list[str]) -> list[str]:
    return [a.replace(S, world.socket) for a in spelled]


@pytest.mark.parametrize("spelled", TAKEN, ids=" ".join)
def test_fast_path_prints_what_click_prints(world: World, spelled: list[str]) -> None:
    fast, slow = world.both(_args(world, spelled))
    if not fast.err:  # an error is reported by the commands' shared code, which runs on click
        for heavy in HEAVY:
            assert heavy not in fast.modules, f"the fast path imported {heavy}"
    assert fast.seen() == slow.seen()
    assert fast.out or fast.err


def test_the_cases_cover_success_failure_and_errors(world: World) -> None:
    """The matrix is not vacuous: it sees exit 0, 1 (a failed component) and a daemon error."""
    codes = {}
    for spelled in (["status", "adapter", "cache"], ["status"], ["status", "adapter", "nope"]):
        run = world.run(FAST, ["--socket", world.socket, *spelled])
        codes[spelled[-1]] = (run.code, run.out, run.err)
    assert codes["cache"][0] == 0
    assert codes["status"][0] == 1
    assert b'bro\xcc\x88ken "db"' in codes["status"][1] or "bröken".encode() in codes["status"][1]
    assert codes["nope"][0] == 1 and b"oneiricctl: status failed" in codes["nope"][2]


def test_status_json_is_the_daemons_bytes(world: World) -> None:
    """--json status prints the result as it came (no decode and encode again), and that is
    what json.dumps of the decoded result writes."""
    run = world.run(FAST, ["--socket", world.socket, "--json", "status"])
    printed = run.out.rstrip(b"\n")
    doc = json.loads(printed)
    assert printed == json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    broken = next(c for c in doc["components"] if c["key"] == "broken")
    assert "\\ at C:\\tmp" in broken["last_error"]  # escapes went through as they came
    with ControlClient(world.socket) as client:
        _, raw = client.call_raw("status")
    assert raw is not None and raw.startswith(b'{"schema":')


# --- the environment, as click reads it ----------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"ONEIRIC_SOCKET": "SOCKET"},
        {"RUNTIME_DIRECTORY": "DIR:/run/other"},
        {"ONEIRIC_SOCKET": "SOCKET", "NO_COLOR": "1"},
        {"ONEIRIC_SOCKET": "SOCKET", "TERM": "dumb"},
        {"ONEIRIC_SOCKET": "", "RUNTIME_DIRECTORY": "DIR"},
    ],
    ids=str,
)
def test_environment_defaults(world: World, env: dict[str, str]) -> None:
    where = os.path.dirname(world.socket)
    env = {k: v.replace("SOCKET", world.socket).replace("DIR", where) for k, v in env.items()}
    for spelled in (["status"], ["ping"], ["--json", "status", "adapter"]):
        fast, slow = world.both(spelled, env)
        assert "click" not in fast.modules
        assert fast.seen() == slow.seen()
        assert fast.code in (0, 1)


def test_on_a_terminal_colours_match(world: World) -> None:
    """On a terminal, status colours failed components (through click.style): both paths write
    the same escapes."""
    import pty

    def on_tty(code: str) -> tuple[int, bytes]:
        leader, follower = pty.openpty()
        env = {
            **_base_env(),
            "CTL_MODULES": str(world.scratch / "modules"),
            "CTL_NOW": repr(world.now),
        }
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "--socket", world.socket, "status"],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=world.scratch,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        return proc.wait(timeout=60), b"".join(chunks)

    world.reset()
    fast = on_tty(FAST)
    slow = on_tty(CLICK)
    assert (fast[0], _timing(fast[1])) == (slow[0], _timing(slow[1]))
    assert b"\x1b[31m" in fast[1]  # "failed" in red


# --- the daemon down ------------------------------------------------------------------------------


@pytest.fixture
def gone(world: World) -> Iterator[Path]:
    """A directory with no daemon in it: no socket, and (optionally) a health file."""
    d = world.scratch / "gone"
    d.mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.mark.parametrize(
    "spelled",
    [
        ["status"],
        ["--json", "status"],
        ["status", "adapter", "cache"],
        ["ping"],
        ["ping", "--json"],
        ["pause", "adapter"],
        ["resume", "--all"],
        ["drain", "adapter", "cache"],
    ],
    ids=" ".join,
)
def test_daemon_down(world: World, gone: Path, spelled: list[str]) -> None:
    for socket in (str(gone / "oneiricd.sock"), str(gone / "missing" / "oneiricd.sock")):
        fast, slow = world.both(["--socket", socket, *spelled])
        assert fast.seen() == slow.seen()
        assert fast.code == 3
        assert b"cannot reach oneiricd" in fast.err


def test_daemon_down_with_its_last_health_snapshot(world: World, gone: Path) -> None:
    shutil.copy(Path(world.socket).parent / "health.json", gone / "health.json")
    for spelled in (["status"], ["--json", "status"], ["status", "adapter", "broken"]):
        fast, slow = world.both(["--socket", str(gone / "oneiricd.sock"), *spelled])
        assert fast.seen() == slow.seen()
        assert fast.code == 3
    assert b"STALE" in fast.out or b"STALE" in slow.out or spelled[0] == "--json"


def test_socket_that_refuses(world: World, gone: Path) -> None:
    import socket as sockets

    path = gone / "oneiricd.sock"
    refusing = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    refusing.bind(str(path))  # bound, never listening: connect() is refused
    try:
        for spelled in (["status"], ["ping", "--json"]):
            fast, slow = world.both(["--socket", str(path), *spelled])
            assert fast.seen() == slow.seen()
            assert b"refused" in fast.err
    finally:
        refusing.close()


def test_broken_pipe(world: World) -> None:
    """stdout closed by the reader (``oneiricctl status | head -0``): both exit alike."""

    def closed_stdout(code: str) -> tuple[int, bytes]:
        read, write = os.pipe()
        os.close(read)
        env = {**_base_env(), "CTL_MODULES": str(world.scratch / "m"), "CTL_NOW": "0"}
        proc = subprocess.run(
            [sys.executable, "-c", code, "--socket", world.socket, "status"],
            stdout=write,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
            timeout=120,
        )
        os.close(write)
        return proc.returncode, proc.stderr

    world.reset()
    fast = closed_stdout(FAST)
    slow = closed_stdout(CLICK)
    assert fast == slow
    assert fast[0] == 1


def _against_a_fake(
    code: str, args: list[str], script: Any, *, interrupt: bool = False
) -> tuple[int, bytes, bytes]:
    """Run ``oneiricctl ARGS`` against a scripted daemon; with ``interrupt``, Ctrl-C it once
    the daemon holds the request."""
    with FakeDaemon() as fake:
        script(fake)
        env = {**_base_env(), "CTL_MODULES": os.devnull, "CTL_NOW": "0"}
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "--socket", fake.path, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            if interrupt:
                assert fake.holding.wait(60)
                proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
            proc.wait()
        return proc.returncode, out, err


def test_ctrl_c_while_waiting_for_the_reply() -> None:
    """Ctrl-C in a request: a blank line and click's ``Aborted!``, exit 1, on both paths."""

    def hold(fake: FakeDaemon) -> None:
        fake.on("status", hold=True)

    fast = _against_a_fake(FAST, ["status"], hold, interrupt=True)
    assert fast == _against_a_fake(CLICK, ["status"], hold, interrupt=True)
    assert fast == (1, b"", b"\nAborted!\n")


def test_replies_written_otherwise_are_decoded_and_encoded() -> None:
    """A daemon writing JSON with spaces and \\u escapes (json.dumps' defaults): the result is
    decoded and printed as json.dumps writes it, on both paths."""
    doc = {"state": "running", "note": "café \u2014 ok", "n": [1e16, 0.5]}

    def reply(fake: FakeDaemon) -> None:
        fake.on("ping", doc)

    fast = _against_a_fake(FAST, ["--json", "ping"], reply)
    assert fast == _against_a_fake(CLICK, ["--json", "ping"], reply)
    assert fast[1] == _dumps(doc) + b"\n"


# --- what the fast path leaves to click ---------------------------------------------------------

DECLINED: list[list[str]] = [
    ["--socket", S, "status", "bogus"],
    ["--socket", S, "status", "Adapter"],
    ["--socket", S, "status", "adapter", "cache", "extra"],
    ["--socket", S, "status", "--watch", "--bogus"],
    ["--socket", S, "status", "--json=1"],
    ["--socket", S, "status", "-"],
    ["--socket", S, "status", "--", "adapter"],
    ["--socket", S, "--timeout", "0", "status"],
    ["--socket", S, "--timeout", "soon", "status"],
    ["--socket", S, "--timeout", "-1", "status"],
    ["--socket", S, "ping", "extra"],
    ["--socket", S, "ping", "-h"],
    ["--socket", S, "pause"],
    ["--socket", S, "pause", "adapter", "--all"],
    ["--socket", S, "pause", "adapter", "--note"],
    ["--socket", S, "pause", "adapter", "--note", "-x"],
    ["--socket", S, "resume"],
    ["--socket", S, "drain", "--timeout", "soon"],
    ["--socket", S, "drain", "--timeout", "-1s"],
    ["--socket"],
    ["--socket", S, "--bogus", "status"],
    ["--socket", S, "status", "--socket", S],
    ["--socket", S, "Status"],
    ["--socket", S],
    ["-h"],
    ["--help"],
    ["--version"],
    ["status", "--help"],
    [],
]


@pytest.mark.parametrize("spelled", DECLINED, ids=lambda s: " ".join(s) or "(nothing)")
def test_everything_else_is_clicks(world: World, spelled: list[str]) -> None:
    fast, slow = world.both(_args(world, spelled), {"COLUMNS": "80"})
    assert "click" in fast.modules  # main() handed it to click
    assert fast.seen() == slow.seen()


def test_shell_completion_is_clicks(world: World) -> None:
    env = {
        "_ONEIRICCTL_COMPLETE": "bash_complete",
        "COMP_WORDS": "oneiricctl st",
        "COMP_CWORD": "1",
    }
    fast, slow = world.both(["--socket", world.socket, "status"], env)
    assert "click" in fast.modules
    assert fast.seen() == slow.seen()
    assert b"status" in fast.out


def test_ascii_streams_are_clicks(world: World) -> None:
    """click re-wraps an ASCII stdout as UTF-8; the fast path leaves such streams to it."""
    fast, slow = world.both(
        ["--socket", world.socket, "status", "adapter"], {"PYTHONIOENCODING": "ascii"}
    )
    assert "click" in fast.modules
    assert fast.seen() == slow.seen()


# --- what the operator runs ----------------------------------------------------------------------


def test_the_console_script_imports_no_click_for_status_and_ping(world: World) -> None:
    """``oneiricctl status`` and ``ping`` as installed: -X importtime lists every module."""
    script = str(VENV_BIN / "oneiricctl")
    for command in ("status", "ping"):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", script, "--socket", world.socket, command],
            capture_output=True,
            text=True,
            check=False,
            env=_base_env(),
        )
        assert proc.returncode in (0, 1), proc.stderr
        imported = [
            line.rsplit("|", 1)[-1].strip()
            for line in proc.stderr.splitlines()
            if line.startswith("import time:")
        ]
        assert "oneiric.cli._ctl_fast" in imported  # the report is really there
        assert [m for m in imported if m.split(".")[0] in HEAVY] == []


# --- the wire JSON without json ------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@settings(max_examples=400, deadline=None)
@given(_json_values)
def test_ok_result_passes_through_exactly_when_json_would_write_the_same(value: Any) -> None:
    """The daemon's replies are msgspec's compact JSON: the result is passed through as it came
    precisely when json.dumps of the decoded result writes the same bytes."""
    line = msgspec.json.encode({"id": 3, "ok": True, "result": value})
    got = wirejson.ok_result(line, 3, _reject)
    assert got is not None
    decoded, raw = got
    assert decoded == json.loads(line)["result"] or decoded != decoded
    daemon_bytes = msgspec.json.encode(value)
    assert (raw is not None) == (daemon_bytes == _dumps(decoded))
    if raw is not None:
        assert raw == _dumps(decoded)


def _reject(name: str) -> Any:
    raise ValueError(name)


@pytest.mark.parametrize(
    "line",
    [
        b'{"id":1,"ok":true,"result":{"a":"\\u00e9"}}',  # json's ensure_ascii: python prints é
        b'{"id":1,"ok":true,"result":"\\/"}',
        b'{"id":1,"ok":true,"result":"\\u001B"}',  # upper-case hex
        b'{"id":1,"ok":true,"result":"\\u000a"}',  # python writes \n
        b'{"id":1,"ok":true,"result":1e16}',
        b'{"id":1,"ok":true,"result":[0.00001]}',
        b'{"id":1,"ok":true,"result":"\xed\xa0\x80"}',  # an encoded surrogate
    ],
)
def test_ok_result_declines_what_json_would_write_otherwise(line: bytes) -> None:
    got = wirejson.ok_result(line, 1, _reject)
    assert got is None or got[1] is None


@pytest.mark.parametrize(
    "line",
    [
        b'{"id":2,"ok":true,"result":1}',  # another request's id
        b'{"id":1, "ok":true,"result":1}',
        b'{"id":1,"ok":true,"result":1,"x":2}',
        b'{"id":1,"ok":true,"result":1} ',
        b'{"id":1,"ok":true,"result":[1}',
        b'{"id":1,"ok":false,"error":{"code":"x","message":"y"}}',
    ],
)
def test_ok_result_leaves_other_lines_to_the_full_decode(line: bytes) -> None:
    assert wirejson.ok_result(line, 1, _reject) is None


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":[1,2.5,"x\\u00e9",null,true]}',
        b'{"a":1}  \r\n',
        b'{"a":1} x',
        b'{"a":NaN}',
        b'{"a":1e999}',
        b'{"a":',
        b'{"a":"\x01"}',
        b"\xef\xbb\xbf{}",
        b'{"a":"\xed\xa0\x80"}',
        b"[1]",
        b"",
        b"{" * 100_000,
        '{"é":1}'.encode("utf-16"),
    ],
)
def test_loads_is_json_loads(data: bytes) -> None:
    def outcome(load: Any) -> Any:
        try:
            return ("value", repr(load(data)))
        except BaseException as exc:
            return ("error", type(exc), str(exc))

    assert outcome(lambda d: wirejson.loads(d, _reject)) == outcome(
        lambda d: json.loads(d, parse_constant=_reject)
    )


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text()
        | st.lists(st.integers(), max_size=2),
        max_size=6,
    )
)
def test_dumps_is_json_dumps(message: dict[str, Any]) -> None:
    def outcome(dump: Any) -> Any:
        try:
            return ("value", dump(message))
        except (ValueError, TypeError) as exc:
            return ("error", type(exc), str(exc))

    assert outcome(wirejson.dumps) == outcome(
        lambda m: json.dumps(m, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    )
