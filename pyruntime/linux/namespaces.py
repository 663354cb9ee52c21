"""Namespaces: the config's types, joining one by path (type-checked), creating the rest."""
from __future__ import annotations

import os

from pyruntime import log
from pyruntime.linux import syscalls as sc
from pyruntime.linux.syscalls import SYS, Sys
from pyruntime.errors import ConfigError, RuntimeFailure

FLAGS = {
    "user": sc.CLONE_NEWUSER, "pid": sc.CLONE_NEWPID, "network": sc.CLONE_NEWNET,
    "mount": sc.CLONE_NEWNS, "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS,
    "cgroup": sc.CLONE_NEWCGROUP, "time": sc.CLONE_NEWTIME,
}
PROC_NAME = {"user": "user", "pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc",
             "uts": "uts", "cgroup": "cgroup", "time": "time"}
# Joining order: the user namespace first (it owns the others), mount last (after it, the
# other paths may no longer resolve).
JOIN_ORDER = ("user", "pid", "network", "ipc", "uts", "cgroup", "time", "mount")
NS_GET_NSTYPE = 0xB703


def open_paths(linux, sys: Sys = SYS) -> list[tuple[str, int]]:
    """Open every namespace given by path and check it is of the type the config says."""
    opened = []
    try:
        for i, ns in enumerate(linux.namespaces):
            if not ns.path:
                continue
            try:
                fd = sys.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise ConfigError(f"linux.namespaces[{i}].path", ns.path,
                                  f"cannot be opened: {e.strerror}") from None
            opened.append((ns.type, fd))
            try:
                kind = sys.ioctl(fd, NS_GET_NSTYPE)
            except OSError:
                kind = None
            if kind != FLAGS[ns.type]:
                raise ConfigError(f"linux.namespaces[{i}].path", ns.path,
                                  f"is not a {ns.type} namespace")
    except BaseException:
        for _, fd in opened:
            sys.close(fd)
        raise
    opened.sort(key=lambda t: JOIN_ORDER.index(t[0]))
    return opened


def join(opened: list[tuple[str, int]], sys: Sys = SYS) -> None:
    for kind, fd in opened:
        try:
            sys.setns(fd, FLAGS[kind])
        except OSError as e:
            raise RuntimeFailure(f"joining the {kind} namespace: {e.strerror}",
                                 errno=e.errno) from None
        sys.close(fd)


def enter(linux, opened: list[tuple[str, int]], map_ids, sys: Sys = SYS) -> None:
    """Join the namespaces given by path, then create the rest: a new user namespace first and
    alone (map_ids() returns once the parent has written its id maps; we are its root after),
    then the others at once, so that it owns them."""
    join(opened, sys)
    create_new(linux, map_ids, sys)


def create_new(linux, map_ids, sys: Sys = SYS, skip: int = 0) -> None:
    """The namespaces listed without a path (but those in `skip`): see enter()."""
    if new_flags(linux, ("user",)):
        sys.unshare(sc.CLONE_NEWUSER)
        map_ids()
        sys.setresgid(0, 0, 0)
        sys.setresuid(0, 0, 0)
    flags = new_flags(linux) & ~sc.CLONE_NEWUSER & ~skip
    if flags:
        log.debug(f"nsexec container setup: unsharing namespaces (flags {flags:#x})", stage=1)
        sys.unshare(flags)
    if linux.time_offsets and flags & sc.CLONE_NEWTIME:
        write_time_offsets(linux.time_offsets)


def new_flags(linux, kinds=None) -> int:
    """The clone flags of the namespaces to create (listed without a path)."""
    flags = 0
    for ns in linux.namespaces:
        if not ns.path and (kinds is None or ns.type in kinds):
            flags |= FLAGS[ns.type]
    return flags


def write_id_maps(pid: int, uid_mappings: list[dict], gid_mappings: list[dict]) -> None:
    def fmt(maps):
        return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)
    try:
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(fmt(uid_mappings))
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(fmt(gid_mappings))
    except OSError as e:
        raise RuntimeFailure("linux.uidMappings/gidMappings: cannot write the id maps: "
                             f"{e.strerror}",
                             errno=e.errno) from None


def write_time_offsets(offsets: dict) -> None:
    lines = []
    for clock, off in offsets.items():
        lines.append(f"{clock} {int(off.get('secs', 0))} {int(off.get('nanosecs', 0))}\n")
    try:
        with open("/proc/self/timens_offsets", "w") as f:
            f.write("".join(lines))
    except OSError as e:
        raise RuntimeFailure(f"linux.timeOffsets: cannot set the offsets: {e.strerror}",
                             errno=e.errno) from None
