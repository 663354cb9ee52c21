"""Unit names and paths of the systemd driver.

cgroupsPath is runc's "slice:prefix:name": the unit is "<prefix>-<name>.scope" (or "<name>" when
that ends in ".slice") in `slice` ("system.slice" when empty; "a-b.slice" lives at
a.slice/a-b.slice). Without a cgroupsPath the unit is "pyruntime-<id>.scope" in system.slice:
runc's default is ":runc:<id>", and ":pyruntime:<id>" keeps the two runtimes' units apart as
their default state roots are (docker, podman and containerd always pass a cgroupsPath).
"""
from __future__ import annotations

import os

from pyruntime.errors import RuntimeFailure

from pyruntime.cgroups.common import Layout

DEFAULT_SLICE = "system.slice"
USER_SLICE = "user.slice"  # rootless mode's default, in the user's manager (runc's)
DEFAULT_PREFIX = "pyruntime"


def _bad_path(value, why: str) -> RuntimeFailure:
    return RuntimeFailure(f"linux.cgroupsPath: {value!r} {why} (--systemd-cgroup wants "
                          "\"slice:prefix:name\", e.g. \"system.slice:docker:abc\")")


def expand_slice(slice_name: str) -> str:
    """"a-b.slice" -> "/a.slice/a-b.slice": systemd nests slices by their dashes ("-.slice" is
    the root, "/")."""
    if (len(slice_name) <= len(".slice") or not slice_name.endswith(".slice")
            or "/" in slice_name):
        raise ValueError(f"invalid slice name: {slice_name}")
    stem = slice_name[:-len(".slice")]
    if stem == "-":
        return "/"
    path, prefix = "", ""
    for part in stem.split("-"):
        if not part:
            raise ValueError(f"invalid slice name: {slice_name}")
        path += f"/{prefix}{part}.slice"
        prefix += part + "-"
    return path


def parse_cgroups_path(cgroups_path: str | None, container_id: str,
                       default_slice: str = DEFAULT_SLICE) -> tuple[str, str]:
    """(slice, unit name) of a cgroupsPath in systemd form."""
    if not cgroups_path:
        return default_slice, f"{DEFAULT_PREFIX}-{container_id}.scope"
    if not isinstance(cgroups_path, str):
        raise RuntimeFailure(f"linux.cgroupsPath: {cgroups_path!r} is not a string")
    parts = cgroups_path.split(":")
    if len(parts) != 3:
        raise _bad_path(cgroups_path, "is not of the form slice:prefix:name")
    parent, prefix, name = parts
    if not name:
        raise _bad_path(cgroups_path, "has an empty name")
    if "/" in name or "/" in prefix:
        raise _bad_path(cgroups_path, "names a path, not a unit")
    slice_name = parent or default_slice
    try:
        expand_slice(slice_name)
    except ValueError as e:
        raise _bad_path(cgroups_path, f"has an {e}") from None
    # runc's rule, empty prefix included ("-name.scope").
    unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope"
    if unit.endswith(".slice"):
        try:
            expand_slice(unit)
        except ValueError as e:
            raise _bad_path(cgroups_path, f"has an {e}") from None
    return slice_name, unit


def unit_cgroup(slice_name: str, unit: str) -> str:
    """The unit's cgroup relative to systemd's root, as its ControlGroup property shows it."""
    if unit.endswith(".slice"):
        return expand_slice(unit)  # a slice's place comes from its own name
    return expand_slice(slice_name).rstrip("/") + "/" + unit


def _pid1_cgroups(path: str = "/proc/1/cgroup") -> dict:
    out = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            out[""] = parts[2]
        for c in parts[1].split(","):
            if c:
                out[c] = parts[2]
    return out


def unit_dirs(layout: Layout, rel: str, pid1: dict) -> dict[str, str]:
    """The unit's dir in each hierarchy: systemd's root there (PID 1's cgroup less init.scope,
    as runc finds it) joined with `rel`."""
    def place(key, mnt, root):
        base = pid1.get(key, "/")
        if base.endswith("/init.scope"):
            base = base[:-len("/init.scope")] or "/"
        if root != "/" and (base == root or base.startswith(root + "/")):
            base = base[len(root):] or "/"
        return os.path.normpath(f"{mnt}/{base.strip('/')}/{rel.strip('/')}")
    dirs = {}
    if layout.mode != "v2":
        for key, (mnt, root) in layout.v1.items():
            dirs[key] = place(key, mnt, root)
    if layout.unified:
        dirs[""] = place("", *layout.unified)
    return dirs
