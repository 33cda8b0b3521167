"""The import-cycle check (``python -m tools.check_imports``), run as ``make test`` runs it, on
packages planted in a temporary directory and on the real ``src/oneiric``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "check_imports.py"


def plant(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return pkg


def check(pkg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.check_imports", str(pkg)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_cycle_passes(tmp_path: Path) -> None:
    pkg = plant(tmp_path, {"a.py": "from pkg import b\n", "b.py": "import os\n"})
    done = check(pkg)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no import cycles" in done.stdout


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("import pkg.b\n", "from pkg.a import X\n", id="absolute"),
        pytest.param("from . import b\n", "from .a import X\n", id="relative"),
        pytest.param(
            "from pkg.b import Y\n",
            """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg.a import X
            """,
            id="type-checking",
        ),
        pytest.param(
            "from pkg.b import Y\n",
            """
            def late():
                from pkg import a
                return a
            """,
            id="inside-a-function",
        ),
    ],
)
def test_a_planted_cycle_fails_and_is_named(tmp_path: Path, a: str, b: str) -> None:
    pkg = plant(tmp_path, {"a.py": f"X = 1\n{a}", "b.py": "Y = 2\n" + textwrap.dedent(b)})
    done = check(pkg)
    assert done.returncode == 1, done.stdout
    assert "import cycle among 2 modules" in done.stdout
    assert "pkg.a <-> pkg.b" in done.stdout
    assert f"{pkg / 'a.py'}:" in done.stdout and f"{pkg / 'b.py'}:" in done.stdout


def test_a_cycle_through_a_package_init_is_found(tmp_path: Path) -> None:
    # sub/__init__ re-exports sub.x; sub.x needs pkg.top, which imports sub.x: importing pkg.top
    # first runs sub/__init__, which imports x, which imports the half-built pkg.top
    pkg = plant(
        tmp_path,
        {
            "sub/__init__.py": "from pkg.sub.x import X\n",
            "sub/x.py": "from pkg.top import T\nX = 1\n",
            "top.py": "from pkg.sub.y import Y\nT = 1\n",
            "sub/y.py": "Y = 1\n",
        },
    )
    done = check(pkg)
    assert done.returncode == 1, done.stdout
    assert "pkg.sub <-> pkg.sub.x <-> pkg.top" in done.stdout


def test_a_package_importing_its_own_submodules_is_not_a_cycle(tmp_path: Path) -> None:
    pkg = plant(
        tmp_path,
        {
            "sub/__init__.py": "from pkg.sub.x import X\nfrom .y import Y\n",
            "sub/x.py": "from pkg.sub.y import Y\nX = Y\n",
            "sub/y.py": "Y = 1\n",
        },
    )
    done = check(pkg)
    assert done.returncode == 0, done.stdout


def test_src_oneiric_has_no_cycle() -> None:
    done = check(ROOT / "src" / "oneiric")
    assert done.returncode == 0, done.stdout
    # the seam of issue 10 step 1: the daemon's collaborators never import it back
    assert "oneiric.daemon" not in done.stdout


def test_not_a_package_is_a_usage_error(tmp_path: Path) -> None:
    done = check(tmp_path)
    assert done.returncode == 2
    assert "not a package directory" in done.stderr
