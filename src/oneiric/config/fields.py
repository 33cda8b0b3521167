"""Generic field checks that raise ``ConfigError`` with the file and the field path.

Every check takes ``file`` and a dotted/indexed ``path`` (``component[2].settings.nodes[0]``)
so the error points at the exact spot an operator must fix. msgspec's own messages
(``Expected `int`, got `str` - at `$.priority```) are rewritten into the same wording and
path form, so users see one style whichever layer caught the mistake.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from oneiric._durations import parse_duration
from oneiric.errors import ConfigError

T = TypeVar("T")

_AT = re.compile(r"(?P<msg>.*?)(?: - at `\$(?P<sub>[^`]*)`)?", re.DOTALL)


def _join(path: str, sub: str) -> str:
    if not path:
        return sub.lstrip(".")
    return path + (sub if sub[:1] in ("", ".", "[") else "." + sub)


def _tname(value: object) -> str:
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _translate(exc: msgspec.ValidationError, *, file: str, path: str) -> ConfigError:
    """msgspec's ``Expected `int`, got `str` - at `$.priority``` -> our wording and path."""
    match = _AT.fullmatch(str(exc))
    assert match is not None  # the pattern matches any string
    msg = re.sub(
        r"Object missing required field `([^`]*)`", r"missing required key '\1'", match["msg"]
    )
    msg = msg.replace(" | null", "").replace("`object`", "table").replace("`", "")
    return ConfigError(msg[:1].lower() + msg[1:], file=file, path=_join(path, match["sub"] or ""))


def _convert(value: Any, typ: type[T], *, file: str, path: str) -> T:
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        raise _translate(exc, file=file, path=path) from None


def _check_keys(
    table: Mapping[str, Any], allowed: tuple[str, ...], *, file: str, where: str
) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {key!r}; allowed keys: {', '.join(allowed)}",
                file=file,
                path=_join(where, key),
            )


def _table(value: Any, *, file: str, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table, got {_tname(value)}", file=file, path=path)
    return value


def _duration(value: Any, *, file: str, path: str, positive: bool) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(str(exc), file=file, path=path) from None
    if positive and seconds <= 0:
        raise ConfigError(f"must be greater than zero, got {value!r}", file=file, path=path)
    return seconds


def _local_path(base: str, value: str, *, file: str, path: str) -> str:
    if not value:
        raise ConfigError("expected a non-empty path", file=file, path=path)
    return os.path.normpath(os.path.join(base, value))
