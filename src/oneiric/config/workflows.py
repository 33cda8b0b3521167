"""Workflow DAG validation: a workflow's ``settings.nodes`` (SPEC §2).

Checked at load time, after all files are merged, because a node may name a task component
defined in another drop-in; a cycle or a dangling ``after`` must fail the load (and so a
reload) rather than deadlock the workflow at run time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from oneiric.config.fields import _check_keys, _convert, _table, _tname
from oneiric.config.sections import retry_value
from oneiric.errors import ConfigError

_NODE_KEYS = ("id", "task", "after", "payload", "retry")


def _check_nodes(raw: Any, tasks: set[str], *, file: str, where: str) -> None:
    """A workflow's ``nodes`` must form a DAG of existing task keys (SPEC §2)."""
    where = f"{where}.settings.nodes"
    if not isinstance(raw, list):
        raise ConfigError(
            f"expected an array of node tables, got {_tname(raw)}", file=file, path=where
        )
    index: dict[str, int] = {}
    graph: dict[str, list[str]] = {}
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        node = _table(entry, file=file, path=at)
        _check_keys(node, _NODE_KEYS, file=file, where=at)
        for field in ("id", "task"):
            if field not in node:
                raise ConfigError(f"missing required key {field!r}", file=file, path=at)
            if not isinstance(node[field], str) or not node[field]:
                raise ConfigError(
                    f"expected a non-empty string, got {node[field]!r}",
                    file=file,
                    path=f"{at}.{field}",
                )
        node_id, task = node["id"], node["task"]
        if node_id in index:
            raise ConfigError(
                f"duplicate node id {node_id!r}; first used at nodes[{index[node_id]}]",
                file=file,
                path=f"{at}.id",
            )
        if task not in tasks:
            known = ", ".join(sorted(tasks)) or "none"
            raise ConfigError(
                f"node {node_id!r}: no task component has key {task!r} (task keys: {known})",
                file=file,
                path=f"{at}.task",
            )
        if "retry" in node:
            retry_value(node["retry"], file=file, path=f"{at}.retry")
        index[node_id] = i
        graph[node_id] = list(
            _convert(node.get("after", []), tuple[str, ...], file=file, path=f"{at}.after")
        )
    for node_id, after in graph.items():
        for k, dep in enumerate(after):
            if dep not in index:
                raise ConfigError(
                    f"node {node_id!r}: 'after' names unknown node id {dep!r} "
                    f"(node ids: {', '.join(index)})",
                    file=file,
                    path=f"{where}[{index[node_id]}].after[{k}]",
                )
    ring = _find_cycle(graph)
    if ring is not None:
        order = [index[n] for n in ring]
        first = order.index(min(order))  # report the cycle from its earliest-declared node
        ring = ring[first:] + ring[:first]
        raise ConfigError(
            f"nodes {', '.join(map(repr, ring))} form a cycle: "
            f"{' -> '.join([*ring, ring[0]])} (each waits for the next)",
            file=file,
            path=f"{where}[{index[ring[0]]}].after",
        )


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """The nodes of one cycle along the "waits for" edges, in order, or None. Iterative, so a
    long chain cannot hit the recursion limit."""
    done: set[str] = set()
    for root, root_deps in graph.items():
        if root in done:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(root_deps))]
        on_stack = {root}
        while stack:
            node, deps = stack[-1]
            for dep in deps:
                if dep in on_stack:
                    path = [n for n, _ in stack]
                    return path[path.index(dep) :]
                if dep not in done:
                    on_stack.add(dep)
                    stack.append((dep, iter(graph[dep])))
                    break
            else:
                done.add(node)
                on_stack.discard(node)
                stack.pop()
    return None
