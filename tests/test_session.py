"""The per-connection protocol state machine without sockets: bytes in, decisions and bytes out.

Every per-request rule of SPEC §8 — framing errors, authorisation, inline vs task, the audit
trail, "events, then exactly one reply", error translation — is decided by the Session, so it is
proved here with plain bytes; tests/test_server.py proves the pump wires it to real sockets.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneiric.control.peers import Peer
from oneiric.control.protocol import DrainRequest, PauseRequest, PingRequest, RunRequest
from oneiric.control.session import (
    AUDIT_DENIED_PER_CONNECTION,
    NEED_DATA,
    PEER_CLOSED,
    Answer,
    AuditRecord,
    AuditSummary,
    Decision,
    Dispatch,
    Session,
)
from oneiric.errors import Busy, ConfigError, DrainTimeout, NotFound, SessionMisuse

ADMIN = Peer(pid=10, uid=0, gid=0, role="admin")
READER = Peer(pid=20, uid=1000, gid=1000, role="reader")


def decisions(session: Session) -> list[Decision]:
    """Everything the session can decide without more input."""
    out: list[Decision] = []
    while (d := session.next_decision()) not in (NEED_DATA, PEER_CLOSED):
        out.append(d)
    return out


def answer(d: Decision) -> dict[str, Any]:
    assert isinstance(d, Answer), d
    assert d.data.endswith(b"\n") and d.data.count(b"\n") == 1
    reply: dict[str, Any] = json.loads(d.data)
    return reply


def dispatch(session: Session, line: bytes) -> Dispatch:
    session.receive_data(line)
    [d] = decisions(session)
    assert isinstance(d, Dispatch), d
    return d


# --- input -----------------------------------------------------------------------------------


def test_lines_are_decided_one_at_a_time_and_partial_lines_wait() -> None:
    s = Session(ADMIN, admin_group=None)
    assert s.next_decision() is NEED_DATA
    s.receive_data(b'{"id":1,"op":"ping"}\n{"id":2,"op":"status"}\n{"id":3,')
    first = s.next_decision()
    assert isinstance(first, Dispatch) and first.request == PingRequest(id=1)
    second = s.next_decision()
    assert isinstance(second, Dispatch) and (second.op, second.id) == ("status", 2)
    assert s.next_decision() is NEED_DATA  # id 3 is incomplete
    s.receive_data(b'"op":"ping"}\n')
    third = s.next_decision()
    assert isinstance(third, Dispatch) and third.id == 3
    assert s.in_flight == 3


def test_end_of_stream_after_the_pending_lines() -> None:
    s = Session(ADMIN, admin_group=None)
    s.receive_data(b'{"id":1,"op":"ping"}\n{"id":2,"op":"pi')
    s.receive_data(b"")
    assert isinstance(s.next_decision(), Dispatch)
    assert s.next_decision() is PEER_CLOSED  # the incomplete line is dropped
    assert s.next_decision() is PEER_CLOSED
    with pytest.raises(SessionMisuse):
        s.receive_data(b"more")


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_decisions_do_not_depend_on_how_the_bytes_are_split(cuts: list[int]) -> None:
    stream = (
        b'{"id":1,"op":"ping"}\r\n\n'
        b"not json\n"
        b'{"id":2,"op":"frobnicate"}\n'
        + b"x" * 100
        + b"\n"
        + b'{"id":3,"op":"drain","domain":"task"}\n'
        b'{"id":4,"op":"pause","note":"n"}\n'
    )

    def run(chunks: list[bytes]) -> list[Any]:
        s = Session(ADMIN, admin_group=None, max_line=64)
        out: list[Any] = []
        for chunk in chunks:
            s.receive_data(chunk)
            out += [d.data if isinstance(d, Answer) else d.request for d in decisions(s)]
        return out

    chunks, pos = [], 0
    for n in cuts:
        chunks.append(stream[pos : pos + n])
        pos += n
    chunks.append(stream[pos:])
    assert run([c for c in chunks if c]) == run([stream])


# --- answers without the handler -------------------------------------------------------------


def test_lines_that_are_not_requests_are_answered_at_once() -> None:
    s = Session(ADMIN, admin_group=None, max_line=64)
    s.receive_data(b"nope\n" + b"z" * 100 + b'\n{"id":7,"op":"frobnicate"}\n{"id":8,"op":"ping"}\n')
    bad, long, unknown, ping = decisions(s)
    assert answer(bad)["error"]["code"] == "bad_request" and answer(bad)["id"] is None
    assert answer(long) == {
        "id": None,
        "ok": False,
        "error": {
            "code": "too_large",
            "message": "request line longer than 64 bytes; it was discarded",
        },
    }
    assert answer(unknown)["id"] == 7 and answer(unknown)["error"]["code"] == "unknown_op"
    assert isinstance(ping, Dispatch)
    assert s.in_flight == 1  # answers are not in flight


@pytest.mark.parametrize("group", [None, "oneiric"])
def test_a_reader_may_read_but_not_mutate(group: str | None) -> None:
    s = Session(READER, admin_group=group)
    s.receive_data(b'{"id":1,"op":"status"}\n{"id":2,"op":"pause","domain":"adapter","key":"c"}\n')
    status, pause = decisions(s)
    assert isinstance(status, Dispatch)
    reply = answer(pause)
    assert reply["id"] == 2 and reply["error"]["code"] == "permission_denied"
    who = "members of group 'oneiric'" if group else "only root and the daemon's own user"
    assert who in reply["error"]["message"]
    assert isinstance(pause, Answer)
    assert pause.audit == AuditRecord(1000, 20, "pause", "adapter/c", None, "permission_denied")


def test_refusals_beyond_the_audit_budget_are_summarised_at_close() -> None:
    s = Session(READER, admin_group=None)
    n = AUDIT_DENIED_PER_CONNECTION + 3
    s.receive_data(b'{"id":1,"op":"reload"}\n' * n)
    refused = decisions(s)
    assert all(answer(d)["error"]["code"] == "permission_denied" for d in refused)
    audited = [d.audit for d in refused if isinstance(d, Answer) and d.audit is not None]
    assert len(audited) == AUDIT_DENIED_PER_CONNECTION
    assert s.close() == AuditSummary(uid=1000, pid=20, refused=3)
    assert s.close() is None  # summarised once


def test_no_summary_when_every_refusal_was_audited() -> None:
    s = Session(READER, admin_group=None)
    s.receive_data(b'{"id":1,"op":"reload"}\n')
    decisions(s)
    assert s.close() is None


# --- dispatch --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "inline"),
    [
        ("ping", True),
        ("status", True),
        ("health", True),
        ("list", True),
        ("pause", True),
        ("resume", True),
        ("watch", False),
        ("drain", False),
        ("reload", False),
        ("sync", False),
    ],
)
def test_quick_ops_are_inline_and_long_ones_get_a_task(op: str, inline: bool) -> None:
    d = dispatch(Session(ADMIN, admin_group=None), b'{"id":1,"op":"%s"}\n' % op.encode())
    assert d.inline is inline


def test_long_mutating_ops_are_audited_when_dispatched_then_on_their_outcome() -> None:
    s = Session(ADMIN, admin_group=None)
    drain = dispatch(s, b'{"id":1,"op":"drain","domain":"task","key":"x","note":"maint"}\n')
    assert drain.accepted == AuditRecord(0, 10, "drain", "task/x", "maint", "accepted")
    pause = dispatch(s, b'{"id":2,"op":"pause"}\n')
    assert pause.accepted is None  # inline: audited once, with its outcome
    watch = dispatch(s, b'{"id":3,"op":"watch"}\n')
    assert watch.accepted is None  # not mutating: never audited
    assert s.in_flight == 3

    assert json.loads(s.result(pause, {"affected": []}))["ok"] is True
    assert s.finish(pause) == AuditRecord(0, 10, "pause", "*", None, "ok")
    s.error(drain, DrainTimeout("drain timed out", {"task/x": 1}))
    assert s.finish(drain) == AuditRecord(0, 10, "drain", "task/x", "maint", "timeout")
    assert s.finish(watch) is None
    assert s.in_flight == 0


def test_a_request_abandoned_before_its_reply_is_audited_as_cancelled() -> None:
    s = Session(ADMIN, admin_group=None)
    run = dispatch(s, b'{"id":1,"op":"run","domain":"workflow","key":"etl"}\n')
    assert run.request == RunRequest(id=1, domain="workflow", key="etl")
    assert s.finish(run) == AuditRecord(0, 10, "run", "workflow/etl", None, "cancelled")


def test_emit_is_audited_by_topic() -> None:
    s = Session(ADMIN, admin_group=None)
    d = dispatch(s, b'{"id":1,"op":"emit","topic":"orders.created","wait":true}\n')
    assert d.accepted is not None and d.accepted.target == "orders.created"


@pytest.mark.parametrize(
    "line",
    [
        b'{"id":1,"op":"run","domain":"task","key":"t","wait":false}\n',
        b'{"id":1,"op":"drain","key":null,"wait":false}\n',
        b'{"id":1,"op":"emit","topic":"orders.created"}\n',
    ],
)
def test_what_does_not_wait_is_audited_once_as_accepted(line: bytes) -> None:
    """A ``--no-wait`` run is accepted, not ``ok``: it has not finished when its reply goes."""
    s = Session(ADMIN, admin_group=None)
    d = dispatch(s, line)
    assert d.accepted is None  # no line at dispatch: the reply comes at once
    s.result(d, {"accepted": True})
    record = s.finish(d)
    assert record is not None and record.outcome == "accepted"


def test_what_does_not_wait_and_is_refused_is_audited_with_the_error() -> None:
    s = Session(ADMIN, admin_group=None)
    d = dispatch(s, b'{"id":1,"op":"run","domain":"task","key":"t","wait":false}\n')
    s.error(d, Busy("task/t is busy"))
    record = s.finish(d)
    assert record is not None and record.outcome == "unavailable"


# --- events, then exactly one reply ----------------------------------------------------------


def test_events_then_one_reply() -> None:
    s = Session(ADMIN, admin_group=None)
    d = dispatch(s, b'{"id":5,"op":"watch"}\n')
    assert s.event(d, {"n": 1}) == b'{"id":5,"event":{"n":1}}\n'
    assert s.result(d, {"done": True}) == b'{"id":5,"ok":true,"result":{"done":true}}\n'
    with pytest.raises(SessionMisuse, match="after its final reply"):
        s.event(d, {"n": 2})
    with pytest.raises(SessionMisuse, match="after its final reply"):
        s.result(d, {})
    assert s.finish(d) is None
    with pytest.raises(SessionMisuse, match="not in flight"):
        s.event(d, {"n": 3})
    with pytest.raises(SessionMisuse, match="finished twice"):
        s.finish(d)


def test_a_dispatch_belongs_to_its_session() -> None:
    a, b = Session(ADMIN, admin_group=None), Session(ADMIN, admin_group=None)
    d = dispatch(a, b'{"id":1,"op":"ping"}\n')
    with pytest.raises(SessionMisuse):
        b.result(d, {})


# --- error translation at the boundary --------------------------------------------------------


def _error(s: Session, exc: BaseException) -> dict[str, Any]:
    d = dispatch(s, b'{"id":9,"op":"ping"}\n')
    reply: dict[str, Any] = json.loads(s.error(d, exc))
    assert reply["id"] == 9 and reply["ok"] is False
    assert d.outcome == reply["error"]["code"]
    return reply["error"]  # type: ignore[no-any-return]


def test_oneiric_errors_become_their_code_message_and_detail() -> None:
    s = Session(ADMIN, admin_group=None)
    assert _error(s, NotFound("no such key")) == {"code": "not_found", "message": "no such key"}
    assert _error(s, ConfigError("expected an integer", file="d.toml", path="daemon.x")) == {
        "code": "bad_request",
        "message": "d.toml, at daemon.x: expected an integer",
        "detail": "expected an integer",
    }
    assert _error(s, DrainTimeout("drain timed out", {"task/x": 2}))["detail"] == {
        "in_flight": {"task/x": 2}
    }
    wrapped = ExceptionGroup("tg", [ExceptionGroup("inner", [NotFound("deep")])])
    assert _error(s, wrapped) == {"code": "not_found", "message": "deep"}


def test_anything_else_is_internal_and_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Session(ADMIN, admin_group=None)
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        err = _error(s, exc)
    assert err == {"code": "internal", "message": "internal error: RuntimeError('boom')"}
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.name == "oneiric.control.session" and "'ping' (id 9)" in record.getMessage()


def test_a_result_that_cannot_be_encoded_is_an_internal_error() -> None:
    s = Session(ADMIN, admin_group=None)
    d = dispatch(s, b'{"id":3,"op":"ping"}\n')
    reply = json.loads(s.result(d, object()))
    assert reply["id"] == 3 and reply["error"]["code"] == "internal"
    assert d.outcome == "internal"


# --- the audit line --------------------------------------------------------------------------


def test_audit_lines_cannot_be_forged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="oneiric.audit")
    req = PauseRequest(id=1, domain="adapter", key="x\naudit uid=0 outcome=ok", note="n")
    AuditRecord.of(READER, req, "permission_denied").log()
    AuditSummary(1000, 20, 4).log()
    lines = [r.getMessage() for r in caplog.records if r.name == "oneiric.audit"]
    assert lines == [
        'audit uid=1000 pid=20 op=pause target="adapter/x\\naudit uid=0 outcome=ok" note="n" '
        "outcome=permission_denied",
        "audit uid=1000 pid=20 refused 4 more mutating request(s) on this connection",
    ]


def test_dispatch_repr_names_the_request() -> None:
    d = Dispatch(DrainRequest(id=4), inline=False, accepted=None)
    assert repr(d) == "Dispatch('drain', id=4, inline=False)"
