"""The one thin layer over libc that the rest of pyruntime calls.

Everything the os module lacks on Python 3.11 (unshare, setns, mount, pivot_root, openat2,
prctl, capset, ...) goes through here, raising OSError with the errno and the call's
arguments, so the callers read like the C they replace.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import sys

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def libc() -> ctypes.CDLL:
    """The package's one handle on libc (seccomp and the cgroup BPF loader use it too)."""
    return _libc


# clone/unshare flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_I_VERSION = 1 << 23
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

# openat2 resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# prctl
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# Numbers of the syscalls that neither glibc 2.36 nor Python wraps. x86_64 has its own table;
# aarch64 (like riscv64) uses the kernel's generic one.
_GENERIC = {
    "ioprio_set": 30, "pivot_root": 41, "capget": 90, "capset": 91, "keyctl": 219,
    "set_mempolicy": 237, "seccomp": 277, "bpf": 280, "pidfd_send_signal": 424,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "pidfd_open": 434, "clone3": 435, "openat2": 437, "mount_setattr": 442,
}
SYSCALL_NUMBERS = {
    "x86_64": {
        "pivot_root": 155, "capget": 125, "capset": 126, "set_mempolicy": 238, "keyctl": 250,
        "ioprio_set": 251, "seccomp": 317, "bpf": 321, "pidfd_send_signal": 424,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "pidfd_open": 434, "clone3": 435, "openat2": 437, "mount_setattr": 442,
    },
    "aarch64": _GENERIC,
    "riscv64": _GENERIC,
}
MACHINE = os.uname().machine


def nr(name: str, machine: str = MACHINE) -> int:
    """The syscall number of `name` on this machine's architecture.

    An architecture without a table is an error here, at the first call that needs a number,
    rather than a call of whatever syscall x86_64's number means there.
    """
    try:
        return SYSCALL_NUMBERS[machine][name]
    except KeyError:
        known = ", ".join(sorted(SYSCALL_NUMBERS))
        raise OSError(38, f"{name}: syscall number unknown on architecture {machine!r} "
                          f"(pyruntime knows {known})") from None


def _check(ret: int, what: str, *args) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}({', '.join(map(repr, args))}): {os.strerror(err)}")
    return ret


def _b(s: str | bytes | None):
    if s is None:
        return None
    return s.encode() if isinstance(s, str) else s


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare", hex(flags))


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns", fd, hex(nstype))


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    ret = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(ret, "mount", source, target, fstype, hex(flags), data)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), "umount2", target, flags)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(nr("pivot_root"), _b(new_root), _b(put_old)), "pivot_root", new_root, put_old)


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_libc.sethostname(b, ctypes.c_size_t(len(b))), "sethostname", name)


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_libc.setdomainname(b, ctypes.c_size_t(len(b))), "setdomainname", name)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    ret = _libc.syscall(nr("openat2"), ctypes.c_int(dirfd), _b(path), ctypes.byref(how),
                        ctypes.c_size_t(ctypes.sizeof(how)))
    return _check(ret, "openat2", dirfd, path)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                      ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))
    return _check(ret, "prctl", option, arg2)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_CAP_V3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.syscall(nr("capset"), ctypes.byref(hdr), data), "capset",
           hex(effective), hex(permitted), hex(inheritable))


class _Rlimit(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_uint64), ("max", ctypes.c_uint64)]


RLIM_INFINITY = (1 << 64) - 1


def setrlimit(resource: int, soft: int, hard: int) -> None:
    """setrlimit(2) with 64-bit limits (prlimit on ourselves; the standard `resource` module
    would be one more shared library to load in every init)."""
    new = _Rlimit(soft, hard)
    _check(_libc.prlimit(ctypes.c_int(0), ctypes.c_int(resource), ctypes.byref(new), None),
           "setrlimit", resource, soft, hard)


def personality(persona: int) -> None:
    _check(_libc.personality(ctypes.c_ulong(persona)), "personality", persona)


def ioprio_set(which: int, who: int, ioprio: int) -> None:
    _check(_libc.syscall(nr("ioprio_set"), which, who, ioprio), "ioprio_set", which, who, ioprio)


KEYCTL_JOIN_SESSION_KEYRING = 1


def join_session_keyring(name: str | None = None) -> None:
    _check(_libc.syscall(nr("keyctl"), KEYCTL_JOIN_SESSION_KEYRING, _b(name), 0, 0, 0),
           "keyctl(JOIN_SESSION_KEYRING)", name)


# mount_setattr(2), open_tree(2), move_mount(2)
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    attr = _MountAttr(attr_set, attr_clr, propagation, userns_fd)
    _check(_libc.syscall(nr("mount_setattr"), ctypes.c_int(dirfd), _b(path), ctypes.c_uint(flags),
                         ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           "mount_setattr", dirfd, path, hex(flags), hex(attr_set), hex(attr_clr))


def open_tree(dirfd: int, path: str, flags: int) -> int:
    ret = _libc.syscall(nr("open_tree"), ctypes.c_int(dirfd), _b(path),
                        ctypes.c_uint(flags | os.O_CLOEXEC))
    return _check(ret, "open_tree", dirfd, path, hex(flags))


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str, flags: int) -> None:
    _check(_libc.syscall(nr("move_mount"), ctypes.c_int(from_fd), _b(from_path), ctypes.c_int(to_fd),
                         _b(to_path), ctypes.c_uint(flags)),
           "move_mount", from_fd, from_path, to_fd, to_path, hex(flags))


# fsopen(2), fsconfig(2), fsmount(2): a filesystem instance made in steps, so that one
# process can make the context (proc binds the caller's pid namespace there) and another mount it
FSOPEN_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 1


def fsopen(fstype: str) -> int:
    return _check(_libc.syscall(nr("fsopen"), _b(fstype), ctypes.c_uint(FSOPEN_CLOEXEC)),
                  "fsopen", fstype)


def fsconfig(fd: int, cmd: int, key: str | None = None, value: str | None = None) -> None:
    _check(_libc.syscall(nr("fsconfig"), ctypes.c_int(fd), ctypes.c_uint(cmd), _b(key), _b(value),
                         ctypes.c_int(0)), "fsconfig", fd, cmd, key, value)


def fsmount(fd: int, attrs: int) -> int:
    return _check(_libc.syscall(nr("fsmount"), ctypes.c_int(fd), ctypes.c_uint(FSMOUNT_CLOEXEC),
                                ctypes.c_uint(attrs)), "fsmount", fd, hex(attrs))


def set_mempolicy(mode: int, nodemask: int, maxnode: int) -> None:
    """`nodemask` is a Python int, one bit per node; `maxnode` bits of it are passed."""
    words = max(1, (maxnode + 63) // 64)
    mask = (ctypes.c_ulong * words)(*[(nodemask >> (64 * i)) & (2**64 - 1) for i in range(words)])
    # the kernel reads maxnode - 1 bits
    _check(_libc.syscall(nr("set_mempolicy"), ctypes.c_int(mode), mask if nodemask else None,
                         ctypes.c_ulong(words * 64 + 1 if nodemask else 0)),
           "set_mempolicy", hex(mode), hex(nodemask))


# clone3
CLONE_CHILD_CLEARTID = 0x00200000
CLONE_CHILD_SETTID = 0x01000000
CLONE_INTO_CGROUP = 0x200000000
PR_GET_TID_ADDRESS = 40


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup")]


# Called with the GIL held, as os.fork calls fork(): a CDLL call releases it, and a child made
# meanwhile would inherit a GIL that another thread may hold.
_pyapi = ctypes.PyDLL(None)
_pysyscall = ctypes.PyDLL(None, use_errno=True).syscall
_pysyscall.restype = ctypes.c_long


def fork_into_cgroup(cgroup_fd: int, flags: int = 0) -> int:
    """os.fork(), but the child starts in the cgroup2 dir `cgroup_fd` (clone3 with
    CLONE_INTO_CGROUP): no move, so no wait for the kernel's cgroup_threadgroup_rwsem.

    A raw clone3 skips what glibc's fork() does around the syscall, so this does it, or
    refuses (OSError; the caller falls back to os.fork): the process must have one thread
    (glibc's fork locks malloc's arenas for the sake of other threads; it also runs
    pthread_atfork handlers, which no library pyruntime loads registers, and re-registers the
    robust-mutex list, which CPython does not use); the child's cached tid (glibc's struct
    pthread) is set by the kernel at the address glibc registered for it (PR_GET_TID_ADDRESS),
    with the flags glibc's fork passes;
    CPython's own fork hooks run as in os.fork (PyOS_BeforeFork, PyOS_AfterFork_*: the GIL,
    the import lock, threading's and os.register_at_fork's hooks). Signals are blocked and the
    garbage collector is off from before the clone until the child's hooks have run, so that
    no Python code (a signal handler, a finalizer) runs in the child before them.

    flags: more clone flags (the warm server's client adds CLONE_NEWPID)."""
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise OSError(16, f"fork_into_cgroup: this process has {threads} threads")
    tid_address = ctypes.c_uint64()
    _check(_libc.prctl(ctypes.c_int(PR_GET_TID_ADDRESS), ctypes.byref(tid_address),
                       ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)),
           "prctl", PR_GET_TID_ADDRESS)
    if not tid_address.value:
        raise OSError(22, "fork_into_cgroup: glibc registered no tid address")
    args = _CloneArgs(flags=CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | CLONE_INTO_CGROUP | flags,
                      child_tid=tid_address.value, exit_signal=17, cgroup=cgroup_fd)  # SIGCHLD
    import gc
    from pyruntime.lean import signal
    sys.audit("os.fork")
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    collecting = gc.isenabled()
    gc.disable()  # no finalizer may run in the child before its hooks
    _pyapi.PyOS_BeforeFork()
    pid = _pysyscall(ctypes.c_long(nr("clone3")), ctypes.byref(args),
                     ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        try:
            _pyapi.PyOS_AfterFork_Child()
            if collecting:
                gc.enable()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        except BaseException:
            os._exit(1)  # a child never returns into its parent's code
        return 0
    err = ctypes.get_errno()
    _pyapi.PyOS_AfterFork_Parent()
    if collecting:
        gc.enable()
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if pid < 0:
        raise OSError(err, f"clone3(CLONE_INTO_CGROUP, {cgroup_fd}): {os.strerror(err)}")
    return pid


class Sys:
    """The calls that set a container up, as one object: rootfs, namespaces, process and init
    take a `sys` (SYS, this real one, by default), so a test can hand them a recording fake
    (tests/unit/fakes.py) and check what they would do without root or a rootfs. The os
    functions are here too because their fds and paths come from the calls above: a fake
    openat2's fd means nothing to the real os.fstat."""
    mount = staticmethod(mount)
    umount2 = staticmethod(umount2)
    pivot_root = staticmethod(pivot_root)
    openat2 = staticmethod(openat2)
    open_tree = staticmethod(open_tree)
    move_mount = staticmethod(move_mount)
    fsopen = staticmethod(fsopen)
    fsconfig = staticmethod(fsconfig)
    fsmount = staticmethod(fsmount)
    mount_setattr = staticmethod(mount_setattr)
    unshare = staticmethod(unshare)
    setns = staticmethod(setns)
    sethostname = staticmethod(sethostname)
    setdomainname = staticmethod(setdomainname)
    personality = staticmethod(personality)
    ioprio_set = staticmethod(ioprio_set)
    join_session_keyring = staticmethod(join_session_keyring)
    ioctl = staticmethod(fcntl.ioctl)
    open = staticmethod(os.open)
    close = staticmethod(os.close)
    dup2 = staticmethod(os.dup2)
    stat = staticmethod(os.stat)
    fstat = staticmethod(os.fstat)
    statvfs = staticmethod(os.statvfs)
    readlink = staticmethod(os.readlink)
    mkdir = staticmethod(os.mkdir)
    mknod = staticmethod(os.mknod)
    symlink = staticmethod(os.symlink)
    unlink = staticmethod(os.unlink)
    chown = staticmethod(os.chown)
    chmod = staticmethod(os.chmod)
    chdir = staticmethod(os.chdir)
    fchdir = staticmethod(os.fchdir)
    chroot = staticmethod(os.chroot)
    setresuid = staticmethod(os.setresuid)
    setresgid = staticmethod(os.setresgid)


SYS = Sys()
