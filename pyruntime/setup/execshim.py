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

The created init's shim also waits for `start` (build's `wait`): the init execs it once it
has taken every other last step, so that `start` waits for neither those nor the
interpreter's teardown. It first makes itself non-dumpable again, handles the init's fatal
signals (exiting 128 + the signal), names itself pyruntime:INIT, then opens exec.fifo for
writing (blocking until `start` opens it), puts that end on the report fd's number and
writes FIFO_READY, and goes on as above.
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


class _Asm:
    """Machine code with rel32 references to labels (in the code or the data after it)."""

    def __init__(self):
        self.code, self.labels, self.refs = bytearray(), {}, []

    def op(self, *parts: bytes) -> None:
        for part in parts:
            self.code += part

    def ref(self, label: str) -> None:
        self.refs.append((len(self.code), label))
        self.code += b"\0\0\0\0"

    def at(self, label: str) -> None:
        self.labels[label] = len(self.code)

    def linked(self, data_labels: dict) -> bytes:
        where = {**self.labels, **data_labels}
        for pos, label in self.refs:
            self.code[pos:pos + 4] = struct.pack("<i", where[label] - (pos + 4))
        return bytes(self.code)


def _i32(v: int) -> bytes:
    return struct.pack("<i", v)


def _syscall(asm: _Asm, nr: int) -> None:
    asm.op(b"\xb8" + _i32(nr), b"\x0f\x05")  # mov eax, nr; syscall


def _code(report_fd: int, nerr: int, wait: int | None, die_on=()) -> _Asm:
    """x86_64 machine code. Data labels: "table" (the messages), and with `wait` (the dirfd
    of the fifo's path, -100 for none) "path", "name", "zero" and "sigaction" (a handler
    for each signal of die_on, which ends the process with 128 + the signal: a pid
    namespace's init ignores a signal it does not handle, even from the host)."""
    k = _i32(report_fd)
    asm = _Asm()
    if wait is not None:
        # the created init: non-dumpable again (execve made it dumpable: nothing in the
        # container may reach it), its fatal signals handled, named; then the fifo
        asm.op(b"\xbf" + _i32(4), b"\x31\xf6")              # edi = PR_SET_DUMPABLE, esi = 0
        _syscall(asm, 157)                                  # prctl
        for sig in die_on:
            asm.op(b"\xbf" + _i32(sig), b"\x48\x8d\x35")      # edi = sig; lea rsi, sigaction
            asm.ref("sigaction")
            asm.op(b"\x31\xd2", b"\x41\xba" + _i32(8))        # edx = NULL, r10d = 8
            _syscall(asm, 13)                               # rt_sigaction
        # named last: whoever waits for the name finds the handlers in place
        asm.op(b"\xbf" + _i32(15), b"\x48\x8d\x35")           # edi = PR_SET_NAME; lea rsi, name
        asm.ref("name")
        _syscall(asm, 157)                                  # prctl
        asm.op(b"\xbf" + _i32(wait), b"\x48\x8d\x35")         # edi = dirfd; lea rsi, path
        asm.ref("path")
        asm.op(b"\xba" + _i32(os.O_WRONLY | os.O_CLOEXEC), b"\x45\x31\xd2")  # edx; r10d = 0
        _syscall(asm, 257)                                  # openat: blocks until `start`
        asm.op(b"\x48\x85\xc0", b"\x0f\x88")                  # test rax, rax; js die
        asm.ref("die")
        asm.op(b"\x49\x89\xc4", b"\x4c\x89\xe7")              # mov r12, rax; mov rdi, r12
        asm.op(b"\xbe" + k, b"\xba" + _i32(os.O_CLOEXEC))     # esi = K, edx = O_CLOEXEC
        _syscall(asm, 292)                                  # dup3: the write end takes K
        asm.op(b"\x48\x85\xc0", b"\x0f\x88")                  # test rax, rax; js die
        asm.ref("die")
        asm.op(b"\x4c\x89\xe7")                              # mov rdi, r12
        _syscall(asm, 3)                                    # close
        if wait >= 0:
            asm.op(b"\xbf" + _i32(wait))                     # edi = dirfd
            _syscall(asm, 3)                                # close
        asm.op(b"\xbf" + k, b"\x48\x8d\x35")                  # edi = K; lea rsi, zero
        asm.ref("zero")
        asm.op(b"\xba" + _i32(1))                            # edx = 1
        _syscall(asm, 1)                                    # write: "0", we are about to exec
        asm.op(b"\x48\x83\xf8\x01", b"\x0f\x85")              # cmp rax, 1; jne die
        asm.ref("die")
    asm.op(b"\x48\x89\xe3")                                  # mov rbx, rsp
    asm.op(b"\x48\x83\x3b\x02", b"\x0f\x83")                  # cmp qword [rbx], 2; jae args
    asm.ref("args")
    asm.op(b"\x48\xc7\xc0\xea\xff\xff\xff", b"\xe9")          # rax = -EINVAL; jmp fail
    asm.ref("fail")
    asm.at("args")
    if report_fd > 2:
        asm.op(b"\xbf" + k, b"\xbe" + _i32(2), b"\xba" + _i32(1))  # K, F_SETFD, FD_CLOEXEC
        _syscall(asm, 72)                                   # fcntl
        asm.op(b"\x48\x85\xc0", b"\x0f\x88")                  # test rax, rax; js fail
        asm.ref("fail")
    asm.op(b"\x48\x8b\x7b\x08")                              # mov rdi, [rbx+8]   argv[0]: path
    asm.op(b"\x48\x8d\x73\x10")                              # lea rsi, [rbx+16]  &argv[1]
    asm.op(b"\x48\x8b\x0b")                                  # mov rcx, [rbx]     argc
    asm.op(b"\x48\x8d\x54\xcb\x10")                          # lea rdx, [rbx+rcx*8+16] envp
    _syscall(asm, 59)                                       # execve
    asm.at("fail")
    asm.op(b"\x48\xf7\xd8")                                  # neg rax: errno
    asm.op(b"\x48\x3d" + _i32(nerr), b"\x72\x02")             # cmp rax, nerr; jb +2
    asm.op(b"\x31\xc0")                                      # xor eax, eax: the generic one
    asm.op(b"\x48\x8d\x0d")                                  # lea rcx, table
    asm.ref("table")
    asm.op(b"\x48\xc1\xe0\x04", b"\x48\x8b\x34\x01")          # shl rax, 4; rsi = [rcx+rax]
    asm.op(b"\x48\x01\xce", b"\x48\x8b\x54\x01\x08")          # add rsi, rcx; rdx = length
    asm.op(b"\xbf" + k)                                      # edi = K
    _syscall(asm, 1)                                        # write the message
    asm.at("die")
    asm.op(b"\xbf" + _i32(127))                              # edi = 127
    _syscall(asm, 231)                                      # exit_group
    asm.op(b"\xf4")                                          # hlt
    asm.at("on_signal")
    asm.op(b"\x81\xc7" + _i32(128))                          # edi += 128 (edi: the signal)
    _syscall(asm, 231)                                      # exit_group
    asm.op(b"\xf4")                                          # hlt
    return asm


_SA_RESTORER = 0x04000000
# the created init's name while it waits (as runc's "runc:[2:INIT]"), at most 15 bytes
WAIT_NAME = b"pyruntime:INIT"


def build(arg0: str, report_fd: int, encode, wait: tuple[int, str] | None = None,
          die_on=()) -> bytes:
    """The shim's ELF image. encode(msg, errno) -> the bytes to write to report_fd for a
    failure (errno None for the generic message). wait=(dirfd, path): the created init's
    shim, which first opens path (at dirfd, -1 for none: an absolute path) for writing,
    which blocks until `start` opens the other end, puts that write end on report_fd's
    number (report_fd is the fifo's O_PATH fd) and writes the FIFO_READY byte; die_on: the
    signals that end it while it waits."""
    generic = encode(f'exec: "{arg0}": exec failed', None)
    msgs = [generic] * (_EXEC_ERRNOS[-1] + 1)
    for e in _EXEC_ERRNOS:
        msgs[e] = encode(f'exec: "{arg0}": {os.strerror(e).lower()}', e)
    asm = _code(report_fd, len(msgs), None if wait is None else (wait[0] if wait[0] >= 0 else -100),
                die_on)
    table_off = (len(asm.code) + 7) & ~7
    strings_off = len(msgs) * 16
    table, blob, where = bytearray(), bytearray(), {}
    for m in msgs:
        if m not in where:
            where[m] = strings_off + len(blob)
            blob += m
        table += struct.pack("<QQ", where[m], len(m))
    data = table + blob
    labels = {"table": table_off}
    if wait is not None:
        for label, text in (("path", wait[1].encode()), ("name", WAIT_NAME), ("zero", b"0")):
            labels[label] = table_off + len(data)
            data += text + b"\0"
        data += b"\0" * (-len(data) % 8)
        labels["sigaction"] = table_off + len(data)
        handler = _BASE + _EHDR + _PHDR + asm.labels["on_signal"]
        # struct sigaction as the kernel takes it: handler, flags, restorer, mask; x86_64
        # wants a restorer, never used: the handler does not return
        data += struct.pack("<QQQQ", handler, _SA_RESTORER, handler, 0)
    code = asm.linked(labels)
    body = code + b"\0" * (table_off - len(code)) + data
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


def prepare(arg0: str, report_fd: int = -1, encode=None, wait=None, die_on=()) -> int:
    """The shim's sealed memfd, made before seccomp is loaded (memfd_create, write and fcntl
    may not be in the container's profile); -1 if it cannot be made. wait: see build()."""
    if report_fd < 0:
        report_fd = 2
        encode = lambda m, _errno: m.encode(errors="replace") + b"\n"  # noqa: E731
    try:
        return memfd(build(arg0, report_fd, encode, wait, die_on))
    except OSError:
        return -1


def execute(fd: int, path: str, args: list[str], env: dict, report_fd: int = -1,
            inherit: tuple[int, ...] = ()) -> None:
    """execve(path, args, env) through the shim in fd; returns only if the shim could not be
    run (then the caller may exec directly). The shim's own failure is reported on report_fd
    (or stderr) and ends the process. `inherit`: more fds the shim needs (a waiting shim's
    dirfd), which it closes."""
    if fd < 0:
        return
    argv = [path, *args]
    passed = [f for f in (report_fd, *inherit) if f >= 0]
    try:
        for f in passed:
            os.set_inheritable(f, True)
        try:
            os.execve(f"/proc/self/fd/{fd}", argv, env)  # execve: what seccomp profiles allow
        except OSError:
            os.execve(fd, argv, env)  # execveat(AT_EMPTY_PATH): no /proc in the container
    except OSError:
        pass
    try:
        for f in passed:
            os.set_inheritable(f, False)
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
