"""Sans-IO tests of the control protocol: framing, request decoding, reply shapes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oneiric.control import protocol, replies
from oneiric.control.framing import MAX_LINE, LineFramer, TooLong
from oneiric.control.protocol import (
    ERROR_CODES,
    KNOWN_OPS,
    MAX_DEPTH,
    MUTATING_OPS,
    DrainRequest,
    EmitRequest,
    ExplainRequest,
    ListRequest,
    PauseRequest,
    PingRequest,
    RunRequest,
    StatusRequest,
    SwapRequest,
    decode_request,
    encode_error,
    encode_event,
    encode_ok,
    nested_too_deeply,
)
from oneiric.errors import OneiricError, ProtocolError

# --- framing ---------------------------------------------------------------------------------


def test_many_lines_in_one_feed() -> None:
    f = LineFramer()
    assert f.feed(b"a\nbb\nccc\n") == [b"a", b"bb", b"ccc"]
    assert f.buffered == 0


def test_partial_lines_across_feeds() -> None:
    f = LineFramer()
    assert f.feed(b'{"id":') == []
    assert f.buffered == 6
    assert f.feed(b'1}\n{"id"') == [b'{"id":1}']
    assert f.feed(b":2}") == []
    assert f.feed(b"\n") == [b'{"id":2}']


def test_crlf_and_blank_lines() -> None:
    f = LineFramer()
    assert f.feed(b"a\r\n\r\n\n  \nb\r") == [b"a"]
    assert f.feed(b"\n") == [b"b"]


def test_line_of_exactly_max_is_accepted_even_with_cr_split() -> None:
    f = LineFramer(max_line=4)
    assert f.feed(b"abcd\n") == [b"abcd"]
    assert f.feed(b"wxyz\r") == []  # the \r may belong to a \r\n still in transit
    assert f.feed(b"\n") == [b"wxyz"]
    assert f.feed(b"abcde\n") == [TooLong(4)]


def test_oversize_line_is_reported_once_then_framing_resumes() -> None:
    f = LineFramer(max_line=8)
    assert f.feed(b"0123456789") == [TooLong(8)]
    assert f.buffered == 0  # nothing of the long line is kept
    assert f.feed(b"x" * 1000) == []
    assert f.buffered == 0
    assert f.feed(b"tail\ngood\n") == [b"good"]


def test_oversize_complete_line_in_one_feed_then_good_line() -> None:
    f = LineFramer(max_line=8)
    assert f.feed(b"0123456789ABC\nok\n") == [TooLong(8), b"ok"]


def test_oversize_line_across_buffer_and_feed() -> None:
    f = LineFramer(max_line=8)
    assert f.feed(b"01234") == []
    assert f.feed(b"56789\nok\n") == [TooLong(8), b"ok"]


def test_default_limit_is_64_kib() -> None:
    f = LineFramer()
    assert f.feed(b"y" * MAX_LINE + b"\n") == [b"y" * MAX_LINE]
    assert f.feed(b"y" * (MAX_LINE + 1) + b"\n") == [TooLong(MAX_LINE)]


def test_max_line_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LineFramer(max_line=0)


@given(
    lines=st.lists(st.binary(min_size=1, max_size=20).filter(lambda b: b"\n" not in b)),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_any_split_gives_the_same_frames(lines: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    whole = LineFramer(max_line=12).feed(stream)
    f = LineFramer(max_line=12)
    pieces: list[Any] = []
    prev = 0
    for cut in [*sorted({min(c, len(stream)) for c in cuts}), len(stream)]:
        pieces.extend(f.feed(stream[prev:cut]))
        prev = cut
    assert pieces == whole
    expected = [
        TooLong(12) if len(x.removesuffix(b"\r")) > 12 else x.removesuffix(b"\r")
        for x in lines
        if x.removesuffix(b"\r").strip() or len(x.removesuffix(b"\r")) > 12
    ]
    assert whole == expected


# --- requests --------------------------------------------------------------------------------


def _err(line: bytes | str) -> ProtocolError:
    raw = line.encode() if isinstance(line, str) else line
    with pytest.raises(ProtocolError) as info:
        decode_request(raw)
    assert isinstance(info.value, OneiricError)
    return info.value


def test_every_op_is_known_and_mutating_is_a_subset() -> None:
    assert set(KNOWN_OPS) == {
        "ping",
        "status",
        "explain",
        "list",
        "pause",
        "resume",
        "drain",
        "swap",
        "reload",
        "watch",
        "run",
        "emit",
        "sync",
        "health",
        "dead_letters",
        "replay",
        "runs",
        "events",
        "metrics",
    }
    assert MUTATING_OPS == {
        "pause",
        "resume",
        "drain",
        "swap",
        "reload",
        "run",
        "emit",
        "sync",
        "replay",
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": 1, "op": "replay"}', "exactly one of `ids` or `all: true`"),
        ('{"id": 1, "op": "replay", "ids": [1], "all": true}', "exactly one of"),
        ('{"id": 1, "op": "replay", "ids": []}', "at least one dead letter"),
        ('{"id": 1, "op": "run", "domain": "task", "key": "k", "resume": "r"}', "workflow"),
        (
            '{"id": 1, "op": "run", "domain": "workflow", "key": "k", "resume": "r", "payload": 1}',
            "keeps its payload",
        ),
        ('{"id": 1, "op": "runs", "limit": 0}', ">= 1"),
    ],
)
def test_new_op_arguments_are_checked(line: str, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_request(line.encode())
    assert info.value.code == "bad_request" and message in info.value.message


@pytest.mark.parametrize(
    "op",
    [
        "ping",
        "status",
        "list",
        "pause",
        "resume",
        "drain",
        "reload",
        "watch",
        "sync",
        "health",
        "events",
        "metrics",
    ],
)
def test_ops_without_required_args_decode(op: str) -> None:
    req = decode_request(json.dumps({"id": 3, "op": op}).encode())
    assert req.id == 3
    assert type(req).__struct_config__.tag == op


def test_arguments_and_defaults() -> None:
    assert decode_request(b'{"id":1,"op":"status","domain":"adapter","key":"cache"}') == (
        StatusRequest(id=1, domain="adapter", key="cache")
    )
    assert decode_request(b'{"id":1,"op":"list"}') == ListRequest(id=1, shadowed=False)
    assert decode_request(b'{"id":2,"op":"pause","domain":"task","note":"maint"}') == (
        PauseRequest(id=2, domain="task", note="maint")
    )
    drain = decode_request(b'{"id":3,"op":"drain","timeout":2.5}')
    assert drain == DrainRequest(id=3, timeout=2.5, wait=True)
    assert decode_request(b'{"id":4,"op":"swap","domain":"adapter","key":"c","clear":true}') == (
        SwapRequest(id=4, domain="adapter", key="c", clear=True)
    )
    run = decode_request(b'{"id":5,"op":"run","domain":"task","key":"k","payload":{"a":[1]}}')
    assert run == RunRequest(id=5, domain="task", key="k", payload={"a": [1]}, wait=True)
    assert decode_request(b'{"id":6,"op":"emit","topic":"t"}') == EmitRequest(id=6, topic="t")
    assert decode_request(b'{"id":7,"op":"explain","domain":"service","key":"s"}') == (
        ExplainRequest(id=7, domain="service", key="s")
    )


def test_unknown_fields_are_tolerated() -> None:
    assert decode_request(b'{"id":1,"op":"ping","future":{"x":1}}') == PingRequest(id=1)


def _nested(levels: int) -> bytes:
    return b'{"id":1,"op":"ping","x":' + b"[" * levels + b"]" * levels + b"}"


@pytest.mark.parametrize("levels", [MAX_DEPTH, 5_000, 20_000, 60_000])
def test_nesting_limit_is_the_protocols_not_the_interpreters(levels: int) -> None:
    """The same answer on every Python version: 3.11 and 3.13 differ in how deep msgspec can
    decode before a RecursionError, so the protocol checks depth itself, before decoding."""
    line = _nested(levels - 1)  # the envelope object is one level
    if levels <= MAX_DEPTH:
        assert decode_request(line) == PingRequest(id=1)
    else:
        e = _err(line)
        assert e.code == "bad_request" and "nested too deeply" in e.message


def test_nesting_depth_ignores_brackets_inside_strings() -> None:
    deep_text = '"' + "[{" * 200 + '\\"' + "[" * 100 + '"'
    line = b'{"id":1,"op":"emit","topic":"t","data":{"s":' + deep_text.encode() + b"}}"
    assert json.loads(line)  # valid JSON: the brackets are text
    assert not nested_too_deeply(line)
    escaped_quote = b'{"a":"\\"' + b"[" * 100 + b'"}'
    assert json.loads(escaped_quote) and not nested_too_deeply(escaped_quote)
    assert nested_too_deeply(b"[" * (MAX_DEPTH + 1))
    assert not nested_too_deeply(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"[" * MAX_DEPTH)


def test_invalid_json() -> None:
    e = _err(b'{"id":1,"op":')
    assert (e.code, e.id) == ("bad_request", None)
    assert "invalid JSON" in e.message


@pytest.mark.parametrize("line", ["[1,2]", '"ping"', "3"])
def test_not_an_object(line: str) -> None:
    e = _err(line)
    assert (e.code, e.id) == ("bad_request", None)
    assert "JSON object" in e.message


@pytest.mark.parametrize(
    "line",
    [
        '{"op":"ping"}',
        '{"id":"1","op":"ping"}',
        '{"id":true,"op":"ping"}',
        '{"id":1.5,"op":"ping"}',
    ],
)
def test_missing_or_invalid_id(line: str) -> None:
    e = _err(line)
    assert (e.code, e.id) == ("bad_request", None)
    assert "`id`" in e.message


@pytest.mark.parametrize("line", ['{"id":4}', '{"id":4,"op":7}'])
def test_missing_op_keeps_id(line: str) -> None:
    e = _err(line)
    assert (e.code, e.id) == ("bad_request", 4)
    assert "`op`" in e.message


def test_unknown_op_lists_known_ops() -> None:
    e = _err('{"id":9,"op":"frobnicate"}')
    assert (e.code, e.id) == ("unknown_op", 9)
    assert "'frobnicate'" in e.message
    assert all(op in e.message for op in KNOWN_OPS)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"id":5,"op":"explain","domain":"adapter"}', "key"),
        ('{"id":5,"op":"status","domain":"nope"}', "domain"),
        ('{"id":5,"op":"status","key":"k"}', "key"),
        ('{"id":5,"op":"pause","key":"k"}', "key"),
        ('{"id":5,"op":"resume","key":"k"}', "key"),
        ('{"id":5,"op":"drain","key":"k"}', "key"),
        ('{"id":5,"op":"drain","timeout":-1}', "timeout"),
        ('{"id":5,"op":"list","shadowed":"yes"}', "shadowed"),
        ('{"id":5,"op":"swap","domain":"adapter","key":"k"}', "provider"),
        ('{"id":5,"op":"swap","domain":"adapter","key":"k","provider":"p","clear":true}', "clear"),
        ('{"id":5,"op":"run","domain":"service","key":"k"}', "domain"),
        ('{"id":5,"op":"emit"}', "topic"),
    ],
)
def test_invalid_arguments_name_the_field(line: str, field: str) -> None:
    e = _err(line)
    assert (e.code, e.id) == ("bad_request", 5)
    assert field in e.message


# --- replies ---------------------------------------------------------------------------------


def test_ok_reply_shape() -> None:
    line = encode_ok(1, {"a": 1})
    assert line == b'{"id":1,"ok":true,"result":{"a":1}}\n'
    assert encode_ok(2, PingRequest(id=2)).endswith(b"\n")
    assert json.loads(encode_ok(2, PingRequest(id=2))) == {
        "id": 2,
        "ok": True,
        "result": {"op": "ping", "id": 2},
    }


def test_error_reply_shape_with_and_without_detail() -> None:
    assert encode_error(1, "not_found", "no such key") == (
        b'{"id":1,"ok":false,"error":{"code":"not_found","message":"no such key"}}\n'
    )
    assert json.loads(encode_error(None, "bad_request", "m", detail={"at": "$.id"})) == {
        "id": None,
        "ok": False,
        "error": {"code": "bad_request", "message": "m", "detail": {"at": "$.id"}},
    }


def test_event_shape() -> None:
    assert encode_event(3, [1, "x"]) == b'{"id":3,"event":[1,"x"]}\n'


def test_unencodable_result_raises_type_error() -> None:
    with pytest.raises(TypeError):
        encode_ok(1, object())


def test_every_reply_is_exactly_one_line() -> None:
    for line in (encode_ok(1, "a\nb"), encode_error(1, "c", "x\ny"), encode_event(1, "\n")):
        assert line.count(b"\n") == 1
        assert msgspec.json.decode(line)


# --- the reply Structs and the documented contract -------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def _balanced(text: str, start: int) -> str:
    """The ``{...}`` group that opens at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i]
    raise AssertionError(f"unbalanced braces in {text[start:]!r}")


def _documented_fields(body: str) -> list[str]:
    """Top-level field names of ``{a, b?, c: [...], "d": 1}`` in docs/protocol.md's notation
    (the ``?`` of optional fields and the quotes of quoted names dropped)."""
    names, depth, token = [], 0, ""
    for ch in body + ",":
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        if ch == "," and depth == 0:
            name = re.match(r'\s*"?(\w+)', token)
            if name:
                names.append(name.group(1))
            token = ""
        else:
            token += ch
    return names


def _documented_structs() -> dict[str, list[str]]:
    """Every "`Name` `{fields}`" in docs/protocol.md (the Ops and Messages tables)."""
    text = DOCS.read_text()
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"`([A-Z]\w+)` `\{", text):
        out[m.group(1)] = _documented_fields(_balanced(text, m.end() - 1))
    return out


def test_docs_name_every_reply_struct_with_its_exact_fields() -> None:
    documented = _documented_structs()
    structs = {
        name: obj
        for name in [*replies.__all__, "OkReply", "ErrorReply", "EventMessage"]
        if isinstance(obj := getattr(replies, name, None) or getattr(protocol, name), type)
        and issubclass(obj, msgspec.Struct)
    }
    for name, cls in structs.items():
        if name == "StatusReply":
            continue  # the status document has its own section
        assert name in documented, f"docs/protocol.md does not show {name}'s fields"
        tag = cls.__struct_config__.tag_field  # a streamed event's "type" comes first
        assert documented[name] == [tag] * bool(tag) + list(cls.__struct_fields__), name
    assert set(documented) <= set(structs), "docs/protocol.md names a Struct that does not exist"


def test_documented_error_codes_are_the_protocols() -> None:
    text = DOCS.read_text()
    line = text[text.index("Error codes:") :].split(".")[0]
    assert re.findall(r"`(\w+)`", line) == list(ERROR_CODES)


def test_every_error_class_has_a_protocol_code() -> None:
    def subclasses(cls: type[OneiricError]) -> list[type[OneiricError]]:
        return [cls] + [s for sub in cls.__subclasses__() for s in subclasses(sub)]

    for cls in subclasses(OneiricError):
        assert cls.code in ERROR_CODES, cls


def test_optional_fields_are_left_out_not_null() -> None:
    waited = replies.DrainReply(drained=True, affected=["task/x"], elapsed_s=1.5)
    assert encode_ok(1, waited) == (
        b'{"id":1,"ok":true,"result":{"drained":true,"affected":["task/x"],"elapsed_s":1.5}}\n'
    )
    not_waited = replies.DrainReply(
        drained=False, affected=["task/x"], in_flight={"task/x": 1}, elapsed_s=0.0
    )
    assert json.loads(encode_ok(1, not_waited))["result"] == {
        "drained": False,
        "affected": ["task/x"],
        "in_flight": {"task/x": 1},
        "elapsed_s": 0.0,
    }


def test_streamed_events_carry_their_type_first() -> None:
    progress = replies.DrainProgress(in_flight={"task/x": 2}, elapsed_s=0.25)
    assert encode_event(4, progress) == (
        b'{"id":4,"event":{"type":"progress","in_flight":{"task/x":2},"elapsed_s":0.25}}\n'
    )
    ended = replies.WatchEnded(ended="daemon stopping")
    assert json.loads(encode_ok(5, ended))["result"] == {"ended": "daemon stopping"}
