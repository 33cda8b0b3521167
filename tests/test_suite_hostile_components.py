"""Standing suite (issue 12): hostile components and configs.

One real oneiricd hosts every fault at once — an async factory that never returns, hangs in
start / stop / health, ``sys.exit()`` in a task, an event handler, a health probe and at import,
a module that hangs at import (the event loop must not), a plain ``run()`` that ignores stop, a
thread a component leaks, and code that blocks the event loop (the watchdog must notice) — and
must come up, keep serving, report each fault, and stop within its bounds, exiting 1 and naming
what it abandoned. Then every kind of config error must
be refused with the file named (78 at start and for ``--check``; the running config kept on
reload).
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from pathlib import Path

import pytest

from oneiric.config import load_config
from oneiric.control.client import ControlClient, RemoteError
from oneiric.errors import ConfigError
from suite_support import ONEIRICD, TESTS, fresh_dir, record, running


def comp(domain: str, key: str, factory: str, extra: str = "") -> str:
    return f"""
[[component]]
domain = "{domain}"
key = "{key}"
provider = "x"
factory = "{factory}"
{extra}
"""


def faults(d: Path) -> str:
    return (
        """
[daemon]
activation_timeout = "1s"
stop_timeout = "1s"
drain_timeout = "1s"
health_interval = "1h"
watch = false
"""
        + comp("adapter", "cache", "oneiric.builtin.cache:MemoryCache")
        + comp("adapter", "never", "hostile_components:never_returns")
        + comp("adapter", "hang_start", "components:Thing", 'settings = { block = "start" }')
        + comp("adapter", "hang_health", "components:Thing", 'settings = { block = "health" }')
        + comp("adapter", "hang_stop", "components:Thing", 'settings = { block = "stop" }')
        + comp(
            "adapter", "health_exit", "hostile_components:Leaver", 'settings = { where = "health" }'
        )
        + comp("adapter", "import_exit", "hostile_exit_at_import:Never")
        + comp("adapter", "import_hang", "hostile_import_gate:Slow")
        + comp("adapter", "leaker", "hostile_components:ThreadLeaker")
        + comp("task", "exit", "hostile_components:Leaver")
        + comp(
            "event",
            "exit",
            "hostile_components:Leaver",
            'topics = ["boom"]\nsettings = { where = "handle", how = "interrupt" }',
        )
        + comp("service", "stubborn", "hostile_components:StubbornService")
        + comp(
            "service",
            "blocker",
            "hostile_components:LoopBlocker",
            f'settings = {{ fifo = "{d}/block", ack = "{d}/blocked" }}',
        )
    )


def watchdog_pings(daemon: object, since: float) -> int:
    return sum(1 for t, m in daemon.messages if t >= since and "WATCHDOG=1" in m)  # type: ignore[attr-defined]


def test_every_component_fault_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with fresh_dir() as d:
        os.mkfifo(d / "block")
        os.mkfifo(d / "blocked")
        ack = os.open(d / "blocked", os.O_RDONLY | os.O_NONBLOCK)
        # a module that hangs at import (tests/hostile_import_gate.py): never let go
        os.mkfifo(d / "importing")
        os.mkfifo(d / "gate")
        importing = os.open(d / "importing", os.O_RDONLY | os.O_NONBLOCK)
        monkeypatch.setenv("ONEIRIC_IMPORT_GATE", str(d))
        (d / "oneiricd.toml").write_text(faults(d))
        with running(d, watchdog_usec=400_000) as daemon:
            with ControlClient(daemon.socket, timeout=60) as c:
                rows = {r["key"]: r for r in c.call("status")["components"]}
                failed = {k for k, r in rows.items() if r["lifecycle"] == "failed"}
                assert failed == {
                    "never",
                    "hang_start",
                    "hang_health",
                    "health_exit",
                    "import_exit",
                    "import_hang",
                }
                assert (
                    "importing module 'hostile_import_gate' did not finish within 1s"
                    in (rows["import_hang"]["last_error"])
                )
                assert rows["cache"]["lifecycle"] == "ready"
                with pytest.raises(RemoteError) as err:
                    c.call("run", domain="task", key="exit")
                assert "sys.exit(0)" in err.value.message
                assert c.call("emit", topic="boom")["delivered"] == ["event/exit"]
                # loop-blocking component code: the watchdog must go quiet while it blocks
                fifo = os.open(d / "block", os.O_WRONLY)
                try:
                    os.write(fifo, b"b")
                    ready, _, _ = select.select([ack], [], [], 60)  # the loop is blocked now
                    assert ready, "the loop-blocking component never blocked"
                    blocked_at = time.monotonic()
                    threading.Event().wait(2.0)  # an observation window, not a wait for an event
                    pings_while_blocked = watchdog_pings(daemon, blocked_at + 0.25)
                    os.write(fifo, b"r")  # release the loop
                finally:
                    os.close(fifo)
                assert c.call("ping")["state"] == "running"
            gaps = daemon.watchdog_gaps()
            # (at most one ping may have been on its way when the block began)
            assert pings_while_blocked <= 1, pings_while_blocked
            started = time.monotonic()
            code = daemon.stop(timeout=90)
            stop_s = time.monotonic() - started
        err_text = (d / "stderr.log").read_text()
        assert code == 1, err_text[-2000:]
        assert "service/stubborn: StubbornService.run()" in err_text
        assert "leaked-by-component" in err_text
        assert "hang_stop: stop() did not finish within 1s" in err_text
        assert "oneiric import hostile_import_gate" in err_text  # still hanging at exit
    os.close(ack)
    os.close(importing)
    record(
        "hostile_components",
        {
            "faults": 12,
            "watchdog_interval_s": 0.2,
            "watchdog_max_gap_s": round(max(gaps), 3),
            "loop_blocked_s": 2.0,
            "stop_s": round(stop_s, 2),
            "exit_status": code,
        },
    )


# -- every kind of config error ---------------------------------------------------------------

GOOD = comp("adapter", "cache", "oneiric.builtin.cache:MemoryCache")
BROKEN = {
    "invalid TOML": "[daemon\n",
    "unknown section": "[bogus]\nx = 1\n",
    "unknown daemon key": "[daemon]\nbogus = 1\n",
    "wrong type": GOOD.replace('key = "cache"', 'key = "cache"\npriority = "high"'),
    "bad duration": '[daemon]\ndrain_timeout = "5 parsecs"\n',
    "negative duration": '[daemon]\nactivation_timeout = "-1s"\n',
    "bad socket mode": '[daemon]\nsocket_mode = "rw-rw----"\n',
    "bad log level": '[daemon]\nlog_level = "loud"\n',
    "unknown domain": GOOD.replace('domain = "adapter"', 'domain = "widget"'),
    "bad key": GOOD.replace('key = "cache"', 'key = "ca che"'),
    "key too long": GOOD.replace('key = "cache"', f'key = "{"k" * 129}"'),
    "bad factory": GOOD.replace("oneiric.builtin.cache:MemoryCache", "not a factory"),
    "missing provider": GOOD.replace('provider = "x"\n', ""),
    "unknown component key": GOOD.replace('key = "cache"', 'key = "cache"\ncolour = "red"'),
    "field for another domain": GOOD.replace('key = "cache"', 'key = "cache"\nevery = "1s"'),
    "unknown selection": GOOD + '\n[selections.adapter]\ncache = "nope"\n',
    "broken drop-in": 'include = ["conf.d/*.toml"]\n' + GOOD,
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_every_config_error_kind_is_refused_naming_the_file(kind: str, tmp_path: Path) -> None:
    main = tmp_path / "oneiricd.toml"
    main.write_text(BROKEN[kind])
    if kind == "broken drop-in":
        (tmp_path / "conf.d").mkdir()
        (tmp_path / "conf.d" / "10-x.toml").write_text("[daemon]\nnope = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(main)
    where = str(tmp_path / "conf.d" / "10-x.toml") if kind == "broken drop-in" else str(main)
    assert where in str(err.value), str(err.value)


def test_a_broken_config_is_78_at_start_and_for_check_and_kept_out_on_reload() -> None:
    with fresh_dir() as d:
        cfg = d / "oneiricd.toml"
        cfg.write_text("[daemon]\nwatch = false\n" + GOOD)
        env = {**os.environ, "PYTHONPATH": str(TESTS), "ONEIRIC_CONFIG": str(cfg)}
        with running(d) as daemon:
            cfg.write_text(BROKEN["unknown daemon key"])
            check = subprocess.run(
                [ONEIRICD, "--check"], env=env, capture_output=True, text=True, check=False
            )
            assert check.returncode == 78 and str(cfg) in check.stderr
            with ControlClient(daemon.socket, timeout=60) as c:
                with pytest.raises(RemoteError) as err:
                    c.call("reload")
                assert "bogus" in err.value.message
                snap = c.call("status")
                assert (
                    snap["config"]["last_error"] and snap["components"][0]["lifecycle"] == "ready"
                )
            assert daemon.stop() == 0
        env["RUNTIME_DIRECTORY"], env["STATE_DIRECTORY"] = str(d), str(d / "state")
        start = subprocess.run([ONEIRICD], env=env, capture_output=True, text=True, check=False)
        assert start.returncode == 78 and "bogus" in start.stderr
