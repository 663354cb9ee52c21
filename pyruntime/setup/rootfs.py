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
from pyruntime.linux.syscalls import SYS, Sys
from pyruntime.oci.mounts import PROPAGATION, parse_options, recursive
from pyruntime.errors import ConfigError, RuntimeFailure

_IN_ROOT = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS

DEFAULT_DEVICES = [  # name, major, minor
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
    ("tty", 5, 0),
]
DEFAULT_SYMLINKS = [("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
                    ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr")]


_RO_FLAGS = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC


def remount_bind(target: str, flags: int, sys: Sys = SYS) -> None:
    """Change a bind mount's flags. The remount must repeat the flags the kernel locked on it
    (nosuid/nodev/noexec inherited in a user namespace), or it fails with EPERM."""
    locked = sys.statvfs(target).f_flag & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    sys.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | flags | locked)


def fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def magic_link(fd: int, sys: Sys = SYS) -> tuple[int, str]:
    """Where to open again the file an O_PATH fd refers to (the init's exec.fifo, in the
    container's root), as (dir_fd, path) for os.open; the caller closes dir_fd (unless -1).
    /proc/self/fd/N when that names that very file; otherwise (a config may mount no proc at
    /proc, which crun runs and runc fails on, and /proc then holds only what the rootfs has
    there) the same link in a proc instance of our own that is never attached anywhere."""
    want = sys.fstat(fd)
    try:
        have = sys.stat(fdpath(fd))
        if (have.st_dev, have.st_ino) == (want.st_dev, want.st_ino):
            return -1, fdpath(fd)
    except OSError:
        pass
    return own_proc("to reopen exec.fifo through", sys), f"self/fd/{fd}"


def proc_mounted(mounts) -> bool:
    """Whether the config mounts a proc at /proc, whose /proc/self/fd/N are the kernel's links.
    Without one (crun runs such a config, runc fails), /proc holds whatever the rootfs put
    there, never to be followed: the mounts go by fds, sysctls through a proc of our own."""
    return any(m.type == "proc" and os.path.normpath("/" + m.destination.lstrip("/")) == "/proc"
               for m in mounts)


def own_proc(why: str, sys: Sys = SYS) -> int:
    """A proc instance of the init's own, attached nowhere (its fd), for a config that
    mounts none at /proc."""
    try:
        return detached_mount(sys.fsopen("proc"), "proc",
                              sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, [], sys)
    except OSError as e:
        raise RuntimeFailure(f"mounts: no proc is mounted at /proc, and the init cannot make "
                             f"one of its own {why}: {e.strerror}", errno=e.errno) from None


def attach(tree: int, target_fd: int, sys: Sys = SYS) -> None:
    """Move the detached mount `tree` (closed here) onto the file or dir target_fd names:
    a mount with neither path through /proc."""
    try:
        sys.move_mount(tree, "", target_fd, "",
                       sc.MOVE_MOUNT_F_EMPTY_PATH | sc.MOVE_MOUNT_T_EMPTY_PATH)
    finally:
        sys.close(tree)


# ---------------------------------------------------------------- safe paths inside the rootfs

def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH, sys: Sys = SYS) -> int:
    return sys.openat2(root_fd, path.lstrip("/") or ".", flags, _IN_ROOT)


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


def make_path(root_fd: int, path: str, is_dir: bool = True, mode: int = 0o755,
              sys: Sys = SYS) -> int:
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
            sys.close(open_in_root(root_fd, rel, sys=sys))
            done.append(part)
            continue
        except FileNotFoundError:
            pass
        parent = open_in_root(root_fd, "/".join(done) or ".", sys=sys)
        try:
            try:
                target = sys.readlink(part, dir_fd=parent)
            except OSError:
                target = None
            if target is not None:
                hops = follow_symlink(target, todo, done, hops,
                                      f"cannot create {path!r} in the rootfs: too many symlinks")
                continue
            try:
                if not todo and not is_dir:
                    sys.close(sys.open(part, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW |
                                       os.O_CLOEXEC, 0o644, dir_fd=parent))
                else:
                    sys.mkdir(part, mode, dir_fd=parent)
            except FileExistsError:
                pass  # a racing creator: resolve it again
            done.append(part)
        finally:
            sys.close(parent)
    return open_in_root(root_fd, "/".join(done) or ".", sys=sys)


# ---------------------------------------------------------------- mounts

def set_root_propagation(propagation: str, sys: Sys = SYS) -> None:
    """Keep our mounts from propagating to the host (runc: rslave unless told otherwise)."""
    flag = PROPAGATION.get(propagation) if propagation else None
    if flag is None or propagation in ("shared", "rshared", "unbindable", "runbindable"):
        flag = sc.MS_SLAVE | sc.MS_REC
    sys.mount(None, "/", None, flag | sc.MS_REC)


def bind_rootfs(rootfs: str, sys: Sys = SYS) -> None:
    sys.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)


# Filesystems that take an SELinux context= option (linux.mountLabel), as runc labels them.
_LABELLED_FS = {"tmpfs", "mqueue", "devpts", "shm"}


def open_bind_sources(cfg, bundle: str, sys: Sys = SYS) -> dict[int, int]:
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
                    fds[i] = sys.open_tree(-100, source, sc.OPEN_TREE_CLONE | rec)  # AT_FDCWD
                except OSError as e:
                    raise RuntimeFailure(f"{m.path}.source: {m.source!r}: "
                                         f"{e.strerror.lower()}", errno=e.errno) from None
    except BaseException:
        for fd in fds.values():
            sys.close(fd)
        raise
    return fds


def mount_all(cfg, bundle: str, root_fd: int, cgroup_paths: dict, cgroup_mode: str,
              source_fds: dict[int, int] | None = None, sys: Sys = SYS,
              proc_context=None) -> None:
    """proc_context: for a process outside the container's pid namespace (the warm server's
    preparer), a callable that returns an fsopen("proc") fd made inside it (by the init)."""
    for i, m in enumerate(cfg.mounts):
        log.debug(f"init: mounting {m.destination} ({m.type or 'bind'} from {m.source!r})")
        try:
            mount_one(m, bundle, root_fd, cgroup_paths, cgroup_mode, cfg.linux.mount_label,
                      (source_fds or {}).get(i), sys, proc_context)
        except OSError as e:
            raise RuntimeFailure(f"{m.path} (destination {m.destination!r}): mount failed: "
                                 f"{e.strerror}", errno=e.errno) from None


def mount_one(m, bundle: str, root_fd: int, cgroup_paths: dict, cgroup_mode: str,
              mount_label: str = "", source_fd: int | None = None, sys: Sys = SYS,
              proc_context=None) -> None:
    flags, prop, data = parse_options(m.options)
    if _is_dev(m):
        flags &= ~sc.MS_RDONLY  # /dev gets its submounts and nodes first: see readonly_dev
    if m.type in ("cgroup", "cgroup2"):
        mount_cgroup(m, root_fd, flags, cgroup_paths, cgroup_mode, sys=sys)
        return _set_recursive(m, root_fd, sys=sys)
    is_bind = bool(flags & sc.MS_BIND) or m.type == "bind"
    if m.type in ("proc", "sysfs") and not is_bind:
        _refuse_unless_ordinary_dir(m, root_fd, sys=sys)
    source = m.source
    if is_bind and source_fd is not None:
        flags |= sc.MS_BIND
        source = None  # a detached tree made before the user namespace: open_bind_sources
        src_is_dir = stat.S_ISDIR(sys.fstat(source_fd).st_mode)
    elif is_bind:
        flags |= sc.MS_BIND
        if not os.path.isabs(source):
            source = os.path.join(bundle, source)
        try:
            # idmap_fd: opened by create, for the init may not reach the source
            st = sys.fstat(m.idmap_fd) if m.idmap_fd >= 0 else sys.stat(source)
            src_is_dir = stat.S_ISDIR(st.st_mode)
        except OSError as e:
            raise RuntimeFailure(f"{m.path}.source: {m.source!r}: {e.strerror.lower()}",
                                 errno=e.errno) from None
    else:
        src_is_dir = True
    fd = make_path(root_fd, m.destination, is_dir=src_is_dir, sys=sys)
    try:
        target = fdpath(fd)
        if is_bind:
            # a detached tree: idmapped (create made it), or taken before the user namespace
            detached = m.idmap_fd if m.idmap_fd >= 0 else source_fd
            if detached is not None and detached >= 0:
                sys.move_mount(detached, "", fd, "",
                               sc.MOVE_MOUNT_F_EMPTY_PATH | sc.MOVE_MOUNT_T_EMPTY_PATH)
            else:
                sys.mount(source, target, None, sc.MS_BIND | (flags & sc.MS_REC))
            remount = flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
            if remount:
                # A bind ignores the other flags: they take a remount of the new mount.
                sys.close(fd)
                fd = make_path(root_fd, m.destination, is_dir=src_is_dir, sys=sys)
                remount_bind(fdpath(fd), remount, sys=sys)
        else:
            context = lsm.mount_context(mount_label)
            if context and m.type in _LABELLED_FS:
                data = data + [context]
            below = open_in_root(root_fd, m.destination, os.O_RDONLY | os.O_DIRECTORY, sys) \
                if "tmpcopyup" in m.options else -1
            # a read-only tmpcopyup tmpfs is filled first, then made read-only
            ro_later = sc.MS_RDONLY if below >= 0 else 0
            try:
                if m.type == "proc" and proc_context is not None:
                    mount_context(proc_context(), fd, m.source or m.type, flags, data, sys)
                else:
                    sys.mount(m.source or m.type, target, m.type,
                              flags & ~(sc.MS_REMOUNT | ro_later), ",".join(data) or None)
            except OSError as e:
                if e.errno == 22 and data:  # EINVAL: most likely an option the fs does not know
                    raise RuntimeFailure(f"{m.path}.options: {','.join(data)!r}: {m.type} refused "
                                         "these options (Invalid argument)",
                                         errno=e.errno) from None
                if not isinstance(e, PermissionError) or m.type != "sysfs":
                    raise
                # sysfs can't be mounted without owning the network namespace: bind the host's.
                sys.mount("/sys", target, None, sc.MS_BIND | sc.MS_REC)
                # the remount goes to the new mount (our fd is the dir below it), and must
                # repeat the flags the kernel locked on the host's (remount_bind)
                bound = open_in_root(root_fd, m.destination, sys=sys)
                try:
                    remount_bind(fdpath(bound), flags & (sc.MS_RDONLY | sc.MS_NOSUID |
                                                          sc.MS_NODEV | sc.MS_NOEXEC), sys)
                finally:
                    sys.close(bound)
            else:
                if below >= 0:
                    _copy_up(below, root_fd, m.destination, flags & ro_later, sys=sys)
            finally:
                if below >= 0:
                    sys.close(below)
        if prop:
            sys.close(fd)
            fd = open_in_root(root_fd, m.destination, sys=sys)
            sys.mount(None, fdpath(fd), None, prop)
    finally:
        sys.close(fd)
    _set_recursive(m, root_fd, sys=sys)


# mount(2) flags that fsmount(2) takes as mount attributes; a mount with others is not made
# from a context (server/remote.py checks, and the preparer then joins the pid namespace)
CONTEXT_FLAGS = {sc.MS_RDONLY: sc.MOUNT_ATTR_RDONLY, sc.MS_NOSUID: sc.MOUNT_ATTR_NOSUID,
                 sc.MS_NODEV: sc.MOUNT_ATTR_NODEV, sc.MS_NOEXEC: sc.MOUNT_ATTR_NOEXEC,
                 sc.MS_NOATIME: sc.MOUNT_ATTR_NOATIME, sc.MS_STRICTATIME: sc.MOUNT_ATTR_STRICTATIME,
                 sc.MS_NODIRATIME: sc.MOUNT_ATTR_NODIRATIME, sc.MS_RELATIME: sc.MOUNT_ATTR_RELATIME}


def mount_context(context: int, target_fd: int, source: str, flags: int, data: list[str],
                  sys: Sys = SYS) -> None:
    """Mount the filesystem context `context` (an fsopen fd, closed here) on target_fd, as
    mount(source, target, type, flags, data) would."""
    attach(detached_mount(context, source, flags, data, sys), target_fd, sys)


def detached_mount(context: int, source: str, flags: int, data: list[str],
                   sys: Sys = SYS) -> int:
    """The mount fd (attached nowhere) of the filesystem context `context` (an fsopen fd,
    closed here): the data options as fsconfig keys, the flags as mount attributes."""
    try:
        sys.fsconfig(context, sc.FSCONFIG_SET_STRING, "source", source)
        for opt in data:
            key, eq, value = opt.partition("=")
            if eq:
                sys.fsconfig(context, sc.FSCONFIG_SET_STRING, key, value)
            else:
                sys.fsconfig(context, sc.FSCONFIG_SET_FLAG, key)
        sys.fsconfig(context, sc.FSCONFIG_CMD_CREATE)
        attrs = 0
        for flag, attr in CONTEXT_FLAGS.items():
            if flags & flag:
                attrs |= attr
        return sys.fsmount(context, attrs)
    finally:
        sys.close(context)


def _set_recursive(m, root_fd: int, sys: Sys = SYS) -> None:
    attrs = recursive(m.options)
    if attrs:
        fd = open_in_root(root_fd, m.destination, sys=sys)  # the new mount, not what it covers
        try:
            from pyruntime.setup import mountattr
            mountattr.apply_recursive(fd, attrs, sys)
        finally:
            sys.close(fd)


def _copy_up(below: int, root_fd: int, destination: str, rdonly: int, sys: Sys = SYS) -> None:
    """tmpcopyup: what the target held before the tmpfs covered it (`below`) goes into it."""
    from pyruntime.setup import mountattr
    fresh = open_in_root(root_fd, destination, os.O_RDONLY | os.O_DIRECTORY, sys=sys)
    try:
        mountattr.copy_up(below, fresh)
        if rdonly:
            mountattr.apply_recursive(fresh, (sc.MOUNT_ATTR_RDONLY, 0), sys)
    finally:
        sys.close(fresh)


def _refuse_unless_ordinary_dir(m, root_fd: int, sys: Sys = SYS) -> None:
    """proc and sysfs go only on a real directory (or where nothing is yet): a symlink there
    would move the kernel's views elsewhere in the rootfs (runc refuses the same way)."""
    parent, name = os.path.split(m.destination.rstrip("/"))
    if not name:
        return
    try:
        pfd = open_in_root(root_fd, parent, sys=sys)
    except (FileNotFoundError, NotADirectoryError):
        return  # make_path creates it, as a directory
    try:
        st = sys.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    finally:
        sys.close(pfd)
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise ConfigError(f"{m.path}.destination", m.destination, f"is {kind} in the rootfs: "
                          f"filesystem {m.type!r} must be mounted on ordinary directory")


def mount_cgroup(m, root_fd: int, flags: int, cgroup_paths: dict, mode: str,
                 sys: Sys = SYS) -> None:
    """Give the container a view of its own cgroups: cgroup2 where unified, else a tmpfs with
    a bind of the container's dir in each v1 hierarchy (and, on a hybrid host, of its cgroup2
    dir at "unified", where the host mounts it: controllers v1 does not hold live there)."""
    fd = make_path(root_fd, m.destination, sys=sys)
    try:
        if mode == "v2":
            try:
                sys.mount("cgroup2", fdpath(fd), "cgroup2", flags)  # needs a cgroup namespace
            except PermissionError:
                sys.mount(cgroup_paths[""], fdpath(fd), None, sc.MS_BIND | sc.MS_REC)
            return
        sys.mount("tmpfs", fdpath(fd), "tmpfs", flags & ~sc.MS_RDONLY, "mode=755")
    finally:
        sys.close(fd)
    for controller, path in sorted(cgroup_paths.items()):
        name = _hierarchy_name(controller) or "unified"
        dest = os.path.join(m.destination, name)
        sub = make_path(root_fd, dest, sys=sys)
        try:
            sys.mount(path, fdpath(sub), None, sc.MS_BIND | sc.MS_REC)
        finally:
            sys.close(sub)
        sub = open_in_root(root_fd, dest, sys=sys)  # the new mount, not the dir under it
        try:
            sys.mount(None, fdpath(sub), None, sc.MS_BIND | sc.MS_REMOUNT | (flags & _RO_FLAGS))
        finally:
            sys.close(sub)
    if flags & sc.MS_RDONLY:
        fd = open_in_root(root_fd, m.destination, sys=sys)
        try:
            remount_bind(fdpath(fd), flags & _RO_FLAGS, sys=sys)
        except OSError:
            pass
        finally:
            sys.close(fd)


def _is_dev(m) -> bool:
    return os.path.normpath(m.destination) == "/dev"


_PER_MOUNT = (sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME |
              sc.MS_NODIRATIME | sc.MS_RELATIME | sc.MS_STRICTATIME)


def readonly_dev(cfg, sys: Sys = SYS) -> None:
    """A read-only /dev mount is made read-only only now, after the root switch: its
    submounts (/dev/pts, /dev/shm, ...), device nodes and console went in first (runc's
    order)."""
    for m in cfg.mounts:
        if _is_dev(m):
            flags = parse_options(m.options)[0]
            if flags & sc.MS_RDONLY:
                remount_bind("/dev", flags & _PER_MOUNT, sys=sys)


def _hierarchy_name(controller: str) -> str:
    return controller.replace("name=", "")


# ---------------------------------------------------------------- /dev

def dev_is_tmpfs(cfg) -> bool:
    """Whether the runtime owns /dev (a fresh tmpfs) and must fill it in."""
    for m in cfg.mounts:
        if m.destination.rstrip("/") == "/dev":
            return m.type == "tmpfs"
    return False


def create_devices(cfg, root_fd: int, in_user_ns: bool, sys: Sys = SYS) -> None:
    if dev_is_tmpfs(cfg):
        for name, major, minor in DEFAULT_DEVICES:
            _make_device(root_fd, f"/dev/{name}", stat.S_IFCHR, major, minor, 0o666, 0, 0,
                         in_user_ns, sys)
        dev_fd = open_in_root(root_fd, "/dev", os.O_PATH | os.O_DIRECTORY, sys=sys)
        try:
            for target, name in DEFAULT_SYMLINKS + [("pts/ptmx", "ptmx")]:
                try:
                    sys.symlink(target, name, dir_fd=dev_fd)
                except FileExistsError:
                    pass
            if os.path.exists("/proc/kcore"):
                try:
                    sys.symlink("/proc/kcore", "core", dir_fd=dev_fd)
                except FileExistsError:
                    pass
        finally:
            sys.close(dev_fd)
    for d in cfg.linux.devices:
        kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[d.type]
        mode = d.file_mode if d.file_mode is not None else 0o666
        _make_device(root_fd, d.path, kind, d.major, d.minor, mode, d.uid or 0, d.gid or 0,
                     in_user_ns, sys)


def _make_device(root_fd, path, kind, major, minor, mode, uid, gid, in_user_ns,
                 sys: Sys = SYS) -> None:
    parent_path, name = os.path.split(path.rstrip("/"))
    parent = make_path(root_fd, parent_path, sys=sys)
    try:
        try:
            sys.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise RuntimeFailure(f"linux.devices: {path}: a directory is in the way") from None
        if in_user_ns and kind != stat.S_IFIFO:
            # mknod is not allowed in a user namespace: bind the host's node instead.
            sys.close(sys.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                               0o600, dir_fd=parent))
            fd = sys.openat2(parent, name, os.O_PATH | os.O_NOFOLLOW, _IN_ROOT)
            try:
                sys.mount(path, fdpath(fd), None, sc.MS_BIND)
            finally:
                sys.close(fd)
            return
        old = os.umask(0)
        try:
            sys.mknod(name, kind | (mode & 0o7777), os.makedev(major, minor), dir_fd=parent)
        finally:
            os.umask(old)
        sys.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
        sys.chmod(name, mode & 0o7777, dir_fd=parent, follow_symlinks=False)
    finally:
        sys.close(parent)


# ---------------------------------------------------------------- switching root

def reopen_dev_null(sys: Sys = SYS) -> None:
    """stdio on the host's /dev/null becomes the container's /dev/null, as runc does: a file
    on a mount outside the container (Docker gives `-d` containers the host's /dev/null as
    stdin) ties the process to the host's mount table, and CRIU cannot dump it."""
    try:
        fd = sys.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return  # no /dev/null of the container's own: leave stdio as it is
    try:
        null = sys.fstat(fd)
        if not stat.S_ISCHR(null.st_mode):
            return
        for n in (0, 1, 2):
            try:
                st = sys.fstat(n)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev:
                sys.dup2(fd, n)
    finally:
        sys.close(fd)


def pivot(rootfs: str, sys: Sys = SYS) -> None:
    old_root = sys.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new_root = sys.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        sys.fchdir(new_root)
        sys.pivot_root(".", ".")
        # The old root now sits on top of the new one at "."; detach it without letting the
        # unmount propagate to the host.
        sys.fchdir(old_root)
        sys.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sys.umount2(".", sc.MNT_DETACH)
        sys.chdir("/")
    finally:
        sys.close(old_root)
        sys.close(new_root)


def move_root(rootfs: str, sys: Sys = SYS) -> None:
    """--no-pivot: for ramdisk roots where pivot_root is impossible.

    The host's mounts stay in our mount namespace under the chroot. The kernel lets a process
    mount a new procfs or sysfs only where a full, uncovered one is already mounted in its
    namespace: the host's bare /proc would be that one (and a container with CAP_SYS_ADMIN in
    a user namespace could then mount an unmasked procfs), so full proc and sysfs mounts
    outside the rootfs go first, as runc does."""
    for mnt in _full_proc_and_sysfs_outside(rootfs):
        try:
            sys.mount(None, mnt, None, sc.MS_SLAVE | sc.MS_REC)  # no unmount reaches the host
            sys.umount2(mnt, sc.MNT_DETACH)
        except FileNotFoundError:
            continue  # under one detached already
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):
                raise
            sys.mount("tmpfs", mnt, "tmpfs", 0)  # cannot unmount: cover it
    sys.chdir(rootfs)
    sys.mount(rootfs, "/", None, sc.MS_MOVE)
    sys.chroot(".")
    sys.chdir("/")


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


def set_rootfs_propagation(propagation: str, sys: Sys = SYS) -> None:
    if propagation:
        sys.mount(None, "/", None, PROPAGATION[propagation])


def readonly_root(sys: Sys = SYS) -> None:
    remount_bind("/", sc.MS_RDONLY, sys=sys)


def _for_each_in_root(paths: list[str], field: str, action, sys: Sys = SYS) -> None:
    """action(path, O_PATH fd, root fd) for each path that exists inside the new root
    (resolved in it); a mount error names the config field and the path."""
    root = sys.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path in paths:
            try:
                fd = open_in_root(root, path, sys=sys)
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                action(path, fd, root)
            except OSError as e:
                raise RuntimeFailure(f"{field}: {path}: {e.strerror}", errno=e.errno) from None
            finally:
                sys.close(fd)
    finally:
        sys.close(root)


def mask_paths(paths: list[str], sys: Sys = SYS, proc: bool = True) -> None:
    if not paths:
        return
    root = sys.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        devnull = open_devnull(root, sys=sys)
    finally:
        sys.close(root)

    def mask(_path, fd, _root):
        is_dir = stat.S_ISDIR(sys.fstat(fd).st_mode)
        if proc and is_dir:
            sys.mount("tmpfs", fdpath(fd), "tmpfs", sc.MS_RDONLY)
        elif proc:
            sys.mount(fdpath(devnull), fdpath(fd), None, sc.MS_BIND)
        elif is_dir:  # no proc at /proc: the same mounts through the mount API's fds
            mount_context(sys.fsopen("tmpfs"), fd, "tmpfs", sc.MS_RDONLY, [], sys)
        else:
            attach(sys.open_tree(devnull, "", sc.OPEN_TREE_CLONE | sc.AT_EMPTY_PATH), fd, sys)
    try:
        _for_each_in_root(paths, "linux.maskedPaths", mask, sys=sys)
    finally:
        sys.close(devnull)


def readonly_paths(paths: list[str], sys: Sys = SYS, proc: bool = True) -> None:
    def make_readonly(path, fd, root):
        if not proc:  # no proc at /proc: the same rbind, its top read-only, by fds
            tree = sys.open_tree(fd, "", sc.OPEN_TREE_CLONE | sc.AT_RECURSIVE | sc.AT_EMPTY_PATH)
            try:
                sys.mount_setattr(tree, "", sc.AT_EMPTY_PATH, sc.MOUNT_ATTR_RDONLY, 0)
            except BaseException:
                sys.close(tree)
                raise
            attach(tree, fd, sys)
            return
        sys.mount(fdpath(fd), fdpath(fd), None, sc.MS_BIND | sc.MS_REC)
        bind = open_in_root(root, path, sys=sys)  # fd still names what is under the new bind
        try:
            remount_bind(fdpath(bind), sc.MS_RDONLY | sc.MS_REC, sys=sys)
        finally:
            sys.close(bind)
    _for_each_in_root(paths, "linux.readonlyPaths", make_readonly, sys=sys)


def open_devnull(root_fd: int, sys: Sys = SYS) -> int:
    """An O_PATH fd of the container's /dev/null, checked to really be the null device: a
    rootfs that makes it a symlink or another file must not get that bound over a masked path."""
    try:
        fd = sys.openat2(root_fd, "dev/null", os.O_PATH, _IN_ROOT | sc.RESOLVE_NO_SYMLINKS)
    except OSError as e:
        raise RuntimeFailure(f"linux.maskedPaths: /dev/null in the container: {e.strerror}",
                             errno=e.errno) from None
    st = sys.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        sys.close(fd)
        raise RuntimeFailure("linux.maskedPaths: /dev/null in the container is not the null device")
    return fd
