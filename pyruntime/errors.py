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
        self.id = cid
        super().__init__(f"container does not exist: {cid}")


class ContainerExists(RuntimeFailure):
    def __init__(self, cid: str):
        self.id = cid
        super().__init__(f"container with given ID already exists: {cid}")


class ContainerStateError(RuntimeFailure):
    """The container's status does not allow the operation (start a running one, delete one
    that still runs, resume one that is not paused ...); `status` is the status it had."""

    def __init__(self, cid: str, status: str, message: str):
        self.id, self.status = cid, status
        super().__init__(message)


class ContainerNotRunning(ContainerStateError):
    """runc's wording, which containerd matches: "container not running"."""

    def __init__(self, cid: str, status: str = "stopped", message: str = "container not running"):
        super().__init__(cid, status, message)


class BundleError(RuntimeFailure):
    """The bundle is not one: no such dir, or no config.json in it."""
