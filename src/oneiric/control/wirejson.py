"""The control client's JSON: the standard library's own C codec, without ``import json``.

``import json`` costs about 0.7× a bare interpreter's whole start-up: ``json.decoder`` and
``json.encoder`` compile regular expressions at import, which loads ``re``, ``enum``,
``functools`` and ``collections``. oneiricctl's budget is 2.5× the bare interpreter, so the
client decodes with the very scanner ``json.loads`` uses (``_json.make_scanner``) and encodes
its flat request lines with ``_json.encode_basestring``, the function ``json.dumps`` uses for
strings. Whatever these do not settle themselves goes to :mod:`json`, imported then: any
decoding error (its exception class lives in ``json.decoder``), a byte-order mark or other
encodings, trailing data, a value that is not a plain string, number, boolean or null. So every
outcome, a value or an exception, is exactly :mod:`json`'s.

:func:`ok_result` also says when a reply's ``result`` may be printed as the bytes it came in:
``oneiricctl --json status`` at 10,000 components is 5.8 MB, and decoding it only to encode it
again costs more than the rest of the command.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["dumps", "loads", "ok_result"]

_encode_str: Callable[[str], str] | None = getattr(_json, "encode_basestring", None)
_make_scanner: Callable[[object], Callable[[str, int], tuple[Any, int]]] | None = getattr(
    _json, "make_scanner", None
)


class _Decoder:
    """The attributes of ``json.JSONDecoder`` that the C scanner reads, with json's defaults."""

    __slots__ = (
        "object_hook",
        "object_pairs_hook",
        "parse_constant",
        "parse_float",
        "parse_int",
        "strict",
    )

    def __init__(self, parse_constant: Callable[[str], Any], parse_float: Callable[[str], Any]):
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = None
        self.parse_float = parse_float
        self.parse_int = int
        self.parse_constant = parse_constant


def loads(data: bytes, parse_constant: Callable[[str], Any]) -> Any:
    """``json.loads(data, parse_constant=parse_constant)``: the same value or the same
    exception, decoded by the same C scanner when ``data`` is a UTF-8 object (a reply line)."""
    # json.detect_encoding says UTF-8 for anything starting with "{" (no BOM, no zero byte)
    if _make_scanner is not None and data[:1] == b"{" and data[1:2] != b"\x00":
        try:
            text = data.decode("utf-8", "surrogatepass")  # what json.loads does with bytes
            value, end = _make_scanner(_Decoder(parse_constant, float))(text, 0)
        except Exception:
            pass
        else:
            if end == len(text) or not text[end:].strip(" \t\n\r"):  # json's trailing space
                return value
    import json

    return json.loads(data, parse_constant=parse_constant)


def dumps(message: dict[str, Any]) -> str:
    """``json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``,
    for the flat objects the client sends (strings, integers, finite floats, booleans, null)
    without importing json; anything else goes to json itself (which also raises its errors)."""
    if _encode_str is not None:
        parts = []
        for name, value in message.items():
            kind = type(value)
            if type(name) is not str:
                break
            if kind is str:
                text = _encode_str(value)
            elif value is None:
                text = "null"
            elif value is True:
                text = "true"
            elif value is False:
                text = "false"
            elif kind is int:
                text = int.__repr__(value)
            elif kind is float and value - value == 0:  # finite: json.dumps uses repr
                text = float.__repr__(value)
            else:
                break
            parts.append(f"{_encode_str(name)}:{text}")
        else:
            return "{" + ",".join(parts) + "}"
    import json

    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --- printing a result as it came ------------------------------------------------------------

#: After a backslash in a JSON string, what json.dumps itself writes: \" \\ \b \f \n \r \t; any
#: other control character as \u00XX in lower-case hex; nothing else is escaped (no \/, and
#: with ensure_ascii=False no \u for printable characters).
_SHORT_ESCAPES = frozenset(b'"\\bfnrt')
_SHORT_CONTROLS = frozenset((0x08, 0x09, 0x0A, 0x0C, 0x0D))


def _escapes_as_json_writes_them(body: bytes) -> bool:
    at = body.find(b"\\")
    while at >= 0:
        after = body[at + 1]
        if after == 0x75:  # \uXXXX
            digits = body[at + 2 : at + 6]
            try:
                code = int(digits, 16)
            except ValueError:
                return False
            if code >= 0x20 or code in _SHORT_CONTROLS or digits != b"%04x" % code:
                return False
            at = body.find(b"\\", at + 6)
        elif after in _SHORT_ESCAPES:
            at = body.find(b"\\", at + 2)
        else:
            return False
    return True


def ok_result(
    line: bytes, req_id: int, parse_constant: Callable[[str], Any]
) -> tuple[Any, bytes | None] | None:
    """For a successful reply line ``{"id":<req_id>,"ok":true,"result":R}`` (exactly that
    shape, as oneiricd writes it): ``(result, raw)``, where ``raw`` is R's bytes when they are
    byte for byte what ``json.dumps(result, separators=(",", ":"), ensure_ascii=False)`` writes
    (else None). None for any other line: the caller decodes it in full.

    The daemon encodes with msgspec, whose compact JSON is Python's except for floats in
    exponent form and very small ones (``1e16`` against ``1e+16``, ``0.00001`` against
    ``1e-05``). So every float is checked against its ``repr`` as it is decoded, every escape
    against what json writes, and the bytes must be strict UTF-8 (json would decode encoded
    surrogates that cannot be printed)."""
    if _make_scanner is None:
        return None
    prefix = b'{"id":%d,"ok":true,"result":' % req_id
    if not line.startswith(prefix) or not line.endswith(b"}"):
        return None
    try:
        text = line.decode()  # ASCII prefix: a character offset in it is a byte offset
    except UnicodeDecodeError:
        return None
    as_written = True

    def parse_float(number: str) -> float:
        nonlocal as_written
        value = float(number)
        if as_written and float.__repr__(value) != number:
            as_written = False
        return value

    try:
        value, end = _make_scanner(_Decoder(parse_constant, parse_float))(text, len(prefix))
    except Exception:
        return None
    if end != len(text) - 1:  # not the whole rest of the line up to its closing brace
        return None
    raw = line[len(prefix) : -1]
    if as_written and (b"\\" not in raw or _escapes_as_json_writes_them(raw)):
        return value, raw
    return value, None
