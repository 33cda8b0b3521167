"""Duration strings (``"250ms"``, ``"1h30m"``) to seconds.

Kept apart from the loader because providers (cache, heartbeat, tasks) parse durations from
their own ``settings`` with the same rules and wording as ``[daemon]`` timeouts, and they
should not need the whole config machinery for it.
"""

from __future__ import annotations

import math
import re

_NUM = r"(\d+(?:\.\d+)?|\.\d+)"
_BARE = re.compile(_NUM)
# Units at most once each, largest first: "1h30m", "1.5s", "250ms"; "m(?!s)" keeps "ms" whole.
_COMPOUND = re.compile(rf"(?:{_NUM}d)?(?:{_NUM}h)?(?:{_NUM}m(?!s))?(?:{_NUM}s)?(?:{_NUM}ms)?")
_UNITS = (86400.0, 3600.0, 60.0, 1.0, 0.001)
_EXPECTED_DURATION = 'expected a duration like "30s", "5m" or "250ms"'


def parse_duration(value: str | int | float, *, what: str = "duration") -> float:
    """Seconds from ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1.5s"`` or a bare number.

    Raises ``ValueError`` saying what is expected for negative, non-finite or garbled input,
    so a config typo never turns into a zero or infinite timeout."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"invalid {what} {value!r}: {_EXPECTED_DURATION}")  # noqa: TRY004 -- one error type for callers
    if isinstance(value, str):
        text = value.strip()
        if _BARE.fullmatch(text):
            return float(text)
        match = _COMPOUND.fullmatch(text)
        if not text or match is None:
            hint = "must not be negative" if text.startswith("-") else _EXPECTED_DURATION
            raise ValueError(f"invalid {what} {value!r}: {hint}")
        return sum(float(n) * unit for n, unit in zip(match.groups(), _UNITS, strict=True) if n)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"invalid {what} {value!r}: must be a finite, non-negative number")
    return float(value)
