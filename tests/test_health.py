"""The health snapshot file: round trip, tolerance, atomic writes and the staleness judge."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from oneiric.runtime.health import (
    ComponentHealth,
    ConfigHealth,
    HealthSnapshot,
    RemoteHealth,
    Staleness,
    decode_snapshot,
    encode_snapshot,
    judge,
    read_health,
    write_health,
)

# The SPEC §5 field names, which readers and scripts rely on.
SPEC_TOP = {"schema", "version", "pid", "state", "started_at", "updated_at", "config", "remote"}
SPEC_COMPONENT = {
    "domain",
    "key",
    "provider",
    "admin",
    "lifecycle",
    "in_flight",
    "parked_provider",
    "note",
    "last_error",
    "swaps",
    "failed_swaps",
    "last_swap_ms",
}


def snapshot(**kw: object) -> HealthSnapshot:
    now = time.time()
    fields: dict[str, object] = {
        "version": "0.1.0",
        "pid": os.getpid(),
        "state": "running",
        "started_at": now - 60,
        "updated_at": now,
        "heartbeat_s": 5.0,
        "config": ConfigHealth(path="/etc/oneiric/oneiricd.toml", loaded_at=now, files=["a"]),
        "remote": RemoteHealth(status="ok", url="https://x/", version=3, last_check_at=now),
        "components": [
            ComponentHealth(
                domain="adapter",
                key="cache",
                provider="memory",
                lifecycle="ready",
                in_flight=2,
                swaps=1,
                last_swap_ms=3.5,
            ),
            ComponentHealth(
                domain="service",
                key="beat",
                admin="paused",
                paused_by="domain",
                note="maintenance",
                intent_uid=0,
                intent_at=now,
                restarts=2,
                backoff_s=1.5,
            ),
        ],
    }
    fields.update(kw)
    return msgspec.convert(fields, HealthSnapshot, from_attributes=True)


def dead_pid() -> int:
    """The pid of a child that has exited and been reaped: guaranteed not running (barring
    reuse within microseconds)."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


# --- encoding ----------------------------------------------------------------------------


def test_round_trip() -> None:
    s = snapshot()
    assert decode_snapshot(encode_snapshot(s)) == s


def test_encoded_document_carries_the_contract_fields() -> None:
    doc = msgspec.json.decode(encode_snapshot(snapshot()))
    assert set(doc) >= SPEC_TOP | {"components"}
    assert doc["schema"] == 1
    assert set(doc["config"]) >= {"path", "loaded_at", "last_error"}
    assert "status" in doc["remote"]
    for comp in doc["components"]:
        assert set(comp) >= SPEC_COMPONENT


def test_minimal_document_uses_defaults() -> None:
    s = decode_snapshot(
        b'{"version": "0.1.0", "pid": 1, "state": "starting", "started_at": 1,'
        b' "updated_at": 2, "heartbeat_s": 5, "config": {"path": "/c"}, "remote": {},'
        b' "components": [{"domain": "task", "key": "t"}]}'
    )
    assert s.schema == 1
    assert s.remote.status == "disabled"
    assert s.config.files == []
    c = s.components[0]
    assert (c.admin, c.lifecycle, c.in_flight, c.provider) == ("active", "inactive", 0, None)


def test_unknown_fields_are_tolerated_everywhere() -> None:
    original = snapshot()
    doc = msgspec.json.decode(encode_snapshot(original))
    doc["from_the_future"] = {"x": 1}
    doc["config"]["checksum"] = "abc"
    doc["remote"]["mirrors"] = ["a", "b"]
    doc["components"][0]["gpu"] = 0.5
    assert decode_snapshot(msgspec.json.encode(doc)) == original


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not a oneiric health snapshot"),
        (b"{torn", "not a oneiric health snapshot"),
        (b"[]", "not a oneiric health snapshot"),
        (b'{"version": "1", "pid": 1}', "missing required field"),
        (
            b'{"version": "1", "pid": "x", "state": "running", "started_at": 1,'
            b' "updated_at": 1, "heartbeat_s": 1, "config": {"path": "/"}, "remote": {}}',
            r"Expected `int`, got `str` - at `\$.pid`",
        ),
        (
            b'{"version": "1", "pid": 1, "state": "napping", "started_at": 1,'
            b' "updated_at": 1, "heartbeat_s": 1, "config": {"path": "/"}, "remote": {}}',
            "state",
        ),
    ],
)
def test_bad_documents_raise_value_error(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_snapshot(data)


def test_newer_schema_is_refused_with_advice() -> None:
    doc = msgspec.json.decode(encode_snapshot(snapshot()))
    doc["schema"] = 2
    with pytest.raises(ValueError, match="schema 2 is newer"):
        decode_snapshot(msgspec.json.encode(doc))


# --- files -------------------------------------------------------------------------------


def test_write_then_read(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    s = snapshot()
    write_health(str(path), s)
    assert read_health(str(path)) == s
    assert read_health(path) == s  # PathLike too


def test_write_is_atomic_replace_with_mode_0644(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    inode = path.stat().st_ino
    old_umask = os.umask(0o077)  # the mode must not depend on the writer's umask
    try:
        write_health(str(path), snapshot(state="stopped"))
    finally:
        os.umask(old_umask)
    st = path.stat()
    assert st.st_mode & 0o777 == 0o644
    assert st.st_ino != inode  # replaced by rename, not rewritten in place
    assert os.listdir(tmp_path) == ["health.json"]  # no temp file left behind
    assert read_health(str(path)).state == "stopped"


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    write_health(str(path), snapshot())
    before = path.read_bytes()
    target_dir = tmp_path / "sub"
    target_dir.mkdir()
    (target_dir / "health.json").mkdir()  # os.replace onto a directory fails
    with pytest.raises(OSError):
        write_health(str(target_dir / "health.json"), snapshot())
    assert os.listdir(target_dir) == ["health.json"]
    assert path.read_bytes() == before


def test_read_missing_passes_file_not_found_through(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_health(str(tmp_path / "nope.json"))


def test_read_bad_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=r"health\.json: not a oneiric health snapshot"):
        read_health(str(path))


# --- judge -------------------------------------------------------------------------------


def test_fresh_snapshot_of_live_process_is_not_stale() -> None:
    assert judge(snapshot()) == Staleness(stale=False, reason=None)


def test_dead_pid_is_stale() -> None:
    pid = dead_pid()
    verdict = judge(snapshot(pid=pid))
    assert verdict.stale
    assert verdict.reason is not None
    assert f"pid {pid} is not running" in verdict.reason


@pytest.mark.parametrize("pid", [0, -1])
def test_nonsense_pid_is_stale(pid: int) -> None:
    # os.kill(0, 0) would "succeed" by signalling our own process group
    assert judge(snapshot(pid=pid)).stale


def test_pid_owned_by_someone_else_counts_as_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root here, so provoke EPERM the only way available: a kill that says so.
    def kill(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", kill)
    assert judge(snapshot(pid=12345)) == Staleness(stale=False, reason=None)


def test_old_updated_at_is_stale() -> None:
    now = 1_000_000.0
    s = snapshot(updated_at=now - 15.5, heartbeat_s=5.0)
    verdict = judge(s, now=now)
    assert verdict.stale
    assert verdict.reason is not None
    assert "15.5s ago" in verdict.reason
    # exactly three heartbeats is still fine; the boundary is "older than"
    assert not judge(snapshot(updated_at=now - 15.0, heartbeat_s=5.0), now=now).stale


def test_age_uses_wall_clock_by_default() -> None:
    assert judge(snapshot(updated_at=time.time() - 3600, heartbeat_s=5.0)).stale


def test_zero_heartbeat_disables_the_age_check() -> None:
    now = 1_000_000.0
    assert not judge(snapshot(updated_at=0.0, heartbeat_s=0.0), now=now).stale


def test_clean_stop_is_not_stale_even_with_dead_pid_and_old_time() -> None:
    s = snapshot(state="stopped", pid=dead_pid(), updated_at=0.0)
    assert judge(s) == Staleness(stale=False, reason="stopped")


@pytest.mark.parametrize("state", ["starting", "running", "reloading", "draining", "stopping"])
def test_every_non_stopped_state_is_judged(state: str) -> None:
    assert judge(snapshot(state=state, pid=dead_pid())).stale


# --- failure summary ---------------------------------------------------------------------
