"""Fail on import cycles among the modules of a package: ``python -m tools.check_imports``.

Every module under the package directory (default ``src/oneiric``) is parsed with :mod:`ast`,
never imported, and every import statement counts, wherever it is: at the top, under
``if TYPE_CHECKING:``, inside a function (a "lazy" import is still a dependency; hiding one
there is how a cycle goes unnoticed). Relative imports are resolved, and ``from pkg import
name`` is an edge to the submodule ``pkg.name`` when there is one. Importing ``a.b.c`` from
outside package ``a.b`` also depends on ``a/b/__init__.py`` (Python runs it first); from
inside ``a.b`` it does not (the package is already being imported).

A cycle is reported as its strongly connected component, with one concrete loop through it
and the line of each import on that loop. Exit status: 0 when every cycle is allowed by
:data:`KNOWN_CYCLES` (those are printed as warnings), 1 when there is any other cycle or a
:data:`KNOWN_CYCLES` entry no longer matches a cycle (delete it: the allowlist only shrinks).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

#: Cycles that exist today and are being removed by their owners (issue 10). A cycle is allowed
#: when all its modules are inside one entry. When the last entry goes, delete this allowlist.
KNOWN_CYCLES: dict[str, frozenset[str]] = {
    "runtime split (issue 10 step 2): Runtime methods living in state.py/status.py": frozenset(
        {"oneiric.runtime.core", "oneiric.runtime.state", "oneiric.runtime.status"}
    ),
}


@dataclass(frozen=True, order=True)
class Edge:
    source: str
    target: str
    line: int


def module_names(root: Path) -> dict[str, Path]:
    """``{dotted name: file}`` for every ``.py`` file under the package directory ``root``."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _owner(name: str, modules: Mapping[str, Path]) -> str | None:
    """The module ``name`` lives in (``a.b.C`` → ``a.b``), if it is one of ours."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _packages_entered(source: str, target: str, modules: Mapping[str, Path]) -> list[str]:
    """The packages whose ``__init__`` importing ``target`` from ``source`` runs: ancestors of
    ``target`` that ``source`` is not already inside."""
    inside = {source}
    if modules[source].name != "__init__.py":
        inside.add(source.rpartition(".")[0])
    parts = target.split(".")
    out = []
    for i in range(1, len(parts)):
        pkg = ".".join(parts[:i])
        if pkg in modules and not any(s == pkg or s.startswith(pkg + ".") for s in inside):
            out.append(pkg)
    return out


def import_edges(modules: Mapping[str, Path]) -> list[Edge]:
    edges: set[Edge] = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_from(module, is_package, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            else:
                continue
            for name in targets:
                target = _owner(name, modules)
                if target is None or target == module:
                    continue
                for hop in [*_packages_entered(module, target, modules), target]:
                    edges.add(Edge(module, hop, node.lineno))
    return sorted(edges)


def cycles(nodes: Iterable[str], edges: Iterable[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    graph: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        graph[e.source].append(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the module count
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def loop_through(component: Sequence[str], edges: Iterable[Edge]) -> list[Edge]:
    """One closed walk through the component's first module, as the imports that make it."""
    members = set(component)
    inner: dict[str, list[Edge]] = {}
    for e in edges:
        if e.source in members and e.target in members:
            inner.setdefault(e.source, []).append(e)
    start = component[0]
    # breadth-first from start back to start: the shortest loop is the easiest to read
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for e in inner.get(v, []):
                if e.target == start:
                    return [*paths[v], e]
                if e.target not in paths:
                    paths[e.target] = [*paths[v], e]
                    nxt.append(e.target)
        frontier = nxt
    raise AssertionError(f"{component} is not a cycle")  # pragma: no cover


def _allowed_by(component: Sequence[str], known: Mapping[str, frozenset[str]]) -> str | None:
    return next((why for why, mods in known.items() if set(component) <= mods), None)


def _describe(component: Sequence[str], edges: Sequence[Edge], modules: Mapping[str, Path]) -> str:
    lines = [f"  {' <-> '.join(component)}"]
    for e in loop_through(component, edges):
        lines.append(f"    {e.source} -> {e.target}  ({modules[e.source]}:{e.line})")
    return "\n".join(lines)


def check(
    root: Path, known: Mapping[str, frozenset[str]] = KNOWN_CYCLES, *, out: TextIO | None = None
) -> int:
    """Print the findings; return the exit status."""
    stream = sys.stdout if out is None else out
    # entries about another package (a planted one in the tests) do not apply
    known = {
        why: mods for why, mods in known.items() if all(m.split(".")[0] == root.name for m in mods)
    }
    modules = module_names(root)
    edges = import_edges(modules)
    found = cycles(modules, edges)
    status = 0
    for component in found:
        why = _allowed_by(component, known)
        text = _describe(component, edges, modules)
        if why is None:
            status = 1
            print(f"error: import cycle among {len(component)} modules:\n{text}", file=stream)
        else:
            print(f"warning: known import cycle (owned by: {why}):\n{text}", file=stream)
    for why, mods in known.items():
        if not any(set(c) <= mods for c in found):
            status = 1
            print(
                f"error: KNOWN_CYCLES entry {why!r} ({', '.join(sorted(mods))}) is no longer a "
                "cycle: delete it from tools/check_imports.py",
                file=stream,
            )
    if status == 0:
        print(
            f"{len(modules)} modules, {len(edges)} imports: no import cycles"
            + (f" beyond {len(found)} known" if found else ""),
            file=stream,
        )
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.check_imports",
        description="Fail on import cycles among the modules of a package (TYPE_CHECKING and "
        "function-level imports included).",
    )
    parser.add_argument(
        "package", nargs="?", default="src/oneiric", type=Path, help="package directory"
    )
    args = parser.parse_args(argv)
    if not (args.package / "__init__.py").is_file():
        parser.error(f"{args.package} is not a package directory (no __init__.py)")
    try:
        return check(args.package)
    except SyntaxError as exc:
        print(f"error: cannot parse {exc.filename}:{exc.lineno}: {exc.msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
