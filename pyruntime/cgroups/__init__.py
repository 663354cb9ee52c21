"""cgroups for pyruntime: v1, hybrid and v2 hosts; the cgroupfs driver (cgroupfs.py), and the
systemd one (systemd/, `--systemd-cgroup`: cgroupsPath "slice:prefix:name", the cgroup is a
unit). This module picks between them, for a new cgroup and for one read from the state:
cgroupfs.py imports nothing of systemd/, whose manager subclasses cgroupfs's Manager.

    m = cgroups.manager(cgroups_path, container_id)   # paths only, nothing touched yet
    m.create(); m.add_pid(pid); m.apply(linux_resources)
    state["cgroups"] = m.to_state() ... cgroups.manager_from_state(state["cgroups"]).destroy()

cgroupsPath follows runc: "/a/b" is relative to each hierarchy's root, "a/b" to the cgroup of
the runtime itself (on pure v2: its parent), and no cgroupsPath means "<id>" (relative).

The commands pause/resume/update/ps/events use ops.py (size and duration parsers, the OOM
watcher); it is not imported here, so `create` never pays for it.
"""
from __future__ import annotations

from pyruntime.errors import RuntimeFailure

from pyruntime.cgroups.common import Layout, detect
from pyruntime.cgroups.cgroupfs import Manager, build

__all__ = ["Layout", "Manager", "detect", "manager", "manager_from_state", "update"]


def manager(cgroups_path: str | None, container_id: str, *, systemd: bool = False,
            layout: Layout | None = None, rootless: bool = False) -> Manager:
    """The manager of one container's cgroup. `layout` (from detect()) pins the mount layout;
    `rootless` matters to the systemd driver only (the user's manager makes the unit)."""
    if systemd:
        from pyruntime.cgroups.systemd.manager import build as systemd_build  # only --systemd-cgroup pays for it
        return systemd_build(cgroups_path, container_id, layout, rootless)
    if cgroups_path is not None and not isinstance(cgroups_path, str):
        raise RuntimeFailure(f"linux.cgroupsPath: {cgroups_path!r} is not a string")
    return build(cgroups_path or None, container_id, layout)


def manager_from_state(d: dict) -> Manager:
    if "systemd" in (d.get("extra") or {}):  # the unit's name is in extra
        from pyruntime.cgroups.systemd.manager import SystemdManager
        return SystemdManager.from_state(d)
    return Manager.from_state(d)


def update(m: Manager, resources: dict) -> None:
    """`pyruntime update`: like apply, but a 0 leaves the current value as it is."""
    m.apply(resources, update=True)
