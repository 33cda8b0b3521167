"""Duration strings (``"250ms"``, ``"1h30m"``, ``"7d"``) to seconds: the one grammar of the
config (``[daemon]`` timeouts), the providers' own settings, ``oneiricctl`` options
(``events --since``, ``drain --timeout`` ...) and ``oneiricctl manifest --expires``.

Standard library only, and not even :mod:`re`: ``oneiricctl`` imports it on its start-up path.

The grammar: a bare number of seconds (``30``, ``2.5``, ``.5``), or numbers each followed by a
unit, units at most once and largest first: ``d``, ``h``, ``m``, ``s``, ``ms`` (``1h30m``,
``1.5s``, ``2d12h``). Surrounding blanks are ignored; nothing else is (no inner blanks, signs,
exponents or upper-case units: ``5M`` is months to systemd, so it is refused, not guessed).
"""

from __future__ import annotations

import math

__all__ = ["DURATION_HINT", "parse_duration"]

#: What the error messages say is expected.
DURATION_HINT = 'expected a duration like "30s", "5m", "1h30m" or "250ms"'
_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_RANK = {"d": 0, "h": 1, "m": 2, "s": 3, "ms": 4}  # largest first
_MATCH_ORDER = ("d", "h", "ms", "m", "s")  # "ms" before "m"
_DIGITS = frozenset("0123456789")


def parse_duration(value: str | int | float, *, what: str = "duration") -> float:
    """Seconds from a duration string (see the module docstring) or a non-negative number.

    Raises ``ValueError`` ``invalid <what> '<value>': <why>`` for garbled, negative or
    non-finite input, so a typo never becomes a zero or infinite timeout."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"invalid {what} {value!r}: {DURATION_HINT}")  # noqa: TRY004 -- one error type for callers
    if isinstance(value, str):
        seconds = _parse(value.strip())
        if seconds is None:
            hint = "must not be negative" if value.strip().startswith("-") else DURATION_HINT
            raise ValueError(f"invalid {what} {value!r}: {hint}")
        if not math.isfinite(seconds):
            raise ValueError(f"invalid {what} {value!r}: too large")
        return seconds
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"invalid {what} {value!r}: must be a finite, non-negative number")
    return float(value)


def _number(text: str, i: int) -> int:
    """The end of the number (``12``, ``1.5``, ``.5``) starting at ``i``, or ``i`` if none."""
    n = len(text)
    j = i
    while j < n and text[j] in _DIGITS:
        j += 1
    if j < n and text[j] == ".":
        k = j + 1
        while k < n and text[k] in _DIGITS:
            k += 1
        if k == j + 1:  # "5." or a lone "."
            return i
        j = k
    return j


def _parse(text: str) -> float | None:
    end = _number(text, 0)
    if end == 0:
        return None
    if end == len(text):
        return float(text)
    total = 0.0
    last = -1
    i = 0
    while i < len(text):
        end = _number(text, i)
        if end == i:
            return None
        unit = next((u for u in _MATCH_ORDER if text.startswith(u, end)), None)
        if unit is None:
            return None
        if _RANK[unit] <= last:  # each unit once, largest first
            return None
        last = _RANK[unit]
        total += float(text[i:end]) * _SECONDS[unit]
        i = end + len(unit)
    return total
