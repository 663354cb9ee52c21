"""Rootless mode: what changes when the runtime runs without the host's root (as runc's).

`--rootless auto` (the default) means rootless when the effective uid is not 0, or when it is
0 inside a user namespace whose root is not the host's root. Rootless changes three things:
the default `--root` ($XDG_RUNTIME_DIR/pyruntime), the cgroups (only those the user was
delegated; none at all is fine when the config sets no resources) and the device cgroup rules
(none: the kernel refuses them unprivileged, and the user namespace already stops mknod).
Kept small: every command pays for its import.
"""
from __future__ import annotations

import os

from pyruntime.errors import RuntimeFailure

HOST_ROOT_MAP = "0 0 4294967295"


def resolve(flag: str | bool) -> bool:
    """The --rootless flag's value as a decision."""
    if isinstance(flag, bool):
        return flag
    value = flag.lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    if value != "auto":
        raise RuntimeFailure(f"invalid --rootless value {flag!r}: want true, false or auto")
    return os.geteuid() != 0 or in_foreign_userns()


def in_foreign_userns(uid_map: str = "/proc/self/uid_map") -> bool:
    """True inside a user namespace whose root is not the host's root (the initial user
    namespace maps the whole id range onto itself)."""
    try:
        with open(uid_map) as f:
            lines = f.read().split("\n")
    except OSError:
        return False
    lines = [" ".join(ln.split()) for ln in lines if ln.strip()]
    return lines != [HOST_ROOT_MAP]


def default_root(environ=os.environ) -> str:
    """runc's rule: $XDG_RUNTIME_DIR when it is set and we are not the host's root (root in
    a user namespace counts as not, unless $USER says root)."""
    xdg = environ.get("XDG_RUNTIME_DIR")
    if xdg and (os.geteuid() != 0 or (in_foreign_userns() and environ.get("USER") != "root")):
        return os.path.join(xdg, "pyruntime")
    from pyruntime.lifecycle.layout import DEFAULT_ROOT
    return DEFAULT_ROOT


def check_config(cfg) -> None:
    """What rootless mode can tell is impossible before anything is made."""
    from pyruntime.errors import ConfigError
    from pyruntime.linux.idmap import can_write_directly
    from pyruntime.setup.mountattr import wants_idmap
    linux, proc = cfg.linux, cfg.process
    if linux.namespace("user") is None and os.geteuid() != 0:
        raise ConfigError("linux.namespaces", [ns.type for ns in linux.namespaces],
                          "has no user namespace: a rootless container needs one (with the "
                          "caller's ids in linux.uidMappings/gidMappings)")
    for i, m in enumerate(cfg.mounts):
        if wants_idmap(m):
            raise ConfigError(f"mounts[{i}]", m.destination, "is an idmapped mount: making one "
                              "needs the host's root, which rootless mode has not")
    if linux.net_devices:
        raise ConfigError("linux.netDevices", list(linux.net_devices), "cannot be moved in "
                          "rootless mode: that needs CAP_NET_ADMIN on the host")
    if linux.intel_rdt is not None:
        raise ConfigError("linux.intelRdt", linux.intel_rdt, "needs the host's root (resctrl): not "
                          "available in rootless mode")
    gids = proc.user.additional_gids if proc and proc.user else None
    if gids and linux.namespace("user") and linux.gid_mappings and \
            can_write_directly(linux.gid_mappings, os.getegid()):
        raise ConfigError("process.user.additionalGids", gids,
                          "cannot be set: a gid map of the caller's own gid alone denies "
                          "setgroups (map more gids, through newgidmap, to use them)")


# ---------------------------------------------------------------- cgroups

def without_unset(resources: dict | None) -> dict:
    """linux.resources as rootless mode applies it: no device rules, and none of the zero or
    empty values callers send for "no limit" (runc's Go fields treat 0 as unset too), so that
    only real limits ask for a delegated cgroup."""
    def prune(v):
        if isinstance(v, dict):
            out = {k: p for k, p in ((k, prune(x)) for k, x in v.items()) if p is not None}
            return out or None
        if isinstance(v, list):  # entries stay whole: a device's minor 0 is not "unset"
            return [x for x in v if prune(x) is not None] or None
        return None if v in (None, False, 0, "") else v
    return prune({k: v for k, v in (resources or {}).items() if k != "devices"}) or {}


def pid_namespace_members(init_pid: int, proc: str = "/proc") -> list[int]:
    """The processes of a container that has no cgroup: those in its init's pid namespace
    (just the init when it shares the host's: nothing else tells its processes apart)."""
    try:
        ns = os.readlink(f"{proc}/{init_pid}/ns/pid")
        if ns == os.readlink(f"{proc}/self/ns/pid"):
            return [init_pid]
    except OSError:
        return [init_pid]
    out = []
    for name in os.listdir(proc):
        if name.isdigit():
            try:
                if os.readlink(f"{proc}/{name}/ns/pid") == ns:
                    out.append(int(name))
            except OSError:
                pass
    return sorted(out)
