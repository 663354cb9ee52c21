"""Run this invocation again from a sealed memfd copy of the interpreter (CVE-2019-5736).

The processes that set a container up are the host's Python until their last execve, and they
sit in the container's pid namespace (the init; an `exec`). They are non-dumpable, which keeps a
container process away from their /proc/<pid>/exe, unless that process holds CAP_SYS_PTRACE
outside a user namespace: it could then keep an fd to the host's interpreter and reopen it for
writing once nothing runs it. For such a container only, the CLI re-executes itself, before it
forks anything, from a sealed memfd copy of the interpreter: every process it forks then has the
memfd as its executable, which cannot be written. runc does the same with its own binary.
"""
from __future__ import annotations

import fcntl
import os
import sys

MARKER = "_PYRUNTIME_SEALED"
_MFD_CLOEXEC, _MFD_ALLOW_SEALING, _MFD_EXEC = 0x1, 0x2, 0x10
_F_SEAL_ALL = 0x1 | 0x2 | 0x4 | 0x8  # seal, shrink, grow, write
CAP_SYS_PTRACE = "CAP_SYS_PTRACE"


def active() -> bool:
    return os.environ.get(MARKER) == "1"


def needed(cap_sets) -> bool:
    """Whether container processes may hold CAP_SYS_PTRACE (in any set: a bounding-set cap can
    be regained by executing a file with that capability)."""
    if active() or cap_sets is None:
        return False
    return any(CAP_SYS_PTRACE in (names or ()) for names in cap_sets)


def _sealed_copy() -> int:
    try:
        fd = os.memfd_create("pyruntime", _MFD_CLOEXEC | _MFD_ALLOW_SEALING | _MFD_EXEC)
    except OSError:  # kernels before 6.3 do not know MFD_EXEC
        fd = os.memfd_create("pyruntime", _MFD_CLOEXEC | _MFD_ALLOW_SEALING)
    with open("/proc/self/exe", "rb") as src:
        while chunk := src.read(1 << 20):
            os.write(fd, chunk)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _F_SEAL_ALL)
    return fd


def reexec() -> None:
    """Replace this process with the same command run by a sealed copy of the interpreter."""
    fd = _sealed_copy()
    # The same sys.path as this process: the launcher's package dir and its site dirs (which
    # hold the optional dependencies) are not found by -I -S alone.
    code = f"import sys; sys.path[:] = {sys.path!r}; from pyruntime.cli.main import run; run()"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(fd, ["pyruntime", "-I", "-S", "-c", code, *sys.argv[1:]],
              dict(os.environ, **{MARKER: "1"}))
