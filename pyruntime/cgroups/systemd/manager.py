"""SystemdManager: the cgroupfs Manager whose cgroup is a systemd unit."""
from __future__ import annotations

import os

from pyruntime.errors import RuntimeFailure

from pyruntime.cgroups import v1, v2
from pyruntime.cgroups.cgroupfs import _V2_NAME, Manager, _makedirs
from pyruntime.cgroups.common import Layout, default_layout, write
from pyruntime.cgroups.placement import Placement
from pyruntime.cgroups.systemd.dbus import Systemd
from pyruntime.cgroups.systemd.names import (DEFAULT_SLICE, USER_SLICE, _pid1_cgroups,
                                             parse_cgroups_path, unit_cgroup, unit_dirs)
from pyruntime.cgroups.systemd.properties import base_properties, resource_properties


class SystemdManager(Manager):
    """A Manager whose cgroup is a systemd unit. extra["systemd"] = {"unit", "slice", "cgroup",
    "name", "started"} goes to the state, so every later command finds the unit; rootless,
    also "user": the user manager's cgroup2 dir (its unit, its bus).

    The unit starts at the apply() that follows the first add_pid() (create always makes that
    pair), so that systemd gets the resource properties, device policy included, in the same
    StartTransientUnit: a controller systemd realizes later (on v1, the devices one once
    DevicePolicy comes) makes it move the unit's processes around its slices."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._bus: Systemd | None = None
        self._pending: int | None = None

    @property
    def unit(self) -> str:
        return self.extra["systemd"]["unit"]

    def bus(self) -> Systemd:
        if self._bus is None:
            self._bus = Systemd(user=bool(self.extra["systemd"].get("user")))
        return self._bus

    def _need(self, ctrl: str, field: str):
        user_dir = self.extra["systemd"].get("user")
        if not user_dir or self.where(ctrl) is not None:
            return super()._need(ctrl, field)
        have = " ".join(sorted(v2.controllers(user_dir))) or "none"
        raise RuntimeFailure(f"{field}: rootless --systemd-cgroup applies limits through cgroup "
                             f"v2 only, and the user's systemd has no {_V2_NAME.get(ctrl, ctrl)} "
                             f"controller there ({user_dir}/cgroup.controllers: {have})")

    def create(self) -> None:
        self.bus()  # nothing to make yet (a scope needs a pid); fail before forking

    def add_pid(self, pid: int) -> None:
        if self.extra["systemd"].get("started") and self.extra["systemd"].get("user"):
            # exec, rootless: a cgroup2 move needs write access to the common ancestor of
            # both cgroups, which the user seldom has; the user's systemd asks the system's
            self.bus().attach_processes(self.unit, [pid])
        elif self.extra["systemd"].get("started"):
            super().add_pid(pid)  # exec: systemd's dirs exist, join them
        elif self._pending is None:
            self._pending = pid
        else:
            raise RuntimeFailure(f"systemd cgroup driver: {self.unit} is not started yet")

    def placement(self) -> Placement:
        sd = self.extra["systemd"]
        if sd.get("started") and not sd.get("user"):
            return super().placement()  # exec: as add_pid, the cgroupfs way
        # create: systemd moves the pid into the unit it starts (add_pid, then apply)
        return Placement(self.dirs, self_move=False, move=self.add_pid)

    def apply(self, resources: dict | None, update: bool = False) -> None:
        unified = self.mode == "v2"
        props = resource_properties(resources, unified=unified, update=update,
                                    version=lambda: self.bus().version())
        if self._pending is not None:
            self._start(self._pending, props)
            self._pending = None
        elif props and self.extra["systemd"].get("started"):
            self.bus().set_unit_properties(self.unit, props)
        super().apply(resources, update)

    def _start(self, pid: int, resource_props: list) -> None:
        sd = self.extra["systemd"]
        bus = self.bus()
        props = base_properties(sd["slice"], self.unit, f"pyruntime container {sd['name']}",
                                None if self.unit.endswith(".slice") else pid,
                                self.mode == "v2")
        job = bus.start_transient_unit(self.unit, props + resource_props)
        # The unit is ours from here (and not before: a unit of that name that already
        # existed is someone else's); a failure leaves it to the caller's destroy().
        sd["started"] = True
        bus.wait_started(self.unit, job)
        self._check_placement(bus)
        self._join(pid)

    def _check_placement(self, bus: Systemd) -> None:
        path = bus.unit_path(self.unit)
        iface = "org.freedesktop.systemd1." + ("Slice" if self.unit.endswith(".slice")
                                                else "Scope")
        got = bus.get_property(path, iface, "ControlGroup") if path else None
        want = self.extra["systemd"]["cgroup"]
        if got != want:
            raise RuntimeFailure(f"systemd cgroup driver: systemd put {self.unit} in cgroup "
                                 f"{got!r}, expected {want!r}")

    def _join(self, pid: int) -> None:
        for key, d in self.dirs.items():
            if key.startswith("name="):
                continue  # systemd's own tracking hierarchy
            if not os.path.isdir(d):
                # A v1 hierarchy systemd does not manage: ours to make, and to remove.
                _makedirs(os.path.dirname(d), [])
                _makedirs(d, self.created)
                if key == "cpuset":
                    v1.init_cpuset(d)
            write(d, "cgroup.procs", pid, "cgroups")
        if "" in self.dirs and self.unified_mount and self.mode == "v2":
            v2.enable_controllers(self.unified_mount, self.dirs[""])  # as runc's fs2 does
        self._v2ctl = None

    def destroy(self) -> None:
        err = None
        if self.extra["systemd"].get("started"):
            try:
                self.bus().stop_unit(self.unit)
            except RuntimeFailure as e:
                err = e
        super().destroy()  # only the dirs we made ourselves
        if err is not None:
            raise err


def build(cgroups_path: str | None, container_id: str,
          layout: Layout | None = None, rootless: bool = False) -> SystemdManager:
    slice_name, unit = parse_cgroups_path(cgroups_path, container_id,
                                          USER_SLICE if rootless else DEFAULT_SLICE)
    layout = layout or default_layout()
    if rootless:
        return _build_user(cgroups_path, container_id, slice_name, unit, layout)
    rel = unit_cgroup(slice_name, unit)
    dirs = unit_dirs(layout, rel, _pid1_cgroups())
    name = cgroups_path.rsplit(":", 1)[-1] if cgroups_path else container_id
    extra = {"systemd": {"unit": unit, "slice": slice_name, "cgroup": rel, "name": name,
                         "started": False}}
    return SystemdManager(dirs, layout.mode, layout.unified[0] if layout.unified else None,
                          extra=extra)


def _build_user(cgroups_path, container_id: str, slice_name: str, unit: str,
                layout: Layout) -> SystemdManager:
    """Rootless mode: the unit is the user manager's (user@UID.service), which is delegated
    cgroup2 alone (on a hybrid host its v1 dirs stay root's), so the container's cgroup is
    the unit's cgroup2 dir, under the manager's own cgroup, which the manager tells (runc)."""
    if not layout.unified:
        raise RuntimeFailure("rootless --systemd-cgroup needs a cgroup v2 hierarchy: the "
                             "user's systemd is delegated no cgroup v1 one")
    bus = Systemd(user=True)
    root = str(bus.get_property("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                                "ControlGroup"))
    mnt, mroot = layout.unified

    def host(rel: str) -> str:
        if mroot != "/" and (rel == mroot or rel.startswith(mroot + "/")):
            rel = rel[len(mroot):]
        return os.path.normpath(f"{mnt}/{rel.strip('/')}")
    rel = root.rstrip("/") + unit_cgroup(slice_name, unit)
    name = cgroups_path.rsplit(":", 1)[-1] if cgroups_path else container_id
    extra = {"systemd": {"unit": unit, "slice": slice_name, "cgroup": rel, "name": name,
                         "started": False, "user": host(root)}}
    m = SystemdManager({"": host(rel)}, "v2", None, extra=extra)
    m._bus = bus
    return m
