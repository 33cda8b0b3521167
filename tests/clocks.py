"""A clock the test moves by hand, passed to whatever takes ``clock=`` (never patched in)."""

from __future__ import annotations


class FakeClock:
    """``clock()`` is ``now``; :meth:`advance` moves it. Starts far from zero so code that
    subtracts or compares against 0 is not accidentally right."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "a clock does not go back"
        self.now += seconds
