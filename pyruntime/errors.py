"""The errors a user may see. Each is one line; the CLI prints it and exits non-zero.

Wording follows runc where containerd or Docker match on it (see shared CONTRACT.md):
"container does not exist", "container not running", "permission denied", ...
"""
from __future__ import annotations

from pyruntime.lean import jsonio



class RuntimeFailure(Exception):
    """An expected failure: the CLI reports str(self) and exits 1, never a traceback.

    Besides its one-line message it carries what a program needs to act on it: `errno` (given,
    else that of the OSError it was raised from), `path` (the config path at fault, e.g.
    "mounts[3].options[1]") and `step` (where in the lifecycle it failed, e.g. "rootfs",
    "cgroups", "exec"). Each may be None.

    >>> e = RuntimeFailure("process.cwd: '/x': Permission denied", errno=13, path="process.cwd")
    >>> (str(e), e.errno, e.path, e.step)
    ("process.cwd: '/x': Permission denied", 13, 'process.cwd', None)
    """

    def __init__(self, msg: str = "", *, errno: int | None = None, path: str | None = None,
                 step: str | None = None):
        super().__init__(msg)
        self._errno, self.path, self.step = errno, path, step

    @property
    def errno(self) -> int | None:
        if self._errno is not None:
            return self._errno
        return getattr(self.__cause__, "errno", None)

    def record(self) -> dict:
        """What a forked child sends its parent, which raises from_record(it) again."""
        return {"msg": str(self), "errno": self.errno, "path": self.path, "step": self.step}

    @classmethod
    def from_record(cls, rec: dict) -> RuntimeFailure:
        return cls(rec.get("msg") or "", errno=rec.get("errno"), path=rec.get("path"),
                   step=rec.get("step"))


class ProtocolError(RuntimeFailure):
    """A message the parent <-> child protocol did not expect here (lifecycle/channel.py)."""

    def __init__(self, expected: tuple[str, ...], received):
        self.expected, self.received = expected, received
        want = " or ".join(repr(k) for k in expected) or "nothing"
        super().__init__(f"protocol error: expected {want}, got {received!r}")


class PeerGone(RuntimeFailure):
    """The other end of the channel closed it where a message was due: it died."""


class step:
    """`with step("cgroups"): ...` names the step of a RuntimeFailure that leaves the block
    without one."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, _type, e, _tb):
        if isinstance(e, RuntimeFailure) and e.step is None:
            e.step = self.name
        return False


class ConfigError(RuntimeFailure):
    """config.json (or a process.json) is invalid at a JSON path.

    >>> str(ConfigError("linux.namespaces[2].type", "pidd", "is not a namespace type"))
    'config.json: linux.namespaces[2].type: "pidd" is not a namespace type'
    """

    def __init__(self, path: str, value, problem: str, file: str = "config.json"):
        self.value, self.problem, self.file = value, problem, file
        shown = jsonio.dumps(value) if not isinstance(value, _Missing) else "(missing)"
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{file}: {path}: {shown} {problem}", path=path)


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
