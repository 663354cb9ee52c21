"""linux.seccomp, one job a module:

    profile.py  the config's seccomp object: the names it may use, and check() (a ConfigError
                naming the JSON path)
    compile.py  the profile into a BPF program: libseccomp through ctypes, runc's -ENOSYS
                stub, and the on-disk cache of programs
    kernel.py   seccomp(2): the filter flags the kernel has, and install() in the init
    notify.py   SCMP_ACT_NOTIFY: the notify fd and the agent's socket (listenerPath)

Two-step use, for the container init::

    prog = compile.compile(config["linux"]["seccomp"])   # in the runtime, before fork
    ...                                                   # fork; set up the container
    fd = kernel.install(prog)                             # in the init, last before execve

compile() must run where libseccomp.so.2 can be opened, i.e. before pivot_root (the container's
rootfs has no libseccomp, and no Python modules either); install() needs no file and imports
nothing new (only ctypes, already loaded by compile(), and kernel.py, which compile.py imports).
Nothing here imports anything heavy at import time; ctypes and libseccomp are loaded on first
use.

Semantics follow runc 1.1 (libcontainer/seccomp, specconv):
* ``SCMP_ACT_KILL`` is KILL_THREAD; ``errnoRet`` / ``defaultErrnoRet`` default to EPERM and are
  only allowed with SCMP_ACT_ERRNO and SCMP_ACT_TRACE.
* no ``defaultAction`` and no ``syscalls``: seccomp is disabled.
* ``flags`` absent: SECCOMP_FILTER_FLAG_SPEC_ALLOW (when the kernel has it); ``flags: []``: none.
  SECCOMP_FILTER_FLAG_TSYNC is accepted and ignored (the init is single-threaded).
  SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only means something with a listener (the kernel
  refuses it otherwise), so it is dropped when no rule uses SCMP_ACT_NOTIFY.
* a syscall name libseccomp does not know is skipped; a rule whose action (with its errno)
  equals the default action is skipped.
* several conditions on the same argument index: one rule per condition (OR); otherwise one rule
  with all conditions (AND).
* SCMP_ACT_NOTIFY cannot be the default action nor apply to ``write``, and needs ``listenerPath``.
* when the default action denies, syscalls newer than every syscall the profile names (per
  listed architecture) return ENOSYS instead, so that libc falls back (runc's patchbpf).
"""
