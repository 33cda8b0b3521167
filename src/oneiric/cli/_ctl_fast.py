"""The hot commands without click: ``status``, ``ping``, ``pause``, ``resume`` and ``drain``,
spelled with exactly their documented options, run on a dozen small modules instead of click's
(importing click alone costs ~3.7× the bare interpreter; the goal for ``oneiricctl status`` is
2.5× in all).

:func:`run` parses the command line the way click would for these spellings and runs the
command's body from :mod:`oneiric.cli._ctl_hot`, the same body the click command runs. Anything
it does not fully understand it leaves alone, before doing anything at all, and
:func:`oneiric.cli.oneiricctl.main` hands the command line to click: ``--help`` and
``--version``, an unknown or repeated-in-doubt option, a value that looks like an option, a
usage error of any kind (click writes those messages), ``--`` and ``-`` , ``status --watch``,
shell completion (``_ONEIRICCTL_COMPLETE``), and streams click would re-wrap (not UTF-8, or an
ASCII locale, where click re-encodes). So the output, the exit status and every message are
click's, byte for byte; ``tests/test_ctl_fast.py`` runs both paths side by side against a real
daemon to hold that.

Around the body, :func:`_like_click` does what ``click.Command.main`` does around a command:
the exit status, ``Aborted!`` on Ctrl-C, a broken pipe ending quietly with status 1.
"""

from __future__ import annotations

import os
import sys

from oneiric._const import DOMAINS
from oneiric.cli import _ctl_base, _ctl_hot, render
from oneiric.cli._ctl_base import Ctl, configure_look, default_socket, parse_duration

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

_EPIPE = 32  # errno.EPIPE on Linux and the BSDs; errno is imported to check it when it matters

_OUTPUT = frozenset({"--json", "--no-headers"})
#: The group's own options: its flags, and its options that take a value (by each spelling:
#: ``--reply-timeout`` is ``--timeout``).
_GROUP_FLAGS = _OUTPUT
_GROUP_VALUED = {"--socket": "--socket", "--timeout": "--timeout", "--reply-timeout": "--timeout"}
#: Each hot command: how many of DOMAIN, KEY it takes, its flags, its options with a value.
_COMMANDS: dict[str, tuple[int, frozenset[str], dict[str, str]]] = {
    "status": (2, _OUTPUT, {}),
    "ping": (0, _OUTPUT, {}),
    "pause": (2, _OUTPUT | {"--all"}, {"--note": "--note"}),
    "resume": (2, _OUTPUT | {"--all"}, {}),
    "drain": (2, _OUTPUT | {"--no-wait"}, {"--note": "--note", "--timeout": "--timeout"}),
}


def _parse(
    args: list[str], start: int, flags: frozenset[str], valued: dict[str, str], stop_at_word: bool
) -> tuple[dict[str, str | bool], list[str], int] | None:
    """Options (``--name``, ``--name VALUE``, ``--name=VALUE``; the last one wins, as in click)
    and positional words from ``args[start:]``; with ``stop_at_word`` (the group: click does
    not intersperse its arguments) up to the first word. None for anything else."""
    options: dict[str, str | bool] = {}
    words: list[str] = []
    at = start
    while at < len(args):
        arg = args[at]
        if not arg.startswith("-"):
            if stop_at_word:
                break
            words.append(arg)
            at += 1
            continue
        name, eq, value = arg.partition("=")
        if name in valued:
            if not eq:
                if at + 1 >= len(args) or args[at + 1].startswith("-"):
                    return None  # missing, or a value click would take but people rarely mean
                value = args[at + 1]
                at += 1
            options[valued[name]] = value
        elif name in flags and not eq:
            options[name] = True
        else:
            return None  # -h, --help, --version, --, -, --watch, unknown: click's to handle
        at += 1
    return options, words, at


def _plain_utf8(stream: object) -> bool:
    """A stream click writes to as it is: text, UTF-8 (click re-wraps an ASCII one), not a
    pager. Then writing a str to it is exactly ``click.echo``."""
    encoding = getattr(stream, "encoding", None)
    return (
        isinstance(encoding, str)
        and encoding.lower().replace("_", "-") in ("utf-8", "utf8")
        and getattr(stream, "errors", None) is not None
        and callable(getattr(stream, "write", None))
        and not hasattr(stream, "color")
    )


class FastOut(_ctl_hot.Out):
    """``click.echo`` for the plain UTF-8 streams :func:`run` accepts: the line, flushed. Text
    with an escape character goes to click itself, which strips ANSI codes off a non-terminal by
    rules that vary between click versions."""

    def echo(self, message: str = "", *, err: bool = False) -> None:
        if "\x1b" in message:
            super().echo(message, err=err)
            return
        stream = sys.stderr if err else sys.stdout
        stream.write(message + "\n")
        stream.flush()

    def echo_json(self, raw: bytes) -> None:
        """The bytes as they are (a UTF-8 stream would write exactly these for their text):
        no decoding and encoding again of a 5.8 MB status."""
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:
            super().echo_json(raw)
            return
        sys.stdout.flush()
        buffer.write(raw)
        buffer.write(b"\n")
        buffer.flush()


FAST = FastOut()


def _duration(text: str) -> float | None:
    try:
        return parse_duration(text)
    except ValueError:
        return None


def run(args: list[str]) -> None:
    """Run ``oneiricctl ARGS`` here and exit, when it is a hot command spelled the usual way;
    otherwise return, having done nothing, for click to run it."""
    if os.environ.get("_ONEIRICCTL_COMPLETE") or not (
        _plain_utf8(sys.stdout) and _plain_utf8(sys.stderr)
    ):
        return
    group = _parse(args, 0, _GROUP_FLAGS, _GROUP_VALUED, stop_at_word=True)
    if group is None or group[2] >= len(args) or args[group[2]] not in _COMMANDS:
        return
    global_options, _, at = group
    name = args[at]
    most, flags, valued = _COMMANDS[name]
    command = _parse(args, at + 1, flags, valued, stop_at_word=False)
    if command is None:
        return
    options, words, _ = command
    if len(words) > most or (words and words[0] not in DOMAINS):
        return
    timeout: float | None = None
    if "--timeout" in global_options:
        timeout = _duration(str(global_options["--timeout"]))
        if not timeout:  # not a duration, or 0: click says why
            return
    domain = words[0] if words else None
    key = words[1] if len(words) > 1 else None
    everything = bool(options.get("--all"))
    if name in ("pause", "resume") and everything == (domain is not None):
        return  # DOMAIN and --all, or neither: a usage error
    drain_timeout: float | None = None
    if "--timeout" in options:
        drain_timeout = _duration(str(options["--timeout"]))
        if drain_timeout is None:
            return
    note = options.get("--note")
    note = None if note is None else str(note)

    # click: the group's callback, then the command's --json/--no-headers callbacks
    group_json = bool(global_options.get("--json"))
    configure_look(
        no_headers=bool(global_options.get("--no-headers")), as_json=group_json, environ=os.environ
    )
    if options.get("--json"):
        render.LOOK.colour = False
    if options.get("--no-headers"):
        render.LOOK.headers = False
    socket = str(global_options.get("--socket") or "") or default_socket(os.environ)
    ctl = Ctl(
        socket=socket,
        json=group_json or bool(options.get("--json")),
        timeout=timeout,
        clock=_ctl_base.now,
    )
    target = render.target_name(domain, key)
    bodies: dict[str, Callable[[], int]] = {
        "status": lambda: _ctl_hot.status(ctl, domain, key, FAST),
        "ping": lambda: _ctl_hot.ping(ctl, FAST),
        "pause": lambda: _ctl_hot.pause(ctl, domain, key, note, target, FAST),
        "resume": lambda: _ctl_hot.resume(ctl, domain, key, target, FAST),
        "drain": lambda: _ctl_hot.drain(
            ctl, domain, key, note, drain_timeout, bool(options.get("--no-wait")), FAST
        ),
    }
    _like_click(bodies[name])


class _PacifyFlush:
    """What click puts in place of stdout and stderr after a broken pipe: ``flush`` ignores
    EPIPE, so the interpreter's own flush at exit does not report it again."""

    def __init__(self, wrapped: object) -> None:
        self.wrapped = wrapped

    def flush(self) -> None:
        try:
            self.wrapped.flush()  # type: ignore[attr-defined]
        except OSError as exc:
            if exc.errno != _EPIPE:
                raise

    def __getattr__(self, name: str) -> object:
        return getattr(self.wrapped, name)


def _click_exit_status(exc: BaseException) -> int | None:
    """The status of a ``click.exceptions.Exit`` (raised by the error reporting, which runs on
    click), else None."""
    click = sys.modules.get("click")
    if click is not None and isinstance(exc, click.exceptions.Exit):
        return int(exc.exit_code)
    return None


def _like_click(body: Callable[[], int]) -> NoReturn:
    """Run ``body`` and exit as ``click.Command.main`` does in standalone mode."""
    exit_code = 1
    aborted = False
    try:
        try:
            exit_code = body()
        except (EOFError, KeyboardInterrupt):
            FAST.echo(err=True)  # the blank line closes the terminal's ^C
            aborted = True
        except OSError as exc:
            if exc.errno != _EPIPE:
                raise
            sys.stdout = _PacifyFlush(sys.stdout)  # type: ignore[assignment,unused-ignore]
            sys.stderr = _PacifyFlush(sys.stderr)  # type: ignore[assignment,unused-ignore]
        except Exception as exc:
            status = _click_exit_status(exc)
            if status is None:
                raise
            exit_code = status
        if aborted:
            FAST.echo("Aborted!", err=True)
        sys.exit(exit_code)
    except (EOFError, KeyboardInterrupt):
        sys.exit(exit_code)
