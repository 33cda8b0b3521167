"""One duration grammar (oneiric/_durations.py) for the config, the providers' settings,
oneiricctl's options and ``manifest --expires``: what it accepts, what it refuses and how it
says so, through each of its users, and that oneiricctl can import it cheaply."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fake_daemon import FakeDaemon
from oneiric._durations import parse_duration
from oneiric.cli.oneiricctl import cli
from oneiric.config import load_config
from oneiric.errors import ConfigError

ACCEPTED = [
    ("250ms", 0.25),
    ("30s", 30.0),
    ("5m", 300.0),
    ("1h", 3600.0),
    ("1h30m", 5400.0),
    ("1.5s", 1.5),
    ("1.25h", 4500.0),
    ("2d", 172800.0),
    ("2d12h", 216000.0),
    ("1d1ms", 86400.001),
    ("1m30s500ms", 90.5),
    (" 10s ", 10.0),
    ("30", 30.0),
    ("0", 0.0),
    ("0.5", 0.5),
    (".5", 0.5),
    (".5s", 0.5),
    ("0s", 0.0),
]
EXPECTED = 'expected a duration like "30s", "5m", "1h30m" or "250ms"'
REFUSED = [
    ("", EXPECTED),
    ("soon", EXPECTED),
    ("5x", EXPECTED),
    ("5 s", EXPECTED),
    ("1h 30m", EXPECTED),
    ("1m1h", EXPECTED),  # units largest first
    ("5s5s", EXPECTED),  # each unit once
    ("ms", EXPECTED),
    ("s", EXPECTED),
    ("1H", EXPECTED),  # units are lower case: "M" is months to systemd, never guessed
    ("5M", EXPECTED),
    ("1e3", EXPECTED),
    ("5.", EXPECTED),
    (".", EXPECTED),
    ("1_000", EXPECTED),
    ("+5s", EXPECTED),
    ("\u0661\u0662s", EXPECTED),  # digits, but not ASCII ones
    ("5msx", EXPECTED),
    ("-5s", "must not be negative"),
    ("-5", "must not be negative"),
    ("9" * 400, "too large"),
    ("9" * 400 + "d", "too large"),
]


@pytest.mark.parametrize(("value", "seconds"), ACCEPTED)
def test_the_grammar_accepts(value: str, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "seconds"), [(0, 0.0), (45, 45.0), (2.5, 2.5)])
def test_numbers_are_seconds(value: float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(("value", "hint"), REFUSED)
def test_the_grammar_refuses_saying_what_is_expected(value: str, hint: str) -> None:
    with pytest.raises(ValueError, match="invalid timeout") as info:
        parse_duration(value, what="timeout")
    assert str(info.value) == f"invalid timeout {value!r}: {hint}"


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (-1, "must be a finite, non-negative number"),
        (float("inf"), "must be a finite, non-negative number"),
        (float("nan"), "must be a finite, non-negative number"),
        (True, EXPECTED),
        ([5], EXPECTED),
        (None, EXPECTED),
    ],
)
def test_other_values_are_refused(value: object, hint: str) -> None:
    with pytest.raises(ValueError, match="invalid ttl") as info:
        parse_duration(value, what="ttl")  # type: ignore[arg-type]
    assert hint in str(info.value)


# -- its users -----------------------------------------------------------------------------------


def test_the_config_uses_it(tmp_path: Path) -> None:
    path = tmp_path / "oneiricd.toml"
    path.write_text('[daemon]\ndrain_timeout = "1h30m"\nstop_timeout = "2d"\n')
    config = load_config(str(path))
    assert (config.daemon.drain_timeout, config.daemon.stop_timeout) == (5400.0, 172800.0)
    path.write_text('[daemon]\ndrain_timeout = "3 sec"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert f"daemon.drain_timeout: invalid duration '3 sec': {EXPECTED}" in str(info.value)


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    with FakeDaemon() as daemon:
        yield daemon


@pytest.mark.parametrize(("value", "seconds"), [("1h30m", 5400.0), ("2d", 172800.0), ("90", 90.0)])
def test_oneiricctl_events_since_takes_the_config_grammar(
    fake: FakeDaemon, value: str, seconds: float
) -> None:
    fake.on("events", {"events": []})
    result = CliRunner().invoke(cli, ["--socket", fake.path, "events", "--since", value])
    assert result.exit_code == 0, result.output
    assert fake.sent == [{"op": "events", "since_s": seconds}]


@pytest.mark.parametrize(("value", "hint"), [("1H", EXPECTED), ("-5m", "must not be negative")])
def test_oneiricctl_refuses_a_bad_duration_saying_why(
    fake: FakeDaemon, value: str, hint: str
) -> None:
    for args in (["events", "--since", value], ["drain", "adapter", "--timeout", value]):
        result = CliRunner().invoke(cli, ["--socket", fake.path, *args])
        assert result.exit_code == 2, result.output
        assert f"invalid duration {value!r}: {hint}" in result.stderr
    assert fake.sent == []


def test_manifest_expires_takes_the_config_grammar(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    bad = CliRunner().invoke(cli, ["manifest", "init", repo, "--expires", "1H"])
    assert bad.exit_code == 2
    assert f"invalid expiry '1H': {EXPECTED}" in bad.stderr
    zero = CliRunner().invoke(cli, ["manifest", "init", repo, "--expires", "0s"])
    assert zero.exit_code == 2 and "must be longer than zero" in zero.stderr
    ok = CliRunner().invoke(cli, ["--json", "manifest", "init", repo, "--expires", "1d12h"])
    assert ok.exit_code == 0, ok.output


def test_it_is_cheap_for_oneiricctl_to_import() -> None:
    code = "import sys, oneiric._durations\nprint(*sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "oneiric._durations" in loaded
    assert not loaded & {"msgspec", "anyio", "click", "oneiric.config", "tomllib"}, loaded
