"""Standing suite (issue 12): crash consistency. Several clients storm pause / resume / drain /
swap on their own keys of a real oneiricd; at a random point (after a random number of
acknowledged mutations) it is SIGKILLed and restarted. After every restart the intent parses
(the daemon comes up), every acknowledged mutation is present (each key shows its last
acknowledged state, or the one that was in flight at the kill), and the health file — read
continuously during the storm and after the kill — is never torn.

``make test`` runs a few rounds; ``make soak`` (ONEIRIC_SOAK=1) hundreds.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import msgspec

from oneiric.control.client import ControlClient, ControlError
from suite_support import Daemon, fresh_dir, record, scale, start

CLIENTS = 4
KEYS_PER_CLIENT = 4


def config() -> str:
    head = """
[daemon]
drain_timeout = "2s"
stop_timeout = "2s"
health_interval = "1h"
watch = false
"""
    comps = []
    for c in range(CLIENTS):
        for k in range(KEYS_PER_CLIENT):
            for provider in ("a", "b"):
                comps.append(
                    f"""
[[component]]
domain = "adapter"
key = "k{c}{k}"
provider = "{provider}"
factory = "oneiric.builtin.cache:MemoryCache"
priority = {1 if provider == "a" else 0}
"""
                )
    return head + "".join(comps)


class Ledger:
    """What each client had acknowledged, and what was in flight when the daemon died."""

    def __init__(self) -> None:
        self.admin: dict[str, str] = {}
        self.provider: dict[str, str] = {}
        self.maybe_admin: dict[str, str] = {}
        self.maybe_provider: dict[str, str] = {}
        self.acked = 0
        self.lock = threading.Lock()


def storm(
    sock: str, keys: list[str], ledger: Ledger, target: int, reached: threading.Event
) -> None:
    rng = random.Random()
    try:
        client = ControlClient(sock, timeout=30)
        while True:
            key = rng.choice(keys)
            op = rng.choice(["pause", "resume", "drain", "swap_a", "swap_b"])
            with ledger.lock:
                if op.startswith("swap"):
                    ledger.maybe_provider[key] = op[-1]
                else:
                    ledger.maybe_admin[key] = {"pause": "paused", "drain": "draining"}.get(
                        op, "active"
                    )
            if op == "drain":
                client.call("drain", domain="adapter", key=key, wait=False)
            elif op.startswith("swap"):
                client.call("swap", domain="adapter", key=key, provider=op[-1])
            else:
                client.call(op, domain="adapter", key=key)
            with ledger.lock:
                if op.startswith("swap"):
                    ledger.provider[key] = ledger.maybe_provider.pop(key)
                else:
                    ledger.admin[key] = ledger.maybe_admin.pop(key)
                ledger.acked += 1
                if ledger.acked >= target:
                    reached.set()
    except ControlError:
        return  # the daemon died under us: what was in flight stays "maybe"


def read_health_until(path: Path, stop: threading.Event, counts: dict[str, int]) -> None:
    """Read the health file over and over; every read must be a whole document."""
    while not stop.is_set():
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        try:
            msgspec.json.decode(data)
        except msgspec.DecodeError:
            counts["torn"] += 1
        counts["reads"] += 1


def check(daemon: Daemon, ledger: Ledger) -> int:
    """Every key shows its last acknowledged state (or the in-flight one); returns how many
    (key, aspect) facts were checked."""
    with ControlClient(daemon.socket, timeout=60) as c:
        status = c.call("status", domain="adapter")
    rows = {r["key"]: r for r in status["components"]}
    checked = 0
    for key, row in rows.items():
        admin = "draining" if row["admin"] == "drained" else row["admin"]
        allowed = {ledger.admin.get(key, "active")}
        if key in ledger.maybe_admin:
            allowed.add(ledger.maybe_admin[key])
        assert admin in allowed, (key, admin, allowed)
        provider = row["provider"]
        allowed_p = {ledger.provider.get(key, "a")}
        if key in ledger.maybe_provider:
            allowed_p.add(ledger.maybe_provider[key])
        assert provider in allowed_p, (key, provider, allowed_p, row)
        checked += 2
    assert len(rows) == CLIENTS * KEYS_PER_CLIENT
    return checked


def test_sigkill_storms_lose_no_acknowledged_intent() -> None:
    rounds = scale(3, 150)
    rng = random.Random()
    ledger = Ledger()
    counts = {"reads": 0, "torn": 0}
    checked = 0
    with fresh_dir() as d:
        (d / "oneiricd.toml").write_text(config())
        daemon = start(d)
        try:
            daemon.wait_ready()
            for _ in range(rounds):
                target = ledger.acked + rng.randint(1, 40)
                reached = threading.Event()
                stop_reading = threading.Event()
                reader = threading.Thread(
                    target=read_health_until, args=(daemon.health_file, stop_reading, counts)
                )
                reader.start()
                clients = [
                    threading.Thread(
                        target=storm,
                        args=(
                            daemon.socket,
                            [f"k{c}{k}" for k in range(KEYS_PER_CLIENT)],
                            ledger,
                            target,
                            reached,
                        ),
                    )
                    for c in range(CLIENTS)
                ]
                for t in clients:
                    t.start()
                assert reached.wait(120), "the storm made no progress"
                daemon.kill()  # SIGKILL at a random point of the storm
                for t in clients:
                    t.join(120)
                stop_reading.set()
                reader.join(60)
                msgspec.json.decode((d / "health.json").read_bytes())  # whole after the kill
                daemon.notify.close()
                daemon = start(d)  # intent must parse: the daemon comes up (78 otherwise)
                daemon.wait_ready()
                checked += check(daemon, ledger)
                # what was in flight is now settled one way or the other: start clean
                with ControlClient(daemon.socket, timeout=60) as c:
                    rows = c.call("status", domain="adapter")["components"]
                for row in rows:
                    admin = "draining" if row["admin"] == "drained" else row["admin"]
                    ledger.admin[row["key"]] = admin
                    ledger.provider[row["key"]] = row["provider"]
                ledger.maybe_admin.clear()
                ledger.maybe_provider.clear()
            assert daemon.stop() == 0
        finally:
            daemon.kill()
            daemon.notify.close()
    assert counts["torn"] == 0, counts
    record(
        "crash_consistency",
        {
            "sigkills": rounds,
            "mutations_acknowledged": ledger.acked,
            "facts_checked_after_restart": checked,
            "facts_missing": 0,
            "health_reads": counts["reads"],
            "health_torn": counts["torn"],
        },
    )
