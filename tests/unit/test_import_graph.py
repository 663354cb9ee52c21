"""No import cycles inside pyruntime: every import of a pyruntime module, at the top of a
module or inside a function (a lazy import is still a dependency), read with ast."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pyruntime"  # this tree's, not an installed one


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        deps = edges.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
                # `from pkg import mod` names the submodule, `from mod import x` the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            else:
                continue
            # The root package is loaded before any of its modules, whatever they import; its
            # one import (the Python API, on first use through __getattr__) is not a dependency
            # of the modules that read its constants.
            deps.update(t for t in targets if t in files and t not in (name, "pyruntime"))
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component (Tarjan), shown as a path back to its start."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.add(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(_path_through(scc, edges))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _path_through(scc: set[str], edges) -> list[str]:
    """A shortest cycle from the component's first module back to it (breadth first)."""
    start = min(scc)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(edges[v] & scc):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                todo.append(w)
    return sorted(scc)


def test_the_walk_sees_top_level_and_lazy_imports():
    edges = graph()
    assert "pyruntime.linux.syscalls" in edges["pyruntime.setup.rootfs"]  # top level
    assert "pyruntime.linux.mempolicy" in edges["pyruntime.setup.init"]  # inside a function
    assert "pyruntime.oci.mounts" in edges["pyruntime.oci.config"]


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_linux_does_not_import_the_config():
    """linux/ is the kernel layer: reading a config (oci/) builds on it, never the reverse."""
    for name, deps in graph().items():
        if name.startswith("pyruntime.linux."):
            assert not {d for d in deps if d.startswith("pyruntime.oci")}, name
