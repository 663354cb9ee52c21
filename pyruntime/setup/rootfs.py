"""The container's filesystem: mounts, /dev, pivot_root, masked and readonly paths.

Every path inside the rootfs is resolved with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
and mounted through /proc/self/fd/N of the resulting O_PATH fd, so a hostile symlink in the
rootfs can never redirect a mount, a /dev/null bind or a /dev/console to the host.
"""
from __future__ import annotations

import errno
import os
import stat

from pyruntime import log
from pyruntime.linux import lsm, syscalls as sc
from pyruntime.setup import mountattr
from pyruntime.errors import ConfigError, RuntimeFailure

_IN_ROOT = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS

# option -> (clear, set) flags
_FLAGS = {
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
# Options applied apart from mount(2)'s flags (mountattr.py).
_SPECIAL = {"tmpcopyup", "idmap", "ridmap"}

DEFAULT_DEVICES = [  # name, major, minor
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
    ("tty", 5, 0),
]
DEFAULT_SYMLINKS = [("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
                    ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr")]


_RO_FLAGS = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC


def remount_bind(target: str, flags: int) -> None:
    """Change a bind mount's flags. The remount must repeat the flags the kernel locked on it
    (nosuid/nodev/noexec inherited in a user namespace), or it fails with EPERM."""
    locked = os.statvfs(target).f_flag & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | flags | locked)


def parse_options(options: list[str]) -> tuple[int, int, list[str]]:
    """-> (flags, propagation flags, data options)."""
    flags, prop, data = 0, 0, []
    for opt in options:
        if opt in _FLAGS:
            clear, set_ = _FLAGS[opt]
            flags = (flags & ~clear) | set_
        elif opt in PROPAGATION:
            prop |= PROPAGATION[opt]
        elif opt in mountattr.RECURSIVE or opt in _SPECIAL or opt.startswith("x-"):
            continue  # x-*: mount(8) keeps these for userspace tools, the kernel never sees them
        else:
            data.append(opt)
    return flags, prop, data


def check_options(m) -> None:
    """Refuse what the runtime would not apply: an option unknown to a bind or cgroup mount
    (whose data the kernel never reads), tmpcopyup off a tmpfs, idmaps off a bind. A new filesystem's other
    options are its data: the kernel checks those."""
    data_unused = m.type in ("bind", "cgroup", "cgroup2") or "bind" in m.options \
        or "rbind" in m.options
    for i, opt in enumerate(m.options):
        if opt in _FLAGS or opt in PROPAGATION or opt in mountattr.RECURSIVE or \
                opt.startswith("x-"):
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
        if data_unused or "=" not in opt and opt.startswith("r") and opt[1:] in _FLAGS:
            raise ConfigError(f"{m.path}.options[{i}]", opt, "is not a mount option")
    if (m.uid_mappings or m.gid_mappings) and not data_unused:
        raise ConfigError(f"{m.path}.uidMappings", m.uid_mappings or m.gid_mappings,
                          "needs a bind mount (idmapped mounts are binds)")


def fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


# ---------------------------------------------------------------- safe paths inside the rootfs

def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH) -> int:
    return sc.openat2(root_fd, path.lstrip("/") or ".", flags, _IN_ROOT)


def path_parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def follow_symlink(target: str, todo: list[str], done: list[str], hops: int, error: str) -> int:
    """One symlink met walking a path inside the root: its target's parts go first in `todo`,
    an absolute target restarts from the root (`done` emptied). Returns the hops so far; past
    40 (the kernel's limit), `error`."""
    hops += 1
    if hops > 40:
        raise RuntimeFailure(error)
    if target.startswith("/"):
        done.clear()
    todo[:0] = path_parts(target)
    return hops


def make_path(root_fd: int, path: str, is_dir: bool = True, mode: int = 0o755) -> int:
    """Create path (and its parents) inside the rootfs; return an O_PATH fd to it.

    Existing components are resolved by openat2 inside the root. A dangling symlink is
    followed by hand, still inside the root, so `/link -> /host/dir` creates
    <rootfs>/host/dir, never the host's."""
    todo = path_parts(path)
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        rel = "/".join(done + [part])
        try:
            os.close(open_in_root(root_fd, rel))
            done.append(part)
            continue
        except FileNotFoundError:
            pass
        parent = open_in_root(root_fd, "/".join(done) or ".")
        try:
            try:
                target = os.readlink(part, dir_fd=parent)
            except OSError:
                target = None
            if target is not None:
                hops = follow_symlink(target, todo, done, hops,
                                      f"cannot create {path!r} in the rootfs: too many symlinks")
                continue
            try:
                if not todo and not is_dir:
                    os.close(os.open(part, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     0o644, dir_fd=parent))
                else:
                    os.mkdir(part, mode, dir_fd=parent)
            except FileExistsError:
                pass  # a racing creator: resolve it again
            done.append(part)
        finally:
            os.close(parent)
    return open_in_root(root_fd, "/".join(done) or ".")


# ---------------------------------------------------------------- mounts

def set_root_propagation(propagation: str) -> None:
    """Keep our mounts from propagating to the host (runc: rslave unless told otherwise)."""
    flag = PROPAGATION.get(propagation) if propagation else None
    if flag is None or propagation in ("shared", "rshared", "unbindable", "runbindable"):
        flag = sc.MS_SLAVE | sc.MS_REC
    sc.mount(None, "/", None, flag | sc.MS_REC)


def bind_rootfs(rootfs: str) -> None:
    sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)


# Filesystems that take an SELinux context= option (linux.mountLabel), as runc labels them.
_LABELLED_FS = {"tmpfs", "mqueue", "devpts", "shm"}


def open_bind_sources(cfg, bundle: str) -> dict[int, int]:
    """Detached copies (open_tree) of the bind mount sources, by mount index, made by the
    runtime before the init enters a user namespace: there the container's root may not be
    allowed to reach a source (a dir only the host's root can enter; runc too opens them
    beforehand). A plain fd would not do: a bind from another mount namespace is refused."""
    fds: dict[int, int] = {}
    try:
        for i, m in enumerate(cfg.mounts):
            if m.type == "bind" or any(o in ("bind", "rbind") for o in m.options):
                source = os.path.join(bundle, m.source)  # an absolute source stays as it is
                rec = sc.AT_RECURSIVE if "rbind" in m.options else 0
                try:
                    fds[i] = sc.open_tree(-100, source, sc.OPEN_TREE_CLONE | rec)  # AT_FDCWD
                except OSError as e:
                    raise RuntimeFailure(f"{m.path}.source: {m.source!r}: "
                                         f"{e.strerror.lower()}") from None
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def mount_all(cfg, bundle: str, root_fd: int, cgroup_paths: dict, cgroup_mode: str,
              source_fds: dict[int, int] | None = None) -> None:
    for i, m in enumerate(cfg.mounts):
        log.debug(f"init: mounting {m.destination} ({m.type or 'bind'} from {m.source!r})")
        try:
            mount_one(m, bundle, root_fd, cgroup_paths, cgroup_mode, cfg.linux.mount_label,
                      (source_fds or {}).get(i))
        except OSError as e:
            raise RuntimeFailure(f"{m.path} (destination {m.destination!r}): mount failed: "
                                 f"{e.strerror}") from None


def mount_one(m, bundle: str, root_fd: int, cgroup_paths: dict, cgroup_mode: str,
              mount_label: str = "", source_fd: int | None = None) -> None:
    flags, prop, data = parse_options(m.options)
    if _is_dev(m):
        flags &= ~sc.MS_RDONLY  # /dev gets its submounts and nodes first: see readonly_dev
    if m.type in ("cgroup", "cgroup2"):
        mount_cgroup(m, root_fd, flags, cgroup_paths, cgroup_mode)
        return _set_recursive(m, root_fd)
    is_bind = bool(flags & sc.MS_BIND) or m.type == "bind"
    if m.type in ("proc", "sysfs") and not is_bind:
        _refuse_unless_ordinary_dir(m, root_fd)
    source = m.source
    if is_bind and source_fd is not None:
        flags |= sc.MS_BIND
        source = None  # a detached tree made before the user namespace: open_bind_sources
        src_is_dir = stat.S_ISDIR(os.fstat(source_fd).st_mode)
    elif is_bind:
        flags |= sc.MS_BIND
        if not os.path.isabs(source):
            source = os.path.join(bundle, source)
        try:
            if m.idmap_fd >= 0:  # opened by create: the init may not reach the source
                src_is_dir = stat.S_ISDIR(os.fstat(m.idmap_fd).st_mode)
            else:
                src_is_dir = os.path.isdir(source)
                os.stat(source)
        except OSError as e:
            raise RuntimeFailure(f"{m.path}.source: {m.source!r}: {e.strerror.lower()}") from None
    else:
        src_is_dir = True
    fd = make_path(root_fd, m.destination, is_dir=src_is_dir)
    try:
        target = fdpath(fd)
        if is_bind:
            # a detached tree: idmapped (create made it), or taken before the user namespace
            detached = m.idmap_fd if m.idmap_fd >= 0 else source_fd
            if detached is not None and detached >= 0:
                sc.move_mount(detached, "", fd, "",
                              sc.MOVE_MOUNT_F_EMPTY_PATH | sc.MOVE_MOUNT_T_EMPTY_PATH)
            else:
                sc.mount(source, target, None, sc.MS_BIND | (flags & sc.MS_REC))
            remount = flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
            if remount:
                # A bind ignores the other flags: they take a remount of the new mount.
                os.close(fd)
                fd = make_path(root_fd, m.destination, is_dir=src_is_dir)
                remount_bind(fdpath(fd), remount)
        else:
            context = lsm.mount_context(mount_label)
            if context and m.type in _LABELLED_FS:
                data = data + [context]
            below = open_in_root(root_fd, m.destination, os.O_RDONLY | os.O_DIRECTORY) \
                if "tmpcopyup" in m.options else -1
            # a read-only tmpcopyup tmpfs is filled first, then made read-only
            ro_later = sc.MS_RDONLY if below >= 0 else 0
            try:
                sc.mount(m.source or m.type, target, m.type, flags & ~(sc.MS_REMOUNT | ro_later),
                         ",".join(data) or None)
            except OSError as e:
                if e.errno == 22 and data:  # EINVAL: most likely an option the fs does not know
                    raise RuntimeFailure(f"{m.path}.options: {','.join(data)!r}: {m.type} refused "
                                         "these options (Invalid argument)") from None
                if not isinstance(e, PermissionError) or m.type != "sysfs":
                    raise
                # sysfs can't be mounted without owning the network namespace: bind the host's.
                sc.mount("/sys", target, None, sc.MS_BIND | sc.MS_REC)
                sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | (flags & sc.MS_RDONLY))
            else:
                if below >= 0:
                    _copy_up(below, root_fd, m.destination, flags & ro_later)
            finally:
                if below >= 0:
                    os.close(below)
        if prop:
            os.close(fd)
            fd = open_in_root(root_fd, m.destination)
            sc.mount(None, fdpath(fd), None, prop)
    finally:
        os.close(fd)
    _set_recursive(m, root_fd)


def _set_recursive(m, root_fd: int) -> None:
    attrs = mountattr.recursive(m.options)
    if attrs:
        fd = open_in_root(root_fd, m.destination)  # the new mount, not what it covers
        try:
            mountattr.apply_recursive(fd, attrs)
        finally:
            os.close(fd)


def _copy_up(below: int, root_fd: int, destination: str, rdonly: int) -> None:
    """tmpcopyup: what the target held before the tmpfs covered it (`below`) goes into it."""
    fresh = open_in_root(root_fd, destination, os.O_RDONLY | os.O_DIRECTORY)
    try:
        mountattr.copy_up(below, fresh)
        if rdonly:
            mountattr.apply_recursive(fresh, (sc.MOUNT_ATTR_RDONLY, 0))
    finally:
        os.close(fresh)


def _refuse_unless_ordinary_dir(m, root_fd: int) -> None:
    """proc and sysfs go only on a real directory (or where nothing is yet): a symlink there
    would move the kernel's views elsewhere in the rootfs (runc refuses the same way)."""
    parent, name = os.path.split(m.destination.rstrip("/"))
    if not name:
        return
    try:
        pfd = open_in_root(root_fd, parent)
    except (FileNotFoundError, NotADirectoryError):
        return  # make_path creates it, as a directory
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    finally:
        os.close(pfd)
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise ConfigError(f"{m.path}.destination", m.destination, f"is {kind} in the rootfs: "
                          f"filesystem {m.type!r} must be mounted on ordinary directory")


def mount_cgroup(m, root_fd: int, flags: int, cgroup_paths: dict, mode: str) -> None:
    """Give the container a view of its own cgroups: cgroup2 where unified, else a tmpfs with
    a bind of the container's dir in each v1 hierarchy (and, on a hybrid host, of its cgroup2
    dir at "unified", where the host mounts it: controllers v1 does not hold live there)."""
    fd = make_path(root_fd, m.destination)
    try:
        if mode == "v2":
            try:
                sc.mount("cgroup2", fdpath(fd), "cgroup2", flags)  # needs a cgroup namespace
            except PermissionError:
                sc.mount(cgroup_paths[""], fdpath(fd), None, sc.MS_BIND | sc.MS_REC)
            return
        sc.mount("tmpfs", fdpath(fd), "tmpfs", flags & ~sc.MS_RDONLY, "mode=755")
    finally:
        os.close(fd)
    for controller, path in sorted(cgroup_paths.items()):
        name = _hierarchy_name(controller) or "unified"
        dest = os.path.join(m.destination, name)
        sub = make_path(root_fd, dest)
        try:
            sc.mount(path, fdpath(sub), None, sc.MS_BIND | sc.MS_REC)
        finally:
            os.close(sub)
        sub = open_in_root(root_fd, dest)  # the new mount, not the dir under it
        try:
            sc.mount(None, fdpath(sub), None, sc.MS_BIND | sc.MS_REMOUNT | (flags & _RO_FLAGS))
        finally:
            os.close(sub)
    if flags & sc.MS_RDONLY:
        fd = open_in_root(root_fd, m.destination)
        try:
            remount_bind(fdpath(fd), flags & _RO_FLAGS)
        except OSError:
            pass
        finally:
            os.close(fd)


def _is_dev(m) -> bool:
    return os.path.normpath(m.destination) == "/dev"


_PER_MOUNT = (sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME |
              sc.MS_NODIRATIME | sc.MS_RELATIME | sc.MS_STRICTATIME)


def readonly_dev(cfg) -> None:
    """A read-only /dev mount is made read-only only now, after the root switch: its
    submounts (/dev/pts, /dev/shm, ...), device nodes and console went in first (runc's
    order)."""
    for m in cfg.mounts:
        if _is_dev(m):
            flags = parse_options(m.options)[0]
            if flags & sc.MS_RDONLY:
                remount_bind("/dev", flags & _PER_MOUNT)


def _hierarchy_name(controller: str) -> str:
    return controller.replace("name=", "")


# ---------------------------------------------------------------- /dev

def dev_is_tmpfs(cfg) -> bool:
    """Whether the runtime owns /dev (a fresh tmpfs) and must fill it in."""
    for m in cfg.mounts:
        if m.destination.rstrip("/") == "/dev":
            return m.type == "tmpfs"
    return False


def create_devices(cfg, root_fd: int, in_user_ns: bool) -> None:
    if dev_is_tmpfs(cfg):
        for name, major, minor in DEFAULT_DEVICES:
            _make_device(root_fd, f"/dev/{name}", stat.S_IFCHR, major, minor, 0o666, 0, 0, in_user_ns)
        dev_fd = open_in_root(root_fd, "/dev", os.O_PATH | os.O_DIRECTORY)
        try:
            for target, name in DEFAULT_SYMLINKS + [("pts/ptmx", "ptmx")]:
                try:
                    os.symlink(target, name, dir_fd=dev_fd)
                except FileExistsError:
                    pass
            if os.path.exists("/proc/kcore"):
                try:
                    os.symlink("/proc/kcore", "core", dir_fd=dev_fd)
                except FileExistsError:
                    pass
        finally:
            os.close(dev_fd)
    for d in cfg.linux.devices:
        kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[d.type]
        mode = d.file_mode if d.file_mode is not None else 0o666
        _make_device(root_fd, d.path, kind, d.major, d.minor, mode, d.uid or 0, d.gid or 0, in_user_ns)


def _make_device(root_fd, path, kind, major, minor, mode, uid, gid, in_user_ns) -> None:
    parent_path, name = os.path.split(path.rstrip("/"))
    parent = make_path(root_fd, parent_path)
    try:
        try:
            os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise RuntimeFailure(f"linux.devices: {path}: a directory is in the way") from None
        if in_user_ns and kind != stat.S_IFIFO:
            # mknod is not allowed in a user namespace: bind the host's node instead.
            os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                             dir_fd=parent))
            fd = sc.openat2(parent, name, os.O_PATH | os.O_NOFOLLOW, _IN_ROOT)
            try:
                sc.mount(path, fdpath(fd), None, sc.MS_BIND)
            finally:
                os.close(fd)
            return
        old = os.umask(0)
        try:
            os.mknod(name, kind | (mode & 0o7777), os.makedev(major, minor), dir_fd=parent)
        finally:
            os.umask(old)
        os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
        os.chmod(name, mode & 0o7777, dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)


# ---------------------------------------------------------------- switching root

def reopen_dev_null() -> None:
    """stdio on the host's /dev/null becomes the container's /dev/null, as runc does: a file
    on a mount outside the container (Docker gives `-d` containers the host's /dev/null as
    stdin) ties the process to the host's mount table, and CRIU cannot dump it."""
    try:
        fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return  # no /dev/null of the container's own: leave stdio as it is
    try:
        null = os.fstat(fd)
        if not stat.S_ISCHR(null.st_mode):
            return
        for n in (0, 1, 2):
            try:
                st = os.fstat(n)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev:
                os.dup2(fd, n)
    finally:
        os.close(fd)


def pivot(rootfs: str) -> None:
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new_root)
        sc.pivot_root(".", ".")
        # The old root now sits on top of the new one at "."; detach it without letting the
        # unmount propagate to the host.
        os.fchdir(old_root)
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old_root)
        os.close(new_root)


def move_root(rootfs: str) -> None:
    """--no-pivot: for ramdisk roots where pivot_root is impossible.

    The host's mounts stay in our mount namespace under the chroot. The kernel lets a process
    mount a new procfs or sysfs only where a full, uncovered one is already mounted in its
    namespace: the host's bare /proc would be that one (and a container with CAP_SYS_ADMIN in
    a user namespace could then mount an unmasked procfs), so full proc and sysfs mounts
    outside the rootfs go first, as runc does."""
    for mnt in _full_proc_and_sysfs_outside(rootfs):
        try:
            sc.mount(None, mnt, None, sc.MS_SLAVE | sc.MS_REC)  # no unmount reaches the host
            sc.umount2(mnt, sc.MNT_DETACH)
        except FileNotFoundError:
            continue  # under one detached already
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):
                raise
            sc.mount("tmpfs", mnt, "tmpfs", 0)  # cannot unmount: cover it
    os.chdir(rootfs)
    sc.mount(rootfs, "/", None, sc.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def _full_proc_and_sysfs_outside(rootfs: str) -> list[str]:
    found = []
    prefix = rootfs.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, tail = line.partition(" - ")
            fields, fstype = fields.split(), tail.split()[0]
            root, mnt = fields[3], _unescape(fields[4])
            if root == "/" and fstype in ("proc", "sysfs") and \
                    not (mnt + "/").startswith(prefix):
                found.append(mnt)
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


def set_rootfs_propagation(propagation: str) -> None:
    if propagation:
        sc.mount(None, "/", None, PROPAGATION[propagation])


def readonly_root() -> None:
    remount_bind("/", sc.MS_RDONLY)


def _for_each_in_root(paths: list[str], field: str, action) -> None:
    """action(path, O_PATH fd, root fd) for each path that exists inside the new root
    (resolved in it); a mount error names the config field and the path."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path in paths:
            try:
                fd = open_in_root(root, path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                action(path, fd, root)
            except OSError as e:
                raise RuntimeFailure(f"{field}: {path}: {e.strerror}") from None
            finally:
                os.close(fd)
    finally:
        os.close(root)


def mask_paths(paths: list[str]) -> None:
    if not paths:
        return
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        devnull = open_devnull(root)
    finally:
        os.close(root)

    def mask(_path, fd, _root):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            sc.mount("tmpfs", fdpath(fd), "tmpfs", sc.MS_RDONLY)
        else:
            sc.mount(fdpath(devnull), fdpath(fd), None, sc.MS_BIND)
    try:
        _for_each_in_root(paths, "linux.maskedPaths", mask)
    finally:
        os.close(devnull)


def readonly_paths(paths: list[str]) -> None:
    def make_readonly(path, fd, root):
        sc.mount(fdpath(fd), fdpath(fd), None, sc.MS_BIND | sc.MS_REC)
        bind = open_in_root(root, path)  # fd still names what is under the new bind
        try:
            remount_bind(fdpath(bind), sc.MS_RDONLY | sc.MS_REC)
        finally:
            os.close(bind)
    _for_each_in_root(paths, "linux.readonlyPaths", make_readonly)


def open_devnull(root_fd: int) -> int:
    """An O_PATH fd of the container's /dev/null, checked to really be the null device: a
    rootfs that makes it a symlink or another file must not get that bound over a masked path."""
    try:
        fd = sc.openat2(root_fd, "dev/null", os.O_PATH, _IN_ROOT | sc.RESOLVE_NO_SYMLINKS)
    except OSError as e:
        raise RuntimeFailure(f"linux.maskedPaths: /dev/null in the container: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise RuntimeFailure("linux.maskedPaths: /dev/null in the container is not the null device")
    return fd
