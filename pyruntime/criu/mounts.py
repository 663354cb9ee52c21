"""What CRIU must be told about the container's mounts: the ones whose source lives outside the
container (bind mounts, the v1 cgroup binds, /dev/null over masked files) are "external": the
dump records them by a key (the mountpoint inside the rootfs) and the restore maps each key
back to a host source. Keys are computed the same way on both sides, from config.json."""
from __future__ import annotations

import os

from pyruntime.oci.mounts import parse_options
from pyruntime.setup.rootfs import follow_symlink, path_parts
from pyruntime.linux import syscalls as sc


def in_root(root: str, path: str) -> str:
    """path with its symlinks resolved inside root (never above it), as an absolute path
    relative to root: the mountpoint the init really used for a destination."""
    todo = path_parts(path)
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        try:
            target = os.readlink(os.path.join(root, *done, part))
        except OSError:  # not a symlink, or not there (yet): taken as it is
            done.append(part)
            continue
        hops = follow_symlink(target, todo, done, hops,
                              f"{path}: too many levels of symbolic links in the rootfs")
    return "/" + "/".join(done)


def is_bind(m) -> bool:
    return m.type == "bind" or bool(parse_options(m.options)[0] & sc.MS_BIND)


def external(cfg, bundle: str, cgroup_paths: dict, cgroup_mode: str) -> list[tuple[str, str]]:
    """(key, host source) of each external mount, in config order."""
    out = []
    cgroupns = cfg.linux.namespace("cgroup") is not None
    for m in cfg.mounts:
        if m.type in ("cgroup", "cgroup2"):
            if cgroup_mode == "v2":
                if not cgroupns:  # rootfs.mount_cgroup binds the container's dir
                    out.append((in_root(cfg.root_path, m.destination), cgroup_paths[""]))
                continue
            # v1: a tmpfs (dumped with its contents) holding a bind per hierarchy
            for controller, path in sorted(cgroup_paths.items()):
                name = controller.replace("name=", "") or "unified"
                dest = os.path.join(m.destination, name)
                out.append((in_root(cfg.root_path, dest), path))
        elif is_bind(m):
            # mount(2) followed a symlink in the source: CRIU must be given where it led
            src = os.path.realpath(os.path.join(bundle, m.source))
            out.append((in_root(cfg.root_path, m.destination), src))
    if cfg.linux.namespace("user") is not None:  # device nodes are binds of the host's there
        out += [(in_root(cfg.root_path, d.path), d.path) for d in cfg.linux.devices]
    return out
