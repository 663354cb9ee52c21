"""How a new child of `create` or `exec` gets into the container's cgroups cheaply.

Moving a process by pid (a write to cgroup.procs) takes the kernel's cgroup_threadgroup_rwsem
for writing, which first waits for an RCU grace period unless another move took it within the
last one, and holds cgroup_mutex all the while. Two ways keep the bootstrap child clear of it:

- v1: a process with one thread that writes "0" to a hierarchy's `tasks` moves only itself,
  and the kernel skips that lock for it. A forked child has one thread (fork copies only the
  caller's), so the bootstrap child moves itself, first thing (Placement.child).
- cgroup2 (a v2 host's hierarchy, or a hybrid host's unified one): clone3 with
  CLONE_INTO_CGROUP makes the child inside its cgroup (Placement.fork). Where that is refused
  (a caller with threads, an old kernel, a cgroup that takes no process) the child is forked
  as before and the parent moves it (Placement.parent), which reports the error if there is one.

The parent waits for the child's MOVED before Placement.parent (lifecycle/channel.py), so
that what follows (the resources, intelRdt) finds it in every hierarchy. `self_move=False`
keeps the old way for every hierarchy: a plain fork, then `move(pid)`, the manager's add_pid.
"""
from __future__ import annotations

import errno
import os

from pyruntime.errors import RuntimeFailure

from pyruntime.cgroups.common import write


class Placement:
    """The cgroups one child goes to: dirs {controller, or "" for cgroup2: dir}."""

    def __init__(self, dirs: dict[str, str], *, self_move: bool = True, move=None):
        self.v1 = list(dict.fromkeys(d for key, d in dirs.items() if key))
        self.v2 = dirs.get("")
        self.self_move = self_move
        self.move = move or self._move_all
        self.born_in_v2 = False

    def fork(self) -> int:
        """os.fork(), into the cgroup2 dir where clone3 can do that."""
        if self.self_move and self.v2:
            from pyruntime.linux import syscalls
            try:
                fd = os.open(self.v2, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                return os.fork()  # the parent's move names the problem
            try:
                pid = syscalls.fork_into_cgroup(fd)
                self.born_in_v2 = True
                return pid
            except OSError:
                pass
            finally:
                os.close(fd)
        return os.fork()

    def child(self) -> None:
        """In the child, before anything else: move ourselves into each v1 hierarchy."""
        if self.self_move:
            for d in self.v1:
                add(d, "tasks", 0, "self")

    def parent(self, pid: int) -> None:
        """Once the child has reported MOVED: move it wherever it could not go itself."""
        if not self.self_move:
            self.move(pid)
        elif self.v2 and not self.born_in_v2:
            add(self.v2, "cgroup.procs", pid, f"pid {pid}", cgroup2=True)

    def _move_all(self, pid: int) -> None:
        for d in self.v1 + ([self.v2] if self.v2 else []):
            add(d, "cgroup.procs", pid, f"pid {pid}", cgroup2=d == self.v2)


def add(d: str, name: str, value, who: str, cgroup2: bool = False) -> None:
    """Write `value` (a pid, or "0": ourselves) to `name` (cgroup.procs, tasks) of cgroup d."""
    try:
        write(d, name, value, "cgroups")
    except RuntimeFailure as e:
        why = cgroup2 and e.errno == errno.EACCES and " (a cgroup2 move needs write access to " \
            "the common ancestor: run from inside the delegated subtree)" or ""
        raise RuntimeFailure(f"cgroups: cannot add {who} to {d}: "
                             f"{os.strerror(e.errno) if e.errno else e}{why}",
                             errno=e.errno) from None
