"""The errors a user may see. Each is one line; the CLI prints it and exits non-zero.

Wording follows runc where containerd or Docker match on it (see shared CONTRACT.md):
"container does not exist", "container not running", "permission denied", ...
"""
from __future__ import annotations

from pyruntime.lean import jsonio



class RuntimeFailure(Exception):
    """An expected failure: the CLI reports str(self) and exits 1, never a traceback."""


class ConfigError(RuntimeFailure):
    """config.json (or a process.json) is invalid at a JSON path.

    >>> str(ConfigError("linux.namespaces[2].type", "pidd", "is not a namespace type"))
    'config.json: linux.namespaces[2].type: "pidd" is not a namespace type'
    """

    def __init__(self, path: str, value, problem: str, file: str = "config.json"):
        self.path, self.value, self.problem, self.file = path, value, problem, file
        shown = jsonio.dumps(value) if not isinstance(value, _Missing) else "(missing)"
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{file}: {path}: {shown} {problem}")


class _Missing:
    pass


MISSING = _Missing()


class ContainerNotFound(RuntimeFailure):
    def __init__(self, cid: str):
        super().__init__(f"container does not exist: {cid}")
