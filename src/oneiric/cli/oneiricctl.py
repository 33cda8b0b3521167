"""oneiricctl: the operator's client for oneiricd (SPEC §7).

A thin shell: parse the command line, send one request over the control socket, hand the
result to :mod:`oneiric.cli.render`, map the outcome to an exit status. This module is the
entry point, :func:`main`, and it runs a command one of two ways:

- the hot commands (``status``, ``ping``, ``pause``, ``resume``, ``drain``) spelled with their
  documented options run without click: :mod:`oneiric.cli._ctl_fast` parses them and runs
  their bodies in :mod:`oneiric.cli._ctl_hot`. Importing click alone costs ~3.7× the bare
  interpreter, and ``oneiricctl status`` is meant to cost 2.5× in all;
- everything else goes to click: :mod:`oneiric.cli.ctl_group` (the group and its global
  options), whose commands live in :mod:`~oneiric.cli.ctl_read` (``status``, ``health``,
  ``ping``, ``explain``, ``list``), :mod:`~oneiric.cli.ctl_intent` (``pause``, ``resume``,
  ``drain``, ``swap``), :mod:`~oneiric.cli.ctl_actions` (``run``, ``emit``, ``reload``,
  ``sync``), :mod:`~oneiric.cli.ctl_events` (``events``, ``replay``, ``runs``),
  :mod:`~oneiric.cli.ctl_observe` (``metrics``) and :mod:`~oneiric.cli.ctl_manifest`
  (``manifest ...``, the only commands that load python-tuf), each loaded when its command
  runs. They share :mod:`~oneiric.cli._ctl` (option parsing under click),
  :mod:`~oneiric.cli._ctl_base` (the click-free part) and :mod:`~oneiric.cli._ctl_errors`
  (messages, hints, exit statuses).

Both paths print the same bytes and exit with the same status (tests/test_ctl_fast.py runs them
side by side against a real daemon). It must start fast and work when the daemon is broken:
this module and the fast path import no click, typing, json, re, dataclasses, pathlib or
shutil; the health reader (msgspec) only on the paths that read an existing health file; never
anyio or watchfiles (tests enforce all of this).
"""

from __future__ import annotations

import os
import sys

from oneiric.cli import _ctl_fast
from oneiric.cli._ctl_base import Ctl, default_health_file, default_socket, parse_duration

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from oneiric.cli._ctl_hot import Progress as _Progress
    from oneiric.cli.ctl_group import cli
    from oneiric.cli.ctl_read import _Screen

__all__ = [
    "Ctl",
    "_Progress",
    "_Screen",
    "cli",
    "default_health_file",
    "default_socket",
    "help_width",
    "main",
    "parse_duration",
]


def __getattr__(name: str) -> object:
    # the click group, and helpers re-exported for tests, without importing click (or their
    # modules) on every invocation
    if name == "cli":
        from oneiric.cli.ctl_group import cli

        return cli
    if name == "_Progress":
        from oneiric.cli._ctl_hot import Progress

        return Progress
    if name == "_Screen":
        from oneiric.cli.ctl_read import _Screen

        return _Screen
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def help_width(environ: Mapping[str, str]) -> int:
    """The help text width click would choose (``shutil.get_terminal_size``'s rule: $COLUMNS,
    else the terminal on stdout, else 80; at most 80, minus 2, at least 50), worked out here
    because importing :mod:`shutil` (with bz2, lzma and fnmatch) costs ~3 ms of every
    ``--help`` and usage error. :func:`main` hands it to click as ``terminal_width``."""
    try:
        columns = int(environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    stdout = sys.__stdout__
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (AttributeError, ValueError, OSError):  # not a terminal, or a closed/fake stream
            columns = 0
    return max(min(columns or 80, 80) - 2, 50)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``oneiricctl``): the fast path when it takes the command
    line, else click. Exits either way."""
    args = sys.argv[1:] if argv is None else list(argv)
    _ctl_fast.run(args)
    from oneiric.cli.ctl_group import cli

    cli.main(args=args, prog_name="oneiricctl", terminal_width=help_width(os.environ))


if __name__ == "__main__":
    main()
