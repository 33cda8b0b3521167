"""Fail on import cycles among the modules of a package: ``python -m tools.check_imports``.

Every module under the package directory (default ``src/oneiric``) is parsed with :mod:`ast`,
never imported, and every import statement counts, wherever it is: at the top, under
``if TYPE_CHECKING:``, inside a function (a "lazy" import is still a dependency; hiding one
there is how a cycle goes unnoticed). Relative imports are resolved, and ``from pkg import
name`` is an edge to the submodule ``pkg.name`` when there is one. Importing ``a.b.c`` from
outside package ``a.b`` also depends on ``a/b/__init__.py`` (Python runs it first); from
inside ``a.b`` it does not (the package is already being imported).

A cycle is reported as its strongly connected component, with one concrete loop through it
and the line of each import on that loop. Exit status: 0 without a cycle, 1 with any. There is
no allowlist: issue 10 removed the last cycle, and a new one is fixed, not recorded.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


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


def _describe(component: Sequence[str], edges: Sequence[Edge], modules: Mapping[str, Path]) -> str:
    lines = [f"  {' <-> '.join(component)}"]
    for e in loop_through(component, edges):
        lines.append(f"    {e.source} -> {e.target}  ({modules[e.source]}:{e.line})")
    return "\n".join(lines)


def check(root: Path, *, out: TextIO | None = None) -> int:
    """Print the findings; return the exit status."""
    stream = sys.stdout if out is None else out
    modules = module_names(root)
    edges = import_edges(modules)
    found = cycles(modules, edges)
    for component in found:
        text = _describe(component, edges, modules)
        print(f"error: import cycle among {len(component)} modules:\n{text}", file=stream)
    if found:
        return 1
    print(f"{len(modules)} modules, {len(edges)} imports: no import cycles", file=stream)
    return 0


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
