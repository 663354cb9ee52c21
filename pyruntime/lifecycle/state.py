"""Container state on disk: <root>/<id>/pyruntime.json, exec.fifo, and a lock per container.

The status is never trusted from disk alone: it is derived from the init pid *and* its start
time (so a recycled pid is never mistaken for our init), the exec.fifo (created vs running)
and the freezer (paused).
"""
from __future__ import annotations

import errno
import fcntl
import os

from pyruntime.lean import jsonio
from pyruntime.errors import ContainerExists, ContainerNotFound, RuntimeFailure
from pyruntime.lifecycle.layout import (FIFO, ID_CHARS as _ID_CHARS, NAME_MAX, STATE_FIELDS,
                                        STATE_FILE, STATE_TMP, check_state, start_time)


def check_id(cid: str) -> None:
    """runc's rule: letters, digits, _ + - . (and never a path)."""
    if not cid or not _ID_CHARS.issuperset(cid) or cid in (".", ".."):
        raise RuntimeFailure(f"invalid container id format: {cid!r}")
    if len(cid) > NAME_MAX:
        raise RuntimeFailure(f"invalid container id: {len(cid)} characters, more than a file "
                             f"name can hold ({NAME_MAX}): {cid[:40]}...")


class StateCorrupt(RuntimeFailure):
    """A state file that cannot be read back: `delete --force` still cleans up after it."""

    def __init__(self, cid: str, path: str, problem: str):
        self.id = cid
        super().__init__(f"container {cid}: state file {path} is corrupt: {problem}")


def os_failure(what: str, e: OSError, path: str = "") -> RuntimeFailure:
    """One line naming the operation, the file and the reason (ENOSPC, ENAMETOOLONG, ELOOP...)."""
    return RuntimeFailure(f"{what} {e.filename or path}: {e.strerror or e}".replace(" :", ":"))


class State:
    """What pyruntime.json holds. A plain class, not a dataclass: `state`, `kill`, `start` and
    `delete` read it on every call and the dataclasses import alone costs more than they do."""

    FIELDS = STATE_FIELDS
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

    @classmethod
    def from_dict(cls, data) -> "State":
        """A State from what a state file held; ValueError names the first field that is wrong
        (the file may have been damaged: every command that reads it relies on these types)."""
        check_state(data)
        return cls(**data)


def proc_start_time(pid: int) -> int | None:
    """starttime of a live, non-zombie pid, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return start_time(stat)


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
        c = cls(root, cid)
        try:
            os.makedirs(root, mode=0o711, exist_ok=True)
        except OSError as e:
            raise os_failure("cannot create the root dir", e, root) from None
        try:
            os.mkdir(c.dir, 0o711)
        except FileExistsError:
            raise ContainerExists(cid) from None
        except OSError as e:
            raise os_failure("cannot create the state dir", e) from None
        c.lock()
        return c

    @classmethod
    def load(cls, root: str, cid: str, lock: bool = False) -> "Container":
        check_id(cid)
        c = cls(root, cid)
        c.state = c._read()
        if lock:
            c.lock()
            try:
                c.state = c._read()  # another command may have changed it while we waited
            except BaseException:
                c.unlock()
                raise
        return c

    def _read(self) -> State:
        path = os.path.join(self.dir, STATE_FILE)
        try:
            with open(path, "rb") as f:
                return State.from_dict(jsonio.load(f))
        except (FileNotFoundError, NotADirectoryError):
            raise ContainerNotFound(self.id) from None
        except (ValueError, RecursionError, MemoryError) as e:
            raise StateCorrupt(self.id, path, str(e).splitlines()[0] if str(e) else "") from None
        except OSError as e:
            if e.errno in (errno.EISDIR, errno.ELOOP):
                raise StateCorrupt(self.id, path, e.strerror) from None
            raise os_failure(f"container {self.id}: cannot read its state", e) from None

    def lock(self) -> None:
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise ContainerNotFound(self.id) from None  # deleted meanwhile
        except OSError as e:
            raise os_failure(f"container {self.id}: cannot lock", e) from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def save(self) -> None:
        tmp = os.path.join(self.dir, STATE_TMP)
        try:
            with open(tmp, "w") as f:
                jsonio.dump(self.state.to_dict(), f)
            os.rename(tmp, os.path.join(self.dir, STATE_FILE))
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise os_failure(f"container {self.id}: cannot save its state", e, tmp) from None

    def remove(self) -> None:
        remove_dir(self.dir)
        self.unlock()

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


def remove_dir(d: str) -> None:
    """Remove a state dir: our files in it, the state file first (from then on no command sees
    the container, whatever a kill leaves for the next `delete --force`), then the dir. A dir
    holding files we did not write (runc's, in Docker's shared root) stays: ENOTEMPTY."""
    for name in (STATE_FILE, FIFO, STATE_TMP):
        try:
            os.unlink(os.path.join(d, name))
        except FileNotFoundError:
            pass
        except IsADirectoryError:  # damage, not a container's data: an empty dir at most
            try:
                os.rmdir(os.path.join(d, name))
            except OSError as e:
                raise os_failure("cannot remove", e) from None
        except OSError as e:
            raise os_failure("cannot remove", e) from None
    try:
        os.rmdir(d)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise os_failure("cannot remove", e) from None


def list_ids(root: str) -> list[str]:
    """Ids of the containers we manage in root; dirs of other runtimes (runc shares Docker's
    root) are skipped."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise os_failure("cannot list", e) from None
    return sorted(n for n in names if os.path.lexists(os.path.join(root, n, STATE_FILE)))


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
