"""docs/ARCHITECTURE.md's layer drawing is true: every import in src/oneiric points to its own
row or a row below it (imports under TYPE_CHECKING and inside functions count, as for the cycle
check), and every module has a row."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tools/ is not installed: it runs from a checkout

from tools.check_imports import Edge, import_edges, module_names  # noqa: E402

#: The rows of the drawing, top to bottom, by module prefix (the longest prefix decides; "=x"
#: is module ``x`` alone, e.g. a package's ``__init__``).
LAYERS: list[tuple[str, list[str]]] = [
    ("entry", ["cli"]),
    ("wiring", ["daemon"]),
    (
        "serving",
        [
            "control.server",
            "control.connection",
            "control.session",
            "control.listen",
            "control.peers",
            "handlers",
            "streams",
            "metrics",
            "watch",
            "watchplan",
            "_inotify",
        ],
    ),
    ("sources", ["reload", "plugins", "remote"]),
    ("contract", ["control.protocol", "control.framing", "control.replies"]),
    ("users", ["domains", "runtime.reporter", "oneiric", "builtin"]),
    ("runtime", ["runtime"]),
    (
        "base",
        [
            "config",
            "errors",
            "systemd",
            "logging_setup",
            "_const",
            "_files",
            "_changes",
            "_durations",
            "=control",  # the packages' __init__s import nothing
            "=remote",
            "control.client",
            "control.wirejson",
            "remote.artifacts",
        ],
    ),
]


def row_of(module: str) -> int | None:
    """The row of ``oneiric.x.y`` (by its longest listed prefix ``x.y`` or ``x``)."""
    name = "oneiric" if module == "oneiric" else module.removeprefix("oneiric.")
    best: tuple[int, int] | None = None
    for row, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix.startswith("="):
                if name == prefix[1:]:
                    return row
            elif (name == prefix or name.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[1]
            ):
                best = (row, len(prefix))
    return None if best is None else best[0]


def upward(edges: list[Edge]) -> list[str]:
    out = []
    for e in edges:
        src, dst = row_of(e.source), row_of(e.target)
        if src is not None and dst is not None and dst < src:
            where = f"{e.source} ({LAYERS[src][0]})"
            out.append(f"{where} imports {e.target} ({LAYERS[dst][0]}), line {e.line}")
    return out


def test_every_module_has_a_row() -> None:
    modules = module_names(ROOT / "src" / "oneiric")
    missing = sorted(m for m in modules if row_of(m) is None)
    assert not missing, f"place these in a row of docs/ARCHITECTURE.md and LAYERS: {missing}"


def test_imports_point_down_the_drawing() -> None:
    modules = module_names(ROOT / "src" / "oneiric")
    bad = upward(import_edges(modules))
    assert not bad, "imports against docs/ARCHITECTURE.md's layers:\n" + "\n".join(bad)


def test_an_import_up_the_drawing_is_seen() -> None:
    edges = [
        Edge("oneiric.runtime.core", "oneiric.handlers", 3),
        Edge("oneiric.handlers", "oneiric.runtime.core", 9),  # down: fine
        Edge("oneiric.control.replies", "oneiric.control.session", 5),
    ]
    assert upward(edges) == [
        "oneiric.runtime.core (runtime) imports oneiric.handlers (serving), line 3",
        "oneiric.control.replies (contract) imports oneiric.control.session (serving), line 5",
    ]
