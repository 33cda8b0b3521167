"""Manual pages and shell completion, as packaging/build-deb.sh generates them.

The pages are rendered by the real groff (the `man` pipeline's formatter) with warnings on, so
a markup mistake fails here and not on an operator's terminal; their content is checked against
the program itself (every command, every option, every config key), so they cannot drift.
Completion goes through click's real protocol, as the installed bash script calls it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from oneiric.cli.oneiricctl import cli
from oneiric.config.schema import ComponentConfig, DaemonConfig

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "packaging"))
import gen_man  # noqa: E402  (a build script, not a package)

GROFF = shutil.which("groff")


@pytest.fixture(scope="module")
def pages() -> Iterator[dict[str, Path]]:
    out = Path(tempfile.mkdtemp(prefix="man", dir="/tmp"))
    try:
        yield {p.name: p for p in gen_man.generate(out)}
    finally:
        shutil.rmtree(out)


def render(page: Path) -> str:
    """The page as `man` shows it; any groff warning (bad macro, escape, character) fails."""
    assert GROFF, "groff is needed to check the manual pages (Debian: groff-base)"
    proc = subprocess.run(
        [GROFF, "-man", "-Tutf8", "-rcR=1", "-rLL=100n", "-ww", "-Wbreak", str(page)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GROFF_NO_SGR": "1"},
    )
    assert proc.stderr == "", proc.stderr
    # drop overstriking (bold/underline) so the text can be searched
    text = proc.stdout
    while "\b" in text:
        i = text.index("\b")
        text = text[: i - 1] + text[i + 1 :]
    return text


def test_three_pages_in_their_sections(pages: dict[str, Path]) -> None:
    assert set(pages) == {"oneiricctl.1", "oneiricd.8", "oneiricd.toml.5"}
    for name, path in pages.items():
        head = path.read_text().splitlines()[0]
        section = name.rsplit(".", 1)[1]
        assert head.startswith(f".TH {name.rsplit('.', 1)[0].upper()} {section} ")


def test_oneiricctl_page_has_every_command_and_option(pages: dict[str, Path]) -> None:
    text = render(pages["oneiricctl.1"])
    ctx = cli.make_context("oneiricctl", [], resilient_parsing=True)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        assert f"oneiricctl {name}" in text, name
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in text, (name, opt)
    for word in ("ONEIRIC_SOCKET", "ONEIRIC_HEALTH_FILE", "Exit status", "SEE ALSO"):
        assert word in text


def test_oneiricd_page_has_options_signals_and_files(pages: dict[str, Path]) -> None:
    text = render(pages["oneiricd.8"])
    for word in ("--config", "--check", "--daemonize", "SIGHUP", "SIGTERM", "78", "intent.json"):
        assert word in text, word


def test_config_page_lists_every_key(pages: dict[str, Path]) -> None:
    text = render(pages["oneiricd.toml.5"])
    for struct in (DaemonConfig, ComponentConfig):
        for field in msgspec.structs.fields(struct):
            if field.name != "source":  # set by the loader, not a key
                assert field.name in text, field.name
    assert "[[component]]" in text and "[selections.<domain>]" in text
    assert "](#" not in text and "```" not in text  # markdown fully converted


def _complete(shell_env: dict[str, str]) -> str:
    env = {**os.environ, "_ONEIRICCTL_COMPLETE": "bash_complete", **shell_env}
    proc = subprocess.run(
        [sys.executable, "-c", "from oneiric.cli.oneiricctl import main; main()"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_generated(shell: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from oneiric.cli.oneiricctl import main; main()"],
        capture_output=True,
        text=True,
        env={**os.environ, "_ONEIRICCTL_COMPLETE": f"{shell}_source"},
        check=True,
    )
    assert "_ONEIRICCTL_COMPLETE" in proc.stdout


def test_completion_answers_commands_and_domains() -> None:
    out = _complete({"COMP_WORDS": "oneiricctl pa", "COMP_CWORD": "1"})
    assert "plain,pause" in out.splitlines()
    out = _complete({"COMP_WORDS": "oneiricctl pause ad", "COMP_CWORD": "2"})
    assert "plain,adapter" in out.splitlines()


def test_bash_completion_script_drives_the_real_cli() -> None:
    """Source the generated script in a real bash and call its completion function, as
    bash-completion does on <TAB>."""
    script = subprocess.run(
        [sys.executable, "-c", "from oneiric.cli.oneiricctl import main; main()"],
        capture_output=True,
        text=True,
        env={**os.environ, "_ONEIRICCTL_COMPLETE": "bash_source"},
        check=True,
    ).stdout
    shim = Path(tempfile.mkdtemp(prefix="cmp", dir="/tmp"))
    try:
        exe = shim / "oneiricctl"
        exe.write_text(
            f"#!{sys.executable}\nfrom oneiric.cli.oneiricctl import main\nmain()\n",
        )
        exe.chmod(0o755)
        program = (
            f"{script}\n"
            "COMP_WORDS=(oneiricctl dr); COMP_CWORD=1\n"
            "_oneiricctl_completion oneiricctl dr\n"
            'printf "%s\\n" "${COMPREPLY[@]}"\n'
        )
        out = subprocess.run(
            ["bash", "--norc", "-c", program],
            capture_output=True,
            text=True,
            env={**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"},
            check=True,
        ).stdout
    finally:
        shutil.rmtree(shim)
    assert out.split() == ["drain"]
