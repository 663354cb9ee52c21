"""Container state on disk: <root>/<id>/pyruntime.json, exec.fifo, and a lock per container.

The status is never trusted from disk alone: it is derived from the init pid *and* its start
time (so a recycled pid is never mistaken for our init), the exec.fifo (created vs running)
and the freezer (paused).
"""
from __future__ import annotations

import errno
import fcntl
import os
import time

from . import jsonio
from .errors import ContainerNotFound, RuntimeFailure

STATE_FILE = "pyruntime.json"
FIFO = "exec.fifo"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def check_id(cid: str) -> None:
    """runc's rule: letters, digits, _ + - . (and never a path)."""
    if not cid or not _ID_CHARS.issuperset(cid) or cid in (".", ".."):
        raise RuntimeFailure(f"invalid container id format: {cid!r}")


class State:
    """What pyruntime.json holds. A plain class, not a dataclass: `state`, `kill`, `start` and
    `delete` read it on every call and the dataclasses import alone costs more than they do."""

    FIELDS = {
        "id": "", "bundle": "", "rootfs": "", "created": "",
        "pid": 0,
        "init_start": 0,        # /proc/<pid>/stat starttime of the init, in clock ticks
        "status": "creating",   # as last written; see Container.status() for the live value
        "annotations": {},
        "owner": "",
        "cgroup": {},           # the cgroup manager's to_state()
        "hooks": {},            # poststart/poststop, kept for start and delete
        "config_process": {},   # defaults for `exec`
        "seccomp": {},          # applied to `exec`'d processes too
        "no_pid_ns": False,     # shares a pid ns: kill --all must walk the cgroup
        "use_systemd": False,
        "intel_rdt": {},        # intelrdt.apply()'s groups, for exec and delete
        "memory_policy": [],    # linux.memoryPolicy as (mode | flags, node mask), for exec
        "oci_version": "1.3.0",
    }
    __slots__ = tuple(FIELDS)

    def __init__(self, **fields):
        unknown = set(fields) - set(self.FIELDS)
        if unknown:
            raise TypeError(f"unknown state fields: {sorted(unknown)}")
        for name, default in self.FIELDS.items():
            value = fields.get(name, default)
            setattr(self, name, value.copy() if value is default and isinstance(value, dict) else value)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS}


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def proc_start_time(pid: int) -> int | None:
    """starttime of a live, non-zombie pid, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class Container:
    """A container's state dir. Open with Container.load(root, id) or Container.new(...)."""

    def __init__(self, root: str, cid: str, state: State | None = None):
        self.root, self.id = root, cid
        self.dir = os.path.join(root, cid)
        self.state = state
        self._lock_fd: int | None = None

    # ------------------------------------------------------------ lifecycle of the dir

    @classmethod
    def new(cls, root: str, cid: str) -> "Container":
        check_id(cid)
        os.makedirs(root, mode=0o711, exist_ok=True)
        c = cls(root, cid)
        try:
            os.mkdir(c.dir, 0o711)
        except FileExistsError:
            raise RuntimeFailure(f"container with given ID already exists: {cid}") from None
        c.lock()
        return c

    @classmethod
    def load(cls, root: str, cid: str, lock: bool = False) -> "Container":
        check_id(cid)
        c = cls(root, cid)
        try:
            with open(os.path.join(c.dir, STATE_FILE), "rb") as f:
                data = jsonio.load(f)
            c.state = State(**data)
        except FileNotFoundError:
            raise ContainerNotFound(cid) from None
        except (ValueError, TypeError):
            raise RuntimeFailure(f"container {cid}: state file is corrupt") from None
        if lock:
            c.lock()
            return c._reload()
        return c

    def _reload(self) -> "Container":
        # Another command may have changed the state while we waited for the lock.
        try:
            with open(os.path.join(self.dir, STATE_FILE), "rb") as f:
                self.state = State(**jsonio.load(f))
        except FileNotFoundError:
            self.unlock()
            raise ContainerNotFound(self.id) from None
        return self

    def lock(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def save(self) -> None:
        tmp = os.path.join(self.dir, f".{STATE_FILE}.tmp")
        with open(tmp, "w") as f:
            jsonio.dump(self.state.to_dict(), f)
        os.rename(tmp, os.path.join(self.dir, STATE_FILE))

    def remove(self) -> None:
        for name in (STATE_FILE, FIFO, f".{STATE_FILE}.tmp"):
            try:
                os.unlink(os.path.join(self.dir, name))
            except FileNotFoundError:
                pass
        self.unlock()
        try:
            os.rmdir(self.dir)
        except OSError as e:
            if e.errno not in (errno.ENOENT,):
                raise

    @property
    def fifo(self) -> str:
        return os.path.join(self.dir, FIFO)

    # ------------------------------------------------------------ live status

    def init_alive(self) -> bool:
        st = self.state
        return bool(st.pid) and proc_start_time(st.pid) == st.init_start

    def status(self) -> str:
        st = self.state
        if st.status == "creating":
            return "creating" if not st.pid or self.init_alive() else "stopped"
        if not self.init_alive():
            return "stopped"
        if st.cgroup and _frozen(st.cgroup):  # before the fifo: a created container can be
            return "paused"                      # paused too (as runc)
        if os.path.exists(self.fifo):
            return "created"
        return "running"

    def oci_state(self) -> dict:
        """The runtime-spec state (plus runc's rootfs/created/owner fields)."""
        st = self.state
        status = self.status()
        return {
            "ociVersion": st.oci_version,
            "id": st.id,
            "pid": st.pid if status not in ("stopped",) else 0,
            "status": status,
            "bundle": st.bundle,
            "rootfs": st.rootfs,
            "created": st.created,
            "annotations": st.annotations,
            "owner": st.owner,
        }


def list_ids(root: str) -> list[str]:
    """Ids of the containers we manage in root; dirs of other runtimes (runc shares Docker's
    root) are skipped."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.exists(os.path.join(root, n, STATE_FILE)))


def _frozen(cgroup: dict) -> bool:
    """The freezer's state, read here: status() runs on every command, and the cgroups package
    costs more to import than this read. Same choice as the cgroup manager: the v1 freezer
    where the host has one, else cgroup2's cgroup.freeze."""
    dirs = cgroup.get("dirs") or {}
    if "freezer" in dirs:
        path, frozen = os.path.join(dirs["freezer"], "freezer.state"), "FROZEN"
    elif "" in dirs:
        path, frozen = os.path.join(dirs[""], "cgroup.freeze"), "1"
    else:
        return False
    try:
        with open(path) as f:
            return f.read().strip() == frozen
    except OSError:
        return False
