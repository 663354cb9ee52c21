"""Mount options the kernel's mount(2) flags cannot express: the recursive `r*` attributes
(mount_setattr(2) with AT_RECURSIVE, so every submount of an rbind gets them: a plain `ro`
remount covers only the top mount; oci/mounts.py reads them), tmpcopyup and idmapped mounts."""
from __future__ import annotations

import os
import stat

from pyruntime.linux import syscalls as sc
from pyruntime.linux.syscalls import SYS, Sys


def apply_recursive(fd: int, attrs: tuple[int, int], sys: Sys = SYS) -> None:
    """Set the attributes on the mount at O_PATH `fd` and every mount below it."""
    sys.mount_setattr(fd, "", sc.AT_EMPTY_PATH | sc.AT_RECURSIVE, attrs[0], attrs[1])


def supported() -> bool:
    """Whether this kernel has mount_setattr(2) (5.12): a call with no attributes on an
    invalid fd fails with EBADF there, ENOSYS before."""
    try:
        sc.mount_setattr(-1, "", sc.AT_EMPTY_PATH, 0, 0)
    except OSError as e:
        return e.errno != 38
    return True


def copy_up(src_fd: int, dst_fd: int) -> None:
    """tmpcopyup: copy the tree of directory `src_fd` (the target before the tmpfs went over
    it) into `dst_fd` (the fresh tmpfs), keeping modes, owners and times; symlinks are copied
    as links, never followed."""
    for entry in os.scandir(src_fd):
        st = entry.stat(follow_symlinks=False)
        name = entry.name
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o700, dir_fd=dst_fd)
            s = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=src_fd)
            d = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=dst_fd)
            try:
                copy_up(s, d)
            finally:
                os.close(s)
                os.close(d)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dst_fd)
        elif stat.S_ISREG(st.st_mode):
            s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
            d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                        0o600, dir_fd=dst_fd)
            try:
                while os.sendfile(d, s, None, 1 << 30):  # copy_file_range: EXDEV across fs types
                    pass
            finally:
                os.close(s)
                os.close(d)
        else:  # devices, fifos, sockets
            os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dst_fd)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_fd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dst_fd)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_fd, follow_symlinks=False)
    st = os.fstat(src_fd)
    os.chown(dst_fd, st.st_uid, st.st_gid)
    os.chmod(dst_fd, stat.S_IMODE(st.st_mode))


# ---------------------------------------------------------------- idmapped mounts

def wants_idmap(m) -> bool:
    return bool(m.uid_mappings or m.gid_mappings) or "idmap" in m.options \
        or "ridmap" in m.options


def open_idmapped(m, source: str, linux) -> int:
    """A detached copy of `source` (open_tree(OPEN_TREE_CLONE)) idmapped through a user
    namespace holding the mount's mappings (or the container's, for a bare idmap/ridmap), as
    runc 1.2 and crun do. Made by `create` on the host: idmapping a filesystem needs
    CAP_SYS_ADMIN in the user namespace that owns it; the init moves it into place."""
    from pyruntime.errors import RuntimeFailure
    uids = m.uid_mappings or linux.uid_mappings
    gids = m.gid_mappings or linux.gid_mappings
    if not uids or not gids:
        raise RuntimeFailure(f"{m.path}: an idmapped mount needs uidMappings and gidMappings, "
                             "on the mount or in linux (a user namespace)")
    userns = _userns_fd(uids, gids)
    try:
        rec = "rbind" in m.options or "ridmap" in m.options
        try:
            tree = sc.open_tree(-100, source, sc.OPEN_TREE_CLONE | (sc.AT_RECURSIVE if rec else 0))
        except OSError as e:
            raise RuntimeFailure(f"{m.path}.source: {m.source!r}: {os.strerror(e.errno)}",
                                 errno=e.errno) from None
        try:
            sc.mount_setattr(tree, "", sc.AT_EMPTY_PATH | (sc.AT_RECURSIVE if "ridmap" in m.options
                                                           else 0),
                             sc.MOUNT_ATTR_IDMAP, userns_fd=userns)
        except OSError as e:
            os.close(tree)
            raise RuntimeFailure(f"{m.path}: {m.source!r} cannot be idmapped: its filesystem (or a "
                                 f"submount's) does not support idmapped mounts "
                                 f"(mount_setattr: {os.strerror(e.errno)})",
                                 errno=e.errno) from None
        return tree
    finally:
        os.close(userns)


def _userns_fd(uids: list[dict], gids: list[dict]) -> int:
    """An fd of a new user namespace with these mappings (a child holds it while we map it)."""
    from pyruntime.linux import namespaces
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(done_w)  # or the read below never sees the parent's close
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(1, "cannot create a user namespace for an idmapped mount")
        namespaces.write_id_maps(pid, uids, gids)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)
