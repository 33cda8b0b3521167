"""Generate the manual pages at build time: oneiricctl(1), oneiricd(8), oneiricd.toml(5).

Usage: ``python packaging/gen_man.py OUTDIR`` (run by packaging/build-deb.sh; needs the project
importable). Nothing here is hand-maintained text that could drift from the program:

- ``oneiricctl.1`` and ``oneiricd.8`` are built from the click commands themselves: their help
  texts, every option and argument, every subcommand with its own options, and the epilogs
  (examples, exit statuses);
- ``oneiricd.toml.5`` is docs/configuration.md turned into roff (headings, paragraphs, lists,
  code blocks and tables, through tbl).

Why not click-man: it writes one page per subcommand (``oneiricctl-status.1`` …), which
``man oneiricctl`` then does not show; an operator expects one page with every command.
"""

from __future__ import annotations

import datetime
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
TITLE = "oneiric"


def _date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), tz=datetime.UTC)
        if epoch
        else datetime.datetime.now(tz=datetime.UTC)
    )
    return when.strftime("%Y-%m-%d")


# --------------------------------------------------------------------------------- roff text


def esc(text: str) -> str:
    """Escape plain text for roff: backslashes, and a leading dot or quote on a line."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n")
    )


_INLINE = re.compile(
    r"\[((?:`[^`]*`|[^\]`])+)\]\(([^)]+)\)|`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*"
)


def inline(text: str) -> str:
    """Markdown inline markup → roff font changes (code and bold → bold, emphasis → italic)."""
    out: list[str] = []
    last = 0
    for m in _INLINE.finditer(text):
        out.append(esc(text[last : m.start()]))
        link_text, _target, code, bold, emph = m.groups()
        if link_text is not None:
            out.append(inline(link_text))
        elif code is not None:
            out.append(f"\\fB{esc(code)}\\fR")
        elif bold is not None:
            out.append(f"\\fB{inline(bold)}\\fR")
        else:
            out.append(f"\\fI{inline(emph)}\\fR")
        last = m.end()
    out.append(esc(text[last:]))
    return "".join(out)


def click_text(text: str) -> Iterator[str]:
    """A click help text or epilog as roff: ``\\b`` paragraphs keep their lines, others flow."""
    for para in re.split(r"\n\s*\n", text.strip()):
        if para.startswith("\b"):
            lines = para[1:].strip("\n").split("\n")
            yield ".PP"
            yield ".nf"
            yield from (esc(line) for line in lines)
            yield ".fi"
        else:
            yield ".PP"
            yield esc(" ".join(line.strip() for line in para.split("\n")))


# ----------------------------------------------------------------------------- click → roff


def _options(ctx: click.Context, command: click.Command) -> Iterator[str]:
    for param in command.get_params(ctx):
        if not isinstance(param, click.Option):  # arguments are in the usage line
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        yield ".TP"
        yield f"\\fB{esc(names)}\\fR"
        yield esc(help_text) if help_text else "\\&"


def _usage(ctx: click.Context, command: click.Command, prog: str) -> str:
    pieces = command.collect_usage_pieces(ctx)
    return f".B {esc(prog)}\n{esc(' '.join(pieces))}"


def _subcommands(ctx: click.Context, group: click.Group, prog: str) -> Iterator[str]:
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        if sub is None or sub.hidden:
            continue
        sub_ctx = click.Context(sub, info_name=name, parent=ctx)
        yield f".SS {esc(prog)} {esc(name)}"
        yield ".PP"
        yield _usage(sub_ctx, sub, f"{prog} {name}")
        yield from click_text(sub.help or sub.short_help or "")
        if isinstance(sub, click.Group):
            yield from _subcommands(sub_ctx, sub, f"{prog} {name}")
            continue
        opts = list(_options(sub_ctx, sub))
        if opts:
            yield ".PP"
            yield "Options:"
            yield ".RS"
            yield from opts
            yield ".RE"
        if sub.epilog:
            yield from click_text(sub.epilog)


def command_page(
    command: click.Command,
    prog: str,
    section: int,
    summary: str,
    extra: Iterable[tuple[str, str]] = (),
) -> str:
    ctx = click.Context(command, info_name=prog)
    lines = [
        f'.TH {prog.upper()} {section} "{_date()}" "{TITLE}" "{TITLE} manual"',
        ".SH NAME",
        f"{esc(prog)} \\- {esc(summary)}",
        ".SH SYNOPSIS",
        _usage(ctx, command, prog),
        ".SH DESCRIPTION",
        *click_text(command.help or ""),
        ".SH OPTIONS",
        *_options(ctx, command),
    ]
    if isinstance(command, click.Group):
        lines += [".SH COMMANDS", *_subcommands(ctx, command, prog)]
    if command.epilog:
        lines += [".SH NOTES", *click_text(command.epilog)]
    for heading, body in extra:
        lines += [f".SH {heading}", *click_text(body)]
    return "\n".join(lines) + "\n"


CTL_EXTRA = (
    (
        "ENVIRONMENT",
        """\b
ONEIRIC_SOCKET       the control socket, when --socket is not given
RUNTIME_DIRECTORY    the socket is $RUNTIME_DIRECTORY/oneiricd.sock when neither is set
ONEIRIC_HEALTH_FILE  the health file read when the daemon is not running
                     (default: health.json beside the socket)""",
    ),
    ("SEE ALSO", "oneiricd(8), oneiricd.toml(5), systemctl(1)"),
)
D_EXTRA = (
    (
        "SIGNALS",
        """\b
SIGTERM, SIGINT  drain (bounded by stop_timeout), stop every component, write the final
                 health file, remove the socket, exit 0; a second signal exits at once (1)
SIGHUP           reload the configuration (as oneiricctl reload)""",
    ),
    (
        "ENVIRONMENT",
        """\b
ONEIRIC_CONFIG       the config file, when --config is not given
RUNTIME_DIRECTORY    default directory of the socket and the health file (systemd)
STATE_DIRECTORY      default directory of durable state (systemd)
NOTIFY_SOCKET        systemd's notify socket (READY=1, STATUS=, WATCHDOG=1, STOPPING=1)
WATCHDOG_USEC        the watchdog interval systemd expects keep-alives in
LISTEN_FDS           a control socket passed by systemd socket activation""",
    ),
    (
        "FILES",
        """\b
/etc/oneiric/oneiricd.toml        the main configuration file
/etc/oneiric/conf.d/*.toml        drop-ins
/run/oneiric/oneiricd.sock        the control socket
/run/oneiric/health.json          the health snapshot
/var/lib/oneiric/intent.json      durable operator intent (pause, drain, swap)""",
    ),
    ("SEE ALSO", "oneiricctl(1), oneiricd.toml(5), systemd.service(5)"),
)


# ------------------------------------------------------------------------ markdown → roff


def _table(rows: list[str]) -> Iterator[str]:
    """A pipe table as a tagged list: the first cell is the tag, the middle cells are
    ``header: value`` lines, the last cell is the paragraph. Reads better on a terminal than a
    boxed tbl table with one wide prose column."""
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    header, body = cells[0], [r for r in cells[2:] if r]
    for cells_of_row in body:
        row = (cells_of_row + [""] * len(header))[: len(header)]
        yield ".TP"
        yield inline(row[0])
        for name, value in zip(header[1:-1], row[1:-1], strict=True):
            if value:
                yield f"{esc(name)}: {inline(value)}"
                yield ".br"
        yield inline(row[-1]) if len(row) > 1 else "\\&"


def markdown_page(markdown: str, name: str, section: int, summary: str) -> str:
    """A small, strict converter for the constructs docs/*.md use; anything it does not know
    is kept as a plain paragraph rather than dropped."""
    out = [
        f'.TH {name.upper()} {section} "{_date()}" "{TITLE}" "{TITLE} manual"',
        ".SH NAME",
        f"{esc(name)} \\- {esc(summary)}",
    ]
    lines = markdown.split("\n")
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            out.extend([".PP", inline(" ".join(para))])
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            i += 1
            out += [".PP", ".RS 4", ".EX"]
            while i < len(lines) and not lines[i].strip().startswith("```"):
                out.append(esc(lines[i]) or "\\&")
                i += 1
            out += [".EE", ".RE"]
        elif stripped.startswith("#"):
            flush()
            level = len(stripped) - len(stripped.lstrip("#"))
            text = stripped[level:].strip()
            if level == 1:
                out += [".SH DESCRIPTION"]
            else:
                plain = re.sub(r"[`*]", "", text)
                out.append(f".SH {esc(plain.upper())}" if level == 2 else f".SS {esc(plain)}")
        elif stripped.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(lines[i])
                i += 1
            out += _table(rows)
            continue
        elif re.match(r"^\s*([-*]|\d+\.)\s+", line):
            flush()
            item = [re.sub(r"^\s*([-*]|\d+\.)\s+", "", line)]
            i += 1
            while (
                i < len(lines)
                and lines[i].startswith("  ")
                and lines[i].strip()
                and not re.match(r"^\s*([-*]|\d+\.)\s+", lines[i])
            ):
                item.append(lines[i].strip())
                i += 1
            out += [".IP \\(bu 2", inline(" ".join(item))]
            continue
        elif not stripped:
            flush()
        else:
            para.append(stripped)
        i += 1
    flush()
    out += [".SH SEE ALSO", "oneiricd(8), oneiricctl(1)"]
    return "\n".join(out) + "\n"


def generate(outdir: Path) -> list[Path]:
    from oneiric.cli.oneiricctl import cli
    from oneiric.cli.oneiricd import cli as oneiricd

    pages = {
        "oneiricctl.1": command_page(
            cli, "oneiricctl", 1, "control oneiricd over its Unix socket", CTL_EXTRA
        ),
        "oneiricd.8": command_page(
            oneiricd, "oneiricd", 8, "host daemon for pluggable async Python components", D_EXTRA
        ),
        "oneiricd.toml.5": markdown_page(
            (REPO / "docs" / "configuration.md").read_text(encoding="utf-8"),
            "oneiricd.toml",
            5,
            "configuration of oneiricd",
        ),
    }
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in pages.items():
        path = outdir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gen_man.py OUTDIR")
    for page in generate(Path(sys.argv[1])):
        print(page)
