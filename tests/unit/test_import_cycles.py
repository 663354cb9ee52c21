"""The package's import graph has no cycle: each module's top-level imports, read from the
source (a submodule's implicit import of its own package does not count)."""
from __future__ import annotations

import ast
from pathlib import Path

import pyruntime

PKG = Path(pyruntime.__file__).parent


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = ("pyruntime",) + p.relative_to(PKG).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def top_level_imports(path: Path, known) -> set[str]:
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m in known}


def test_no_import_cycle():
    mods = modules()
    graph = {m: {d for d in top_level_imports(p, mods) if d != m and not m.startswith(d + ".")}
             for m, p in mods.items()}
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    path: list[str] = []
    cycles = []

    def walk(m):
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                walk(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m)
    assert len(mods) > 50 and not cycles, cycles
