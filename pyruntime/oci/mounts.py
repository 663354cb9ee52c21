"""A mount's options: which are mount(2) flags, propagation, recursive attributes
(mount_setattr(2)) or filesystem data, and which the runtime refuses (config.json's checks).

The tables are the config side of setup/rootfs.py and setup/mountattr.py, which apply them; they
live here so that reading a config needs nothing from the code that sets a container up."""
from __future__ import annotations

from pyruntime import log
from pyruntime.linux import syscalls as sc
from pyruntime.errors import ConfigError

# option -> (clear, set) flags
FLAGS = {
    "defaults": (0, 0), "ro": (0, sc.MS_RDONLY), "rw": (sc.MS_RDONLY, 0),
    "suid": (sc.MS_NOSUID, 0), "nosuid": (0, sc.MS_NOSUID), "dev": (sc.MS_NODEV, 0),
    "nodev": (0, sc.MS_NODEV), "exec": (sc.MS_NOEXEC, 0), "noexec": (0, sc.MS_NOEXEC),
    "sync": (0, sc.MS_SYNCHRONOUS), "async": (sc.MS_SYNCHRONOUS, 0),
    "dirsync": (0, sc.MS_DIRSYNC), "remount": (0, sc.MS_REMOUNT), "mand": (0, sc.MS_MANDLOCK),
    "nomand": (sc.MS_MANDLOCK, 0), "atime": (sc.MS_NOATIME, 0), "noatime": (0, sc.MS_NOATIME),
    "diratime": (sc.MS_NODIRATIME, 0), "nodiratime": (0, sc.MS_NODIRATIME),
    "bind": (0, sc.MS_BIND), "rbind": (0, sc.MS_BIND | sc.MS_REC),
    "relatime": (0, sc.MS_RELATIME), "norelatime": (sc.MS_RELATIME, 0),
    "strictatime": (0, sc.MS_STRICTATIME), "nostrictatime": (sc.MS_STRICTATIME, 0),
    "lazytime": (0, sc.MS_LAZYTIME), "nolazytime": (sc.MS_LAZYTIME, 0),
    "nosymfollow": (0, sc.MS_NOSYMFOLLOW), "symfollow": (sc.MS_NOSYMFOLLOW, 0),
    "silent": (0, sc.MS_SILENT), "loud": (sc.MS_SILENT, 0),
    "iversion": (0, sc.MS_I_VERSION), "noiversion": (sc.MS_I_VERSION, 0),
}
PROPAGATION = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
_ATIME = sc.MOUNT_ATTR__ATIME
# option -> (attributes to set, attributes to clear). The atime modes are one field, so each
# atime option clears the whole field; "back to the default" (ratime, rnorelatime,
# rnostrictatime) is relatime, the kernel's default for a new mount.
RECURSIVE = {
    "rro": (sc.MOUNT_ATTR_RDONLY, 0), "rrw": (0, sc.MOUNT_ATTR_RDONLY),
    "rnosuid": (sc.MOUNT_ATTR_NOSUID, 0), "rsuid": (0, sc.MOUNT_ATTR_NOSUID),
    "rnodev": (sc.MOUNT_ATTR_NODEV, 0), "rdev": (0, sc.MOUNT_ATTR_NODEV),
    "rnoexec": (sc.MOUNT_ATTR_NOEXEC, 0), "rexec": (0, sc.MOUNT_ATTR_NOEXEC),
    "rnosymfollow": (sc.MOUNT_ATTR_NOSYMFOLLOW, 0), "rsymfollow": (0, sc.MOUNT_ATTR_NOSYMFOLLOW),
    "rnodiratime": (sc.MOUNT_ATTR_NODIRATIME, 0), "rdiratime": (0, sc.MOUNT_ATTR_NODIRATIME),
    "rnoatime": (sc.MOUNT_ATTR_NOATIME, _ATIME), "rstrictatime": (sc.MOUNT_ATTR_STRICTATIME, _ATIME),
    "rrelatime": (sc.MOUNT_ATTR_RELATIME, _ATIME), "ratime": (sc.MOUNT_ATTR_RELATIME, _ATIME),
    "rnorelatime": (sc.MOUNT_ATTR_RELATIME, _ATIME),
    "rnostrictatime": (sc.MOUNT_ATTR_RELATIME, _ATIME),
}
# Options applied apart from mount(2)'s flags (setup/mountattr.py).
SPECIAL = {"tmpcopyup", "idmap", "ridmap"}


def parse_options(options: list[str]) -> tuple[int, int, list[str]]:
    """-> (flags, propagation flags, data options)."""
    flags, prop, data = 0, 0, []
    for opt in options:
        if opt in FLAGS:
            clear, set_ = FLAGS[opt]
            flags = (flags & ~clear) | set_
        elif opt in PROPAGATION:
            prop |= PROPAGATION[opt]
        elif opt in RECURSIVE or opt in SPECIAL or opt.startswith("x-"):
            continue  # x-*: mount(8) keeps these for userspace tools, the kernel never sees them
        else:
            data.append(opt)
    return flags, prop, data


def recursive(options: list[str]) -> tuple[int, int] | None:
    """(attr_set, attr_clr) of the recursive options in `options`, the last one winning, or
    None when there are none."""
    set_, clr, seen = 0, 0, False
    for opt in options:
        if opt in RECURSIVE:
            seen = True
            s, c = RECURSIVE[opt]
            set_, clr = (set_ & ~c) | s, (clr & ~s) | c
    if clr & _ATIME:  # the kernel takes the atime field cleared whole or not at all
        clr |= _ATIME
    return (set_, clr) if seen else None


def is_bind(m) -> bool:
    return m.type == "bind" or "bind" in m.options or "rbind" in m.options


def check_options(m) -> None:
    """Refuse what the runtime would not apply: an option unknown to a bind or cgroup mount
    (whose data the kernel never reads), tmpcopyup off a tmpfs, idmaps off a bind. A new
    filesystem's other options are its data: the kernel checks those."""
    data_unused = m.type in ("cgroup", "cgroup2") or is_bind(m)
    for i, opt in enumerate(m.options):
        if opt in FLAGS or opt in PROPAGATION or opt in RECURSIVE or opt.startswith("x-"):
            continue
        if opt == "tmpcopyup":
            if m.type != "tmpfs":
                raise ConfigError(f"{m.path}.options[{i}]", opt, "needs a tmpfs mount")
            continue
        if opt in ("idmap", "ridmap"):
            if not data_unused or m.type in ("cgroup", "cgroup2"):
                raise ConfigError(f"{m.path}.options[{i}]", opt, "needs a bind mount")
            continue
        if data_unused and "=" in opt:
            # Filesystem data (often copied from a tmpfs entry): a bind or cgroup mount passes
            # none to the kernel, which would ignore it anyway, and runc lets it through.
            log.warning(f"config.json: {m.path}.options[{i}]: {opt!r} ignored: a "
                        f"{'cgroup' if m.type in ('cgroup', 'cgroup2') else 'bind'} mount "
                        "takes no filesystem data")
            continue
        if data_unused or "=" not in opt and opt.startswith("r") and opt[1:] in FLAGS:
            raise ConfigError(f"{m.path}.options[{i}]", opt, "is not a mount option")
    if (m.uid_mappings or m.gid_mappings) and not data_unused:
        raise ConfigError(f"{m.path}.uidMappings", m.uid_mappings or m.gid_mappings,
                          "needs a bind mount (idmapped mounts are binds)")
