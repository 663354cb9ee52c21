"""The last execve goes through a tiny sealed memfd program (CVE-2019-5736).

The container init and `exec` are the host's Python until their final execve, and while the
kernel resolves that execve, `/proc/self/exe` is the host's interpreter: a container program
`#!/proc/self/exe` (or a symlink to it, or to `/proc/1/exe`) would make the kernel run the
host's interpreter inside the container, and that process can then open its own exe and keep
the fd until no one runs the interpreter, then reopen it for writing. runc answers this with a
sealed memfd copy of itself; copying and re-executing Python would cost a whole interpreter
start, so we exec a ~300-byte static program from a sealed memfd instead, which execs the
real target: `/proc/self/exe` is then that memfd, never a host file, and no Python process
does the execve the container can influence.

The shim: argv = [path, argv0, argv1, ...]; it marks the report fd close-on-exec, calls
execve(path, &argv[1], envp) and, if that fails, writes the message prepared for that errno
to the report fd and exits 127. x86_64 only; elsewhere the caller falls back to a plain
execve after `refuse_own_binary`.
"""
from __future__ import annotations

import fcntl
import os
import struct

_BASE = 0x400000
_EHDR, _PHDR = 64, 56
# errnos execve(2) gives (EPERM, ENOENT, E2BIG, ENOEXEC, EAGAIN, ENOMEM, EACCES, EFAULT, ENOTDIR,
# EISDIR, EINVAL, ENFILE, EMFILE, ETXTBSY, ENAMETOOLONG, ELOOP, ELIBBAD); strerror() is slow
# enough (~1 us) that the others share the generic message
_EXEC_ERRNOS = (1, 2, 7, 8, 11, 12, 13, 14, 20, 21, 22, 23, 24, 26, 36, 40, 80)
_MFD_EXEC = 0x10  # linux 6.3+: say the memfd is meant to be executable (vm.memfd_noexec)


def supported() -> bool:
    return os.uname().machine == "x86_64"


def wanted(user, caps) -> bool:
    """Whether the extra execve cannot change the outcome (runc-dmz's rule): root regains its
    capabilities at every execve, a non-root process keeps only its ambient ones, so for a
    non-root process with effective capabilities beyond the ambient set (which might be needed
    to execute the target) we exec directly."""
    if not supported():
        return False
    if user.uid == 0 or caps is None:
        return True
    return set(caps.effective or ()) <= set(caps.ambient or ())


def _code(report_fd: int, table_off: int, nerr: int) -> bytes:
    """x86_64 machine code; table_off is the table's offset from the start of the code."""
    k = struct.pack("<i", report_fd)
    c = bytearray()
    c += b"\x48\x89\xe3"                      # mov rbx, rsp
    c += b"\x48\x83\x3b\x02"                  # cmp qword [rbx], 2   (argc >= 2)
    c += b"\x73\x09"                          # jae +9
    c += b"\x48\xc7\xc0\xea\xff\xff\xff"      # mov rax, -EINVAL
    jmp_fail_1 = len(c)
    c += b"\xeb\x00"                          # jmp fail (patched)
    js_fail = None
    if report_fd > 2:
        c += b"\xbf" + k                      # mov edi, K
        c += b"\xbe\x02\x00\x00\x00"          # mov esi, F_SETFD
        c += b"\xba\x01\x00\x00\x00"          # mov edx, FD_CLOEXEC
        c += b"\xb8\x48\x00\x00\x00"          # mov eax, SYS_fcntl
        c += b"\x0f\x05"                      # syscall
        c += b"\x48\x85\xc0"                  # test rax, rax
        js_fail = len(c)
        c += b"\x78\x00"                      # js fail (patched)
    c += b"\x48\x8b\x7b\x08"                  # mov rdi, [rbx+8]        argv[0]: the path
    c += b"\x48\x8d\x73\x10"                  # lea rsi, [rbx+16]       &argv[1]
    c += b"\x48\x8b\x0b"                      # mov rcx, [rbx]          argc
    c += b"\x48\x8d\x54\xcb\x10"              # lea rdx, [rbx+rcx*8+16] envp
    c += b"\xb8\x3b\x00\x00\x00"              # mov eax, SYS_execve
    c += b"\x0f\x05"                          # syscall
    fail = len(c)
    c += b"\x48\xf7\xd8"                      # neg rax                 errno
    c += b"\x48\x3d" + struct.pack("<i", nerr)  # cmp rax, nerr
    c += b"\x72\x02"                          # jb +2
    c += b"\x31\xc0"                          # xor eax, eax            entry 0: generic
    lea = len(c)
    c += b"\x48\x8d\x0d\x00\x00\x00\x00"      # lea rcx, [rip+table] (patched)
    c += b"\x48\xc1\xe0\x04"                  # shl rax, 4
    c += b"\x48\x8b\x34\x01"                  # mov rsi, [rcx+rax]      offset
    c += b"\x48\x01\xce"                      # add rsi, rcx
    c += b"\x48\x8b\x54\x01\x08"              # mov rdx, [rcx+rax+8]    length
    c += b"\xbf" + k                          # mov edi, K
    c += b"\xb8\x01\x00\x00\x00"              # mov eax, SYS_write
    c += b"\x0f\x05"                          # syscall
    c += b"\xbf\x7f\x00\x00\x00"              # mov edi, 127
    c += b"\xb8\xe7\x00\x00\x00"              # mov eax, SYS_exit_group
    c += b"\x0f\x05"                          # syscall
    c += b"\xf4"                              # hlt
    c[jmp_fail_1 + 1] = fail - (jmp_fail_1 + 2)
    if js_fail is not None:
        c[js_fail + 1] = fail - (js_fail + 2)
    c[lea + 3:lea + 7] = struct.pack("<i", table_off - (lea + 7))
    return bytes(c)


def build(arg0: str, report_fd: int, encode) -> bytes:
    """The shim's ELF image. encode(msg, errno) -> the bytes to write to report_fd for a
    failure (errno None for the generic message)."""
    generic = encode(f'exec: "{arg0}": exec failed', None)
    msgs = [generic] * (_EXEC_ERRNOS[-1] + 1)
    for e in _EXEC_ERRNOS:
        msgs[e] = encode(f'exec: "{arg0}": {os.strerror(e).lower()}', e)
    code_len = len(_code(report_fd, 0, len(msgs)))
    table_off = (code_len + 7) & ~7
    strings_off = len(msgs) * 16
    table, blob, where = bytearray(), bytearray(), {}
    for m in msgs:
        if m not in where:
            where[m] = strings_off + len(blob)
            blob += m
        table += struct.pack("<QQ", where[m], len(m))
    code = _code(report_fd, table_off, len(msgs))
    body = code + b"\0" * (table_off - len(code)) + table + blob
    size = _EHDR + _PHDR + len(body)
    entry = _BASE + _EHDR + _PHDR
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + b"\0" * 9, 2, 0x3E, 1,
                       entry, _EHDR, 0, 0, _EHDR, _PHDR, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, size, size, 0x1000)
    return ehdr + phdr + body


def memfd(image: bytes) -> int:
    """A sealed, close-on-exec memfd holding image."""
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create("pyruntime-exec", flags | _MFD_EXEC)
    except OSError:
        fd = os.memfd_create("pyruntime-exec", flags)  # before linux 6.3
    try:
        view = memoryview(image)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK |
                    fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def prepare(arg0: str, report_fd: int = -1, encode=None) -> int:
    """The shim's sealed memfd, made before seccomp is loaded (memfd_create, write and fcntl
    may not be in the container's profile); -1 if it cannot be made."""
    if report_fd < 0:
        report_fd = 2
        encode = lambda m, _errno: m.encode(errors="replace") + b"\n"  # noqa: E731
    try:
        return memfd(build(arg0, report_fd, encode))
    except OSError:
        return -1


def execute(fd: int, path: str, args: list[str], env: dict, report_fd: int = -1) -> None:
    """execve(path, args, env) through the shim in fd; returns only if the shim could not be
    run (then the caller may exec directly). The shim's own failure is reported on report_fd
    (or stderr) and ends the process."""
    if fd < 0:
        return
    argv = [path, *args]
    try:
        if report_fd >= 0:
            os.set_inheritable(report_fd, True)
        try:
            os.execve(f"/proc/self/fd/{fd}", argv, env)  # execve: what seccomp profiles allow
        except OSError:
            os.execve(fd, argv, env)  # execveat(AT_EMPTY_PATH): no /proc in the container
    except OSError:
        pass
    try:
        if report_fd >= 0:
            os.set_inheritable(report_fd, False)
        os.close(fd)
    except OSError:
        pass


def refuse_own_binary(path: str) -> str | None:
    """For a plain execve: a reason to refuse if path (or its #! interpreter) is our own
    executable. Not race-free (the shim is), but stops the plain attack."""
    try:
        me = os.stat("/proc/self/exe")
    except OSError:
        return None
    seen = 0
    while seen < 5:
        seen += 1
        try:
            st = os.stat(path)
        except OSError:
            return None
        if (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino):
            return "is the runtime's own executable"
        try:
            with open(path, "rb") as f:
                head = f.read(256)
        except OSError:
            return None
        if not head.startswith(b"#!"):
            return None
        parts = head[2:].split(b"\n", 1)[0].split()
        if not parts:
            return None
        path = os.fsdecode(parts[0])
    return None
