"""cgroups in rootless mode: only the hierarchies the user may write, or none at all."""
from __future__ import annotations

import os

from pyruntime.errors import RuntimeFailure


def writable_cgroup(d: str) -> str | None:
    """None if the user may make (or use) cgroup dir `d`, else the dir that stops it: the
    nearest existing one (the cgroup itself when it exists, whose cgroup.procs must be ours)."""
    p = d
    while not os.path.isdir(p):
        p = os.path.dirname(p)
    if p == d:
        target = os.path.join(d, "cgroup.procs")
        return None if os.access(target, os.W_OK) else d
    return None if os.access(p, os.W_OK | os.X_OK) else p


def restrict(mgr, resources: dict):
    """The cgroup manager for rootless mode: the hierarchies the user may write, and a note
    of the others, so that a limit needing one of them names the dir and how to delegate it.
    With none writable and no limits asked, no cgroup at all (NoCgroup)."""
    keep, refused = {}, {}
    for ctrl, d in mgr.dirs.items():
        blocker = writable_cgroup(d)
        if blocker is None:
            keep[ctrl] = d
        else:
            refused[ctrl] = blocker
    if not keep:
        return NoCgroup(mgr.mode, refused)
    mgr.dirs = keep
    mgr.undelegated = refused
    mgr.self_move = False  # the parent moves the child: cgroup.procs is what was checked
    # Enabling cgroup2 controllers is the delegating admin's part (and the host-wide record of
    # what pyruntime enabled lives in /run): a rootless create uses what it was given.
    mgr.unified_mount = None
    return mgr


class NoCgroup:
    """Stands in for a cgroup manager when rootless mode has no cgroup to use."""
    paths: dict = {}
    dirs: dict = {}
    created: list = []

    def __init__(self, mode: str, undelegated: dict):
        self.mode, self.undelegated = mode, undelegated

    def create(self) -> None:
        pass

    def add_pid(self, pid: int) -> None:
        pass

    def placement(self):
        from pyruntime.cgroups.placement import Placement
        return Placement({})

    def apply(self, resources, update: bool = False) -> None:
        if resources:  # a limit with nowhere to go: the manager's check names the controller
            from pyruntime.cgroups.cgroupfs import Manager  # only to name the missing controller
            m = Manager({}, self.mode, None)
            m.undelegated = self.undelegated or {"": "/sys/fs/cgroup"}
            m.apply(resources, update)

    def planned(self) -> list:
        return []

    def to_state(self) -> dict:
        return {}

    def pids(self) -> list:
        return []

    def state(self) -> str:
        raise RuntimeFailure("cgroups: rootless container without a cgroup")

    def destroy(self) -> None:
        pass
