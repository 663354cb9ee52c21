"""seccomp(2): the filter flags this kernel accepts, and loading a compiled program.

install() runs in the init after pivot_root, where no module can be imported any more: it uses
ctypes and pyruntime.linux.syscalls, both loaded by the runtime before the fork.
"""
from __future__ import annotations

import os

from pyruntime.errors import RuntimeFailure

# seccomp(2) filter flags (linux/seccomp.h)
FLAG_TSYNC = 1 << 0
FLAG_LOG = 1 << 1
FLAG_SPEC_ALLOW = 1 << 2
FLAG_NEW_LISTENER = 1 << 3
FLAG_WAIT_KILLABLE_RECV = 1 << 5
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": FLAG_WAIT_KILLABLE_RECV,
}

_SECCOMP_SET_MODE_FILTER = 1
_EFAULT = 14
_EINVAL = 22
_EACCES = 13


def _libc():
    from pyruntime.linux.syscalls import libc
    return libc()


def _sys_seccomp_nr() -> int:
    from pyruntime.linux.syscalls import nr
    try:
        return nr("seccomp")
    except OSError as e:
        raise RuntimeFailure(f"seccomp: {e.strerror}", errno=e.errno) from e


def _seccomp_set_filter(flags: int, prog_ptr) -> tuple[int, int]:
    import ctypes

    libc = _libc()
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(_sys_seccomp_nr()), ctypes.c_long(_SECCOMP_SET_MODE_FILTER),
                      ctypes.c_long(flags), prog_ptr)
    return rc, ctypes.get_errno()


def kernel_supports_flags(flags: int) -> bool:
    """Does seccomp(SET_MODE_FILTER) accept these flags? Probed with a NULL program: the kernel
    checks flags first (EINVAL) and then faults copying the program (EFAULT)."""
    import ctypes

    rc, err = _seccomp_set_filter(flags, ctypes.c_void_p(0))
    return rc < 0 and err == _EFAULT


class Program:
    """A compiled filter: raw BPF (struct sock_filter array) and the seccomp(2) flags."""

    __slots__ = ("bpf", "flags", "notify")

    def __init__(self, bpf: bytes, flags: int, notify: bool):
        self.bpf, self.flags, self.notify = bpf, flags, notify

    def __len__(self) -> int:
        return len(self.bpf) // 8

    def __repr__(self) -> str:
        return f"<seccomp.Program {len(self)} insns flags={self.flags:#x} notify={self.notify}>"


def install(prog) -> int | None:
    """Load a compiled filter (a compile.Program, or None) into the calling thread (the init,
    right before execve).

    Needs no_new_privs or CAP_SYS_ADMIN. Returns the notify fd (close-on-exec) when the filter
    has SCMP_ACT_NOTIFY rules, else None.
    """
    if prog is None:
        return None
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(prog.bpf, len(prog.bpf))
    fprog = SockFprog(len(prog), ctypes.addressof(buf))
    rc, err = _seccomp_set_filter(prog.flags, ctypes.byref(fprog))
    if rc < 0:
        if err == _EACCES:
            raise RuntimeFailure("seccomp: loading the filter: permission denied "
                                 "(needs no_new_privs or CAP_SYS_ADMIN)")
        if err == _EINVAL and prog.flags:
            names = [n for n, b in FLAGS.items() if prog.flags & b] + \
                (["SECCOMP_FILTER_FLAG_NEW_LISTENER"] if prog.flags & FLAG_NEW_LISTENER else [])
            raise RuntimeFailure(f"seccomp: loading the filter with flags {', '.join(names)}: "
                                 f"{os.strerror(err)}")
        raise RuntimeFailure(f"seccomp: loading the filter: {os.strerror(err)}")
    if prog.flags & FLAG_NEW_LISTENER:
        os.set_inheritable(rc, False)
        return rc
    return None
