"""linux.seccomp: validate, compile with libseccomp, install, and talk to a seccomp agent.

The filter is built by libseccomp (Debian's libseccomp2, 2.5.x, through ctypes): libseccomp
generates the BPF program, which is exported (``seccomp_export_bpf``) and installed with the
seccomp(2) syscall by this module, as runc and crun do. Loading it ourselves gives every filter
flag the kernel has (libseccomp 2.5.4 has no attribute for SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
and lets us prepend runc's -ENOSYS stub (see ``_enosys_stub``).

Two-step use, for the container init::

    prog = seccomp.compile(config["linux"]["seccomp"])   # in the runtime, before fork
    ...                                                  # fork; set up the container
    fd = seccomp.install(prog)                           # in the init, last before execve

compile() must run where libseccomp.so.2 can be opened, i.e. before pivot_root (the container's
rootfs has no libseccomp, and no Python modules either); install() needs no file and imports
nothing new (only ctypes, already loaded by compile()). ``seccomp.load(cfg)`` does both at once
and is only for processes that still see the host filesystem (tests, tools). This module imports nothing heavy at import time;
ctypes and libseccomp are loaded on first use.

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
from __future__ import annotations

from pyruntime.lean import socket as _socket
import os
import struct

from pyruntime.lean import jsonio
from pyruntime.errors import MISSING, ConfigError, RuntimeFailure

LIBSECCOMP = "libseccomp.so.2"

# ------------------------------------------------------------------ constants (seccomp.h 2.5.x)

# SCMP_ACT_* values; ERRNO and TRACE carry a 16-bit datum.
ACT_KILL_THREAD = 0x00000000
ACT_KILL_PROCESS = 0x80000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_NOTIFY = 0x7FC00000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000

ACTIONS = {
    "SCMP_ACT_KILL": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": ACT_TRAP,
    "SCMP_ACT_ERRNO": ACT_ERRNO,
    "SCMP_ACT_TRACE": ACT_TRACE,
    "SCMP_ACT_ALLOW": ACT_ALLOW,
    "SCMP_ACT_LOG": ACT_LOG,
    "SCMP_ACT_NOTIFY": ACT_NOTIFY,
}
ERRNO_ACTIONS = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

# enum scmp_compare
OPERATORS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# OCI name -> libseccomp's arch name (seccomp_arch_resolve_name). libseccomp 2.5.4 does not know
# loongarch64 (2.6 does): it is known here and reported as unsupported by compile().
ARCHES = {
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc",
    "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390",
    "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc",
    "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64",
    "SCMP_ARCH_LOONGARCH64": "loongarch64",
}

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

# enum scmp_filter_attr (2.5.x: 1..9; SCMP_FLTATR_CTL_WAITKILL=10 is 2.6 only)
_FLTATR_CTL_NNP = 3
_FLTATR_CTL_OPTIMIZE = 8

_NR_SCMP_ERROR = -1
_SECCOMP_SET_MODE_FILTER = 1
_ENOSYS = 38
_EPERM = 1
_EFAULT = 14
_EINVAL = 22
_EACCES = 13
_EEXIST = 17

# seccomp user notification ioctls (linux/seccomp.h, _IOWR('!', nr, type))
_IOCTL_NOTIF_RECV = 0xC0502100      # struct seccomp_notif (80 bytes)
_IOCTL_NOTIF_SEND = 0xC0182101      # struct seccomp_notif_resp (24 bytes)
_IOCTL_NOTIF_ID_VALID = 0x40082102  # __u64
USER_NOTIF_FLAG_CONTINUE = 1

SECCOMP_FD_NAME = "seccompFd"


# ------------------------------------------------------------------ helpers

def _is_uint(v, bits: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < (1 << bits)


def enabled(seccomp: dict | None) -> bool:
    """runc: no defaultAction and no syscalls means seccomp is off."""
    if not seccomp:
        return False
    return bool(seccomp.get("defaultAction") or seccomp.get("syscalls"))


def _uses_notify(seccomp: dict) -> bool:
    return any(isinstance(s, dict) and s.get("action") == "SCMP_ACT_NOTIFY"
               for s in seccomp.get("syscalls") or ())


def _action_value(name: str, errno_ret) -> int:
    base = ACTIONS[name]
    if name in ERRNO_ACTIONS:
        return base | ((_EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    return base


# ------------------------------------------------------------------ check

def check(seccomp: dict, path: str = "linux.seccomp") -> None:
    """Validate linux.seccomp semantically; raise ConfigError naming the JSON path."""
    if seccomp is None:
        return
    if not isinstance(seccomp, dict):
        raise ConfigError(path, seccomp, "is not an object")
    if not enabled(seccomp):
        return
    _parse(seccomp, path)
    flags = seccomp.get("flags")
    for i, flag in enumerate(flags or ()):
        probe = FLAGS[flag]
        if probe == FLAG_TSYNC:
            continue
        if probe == FLAG_WAIT_KILLABLE_RECV:
            probe |= FLAG_NEW_LISTENER
        if not kernel_supports_flags(probe):
            raise ConfigError(f"{path}.flags[{i}]", flag, "is not supported by this kernel")


def _parse(seccomp: dict, path: str) -> None:
    default = seccomp.get("defaultAction", MISSING)
    if default is MISSING or default == "":
        raise ConfigError(f"{path}.defaultAction", default, "is required")
    if default not in ACTIONS:
        raise ConfigError(f"{path}.defaultAction", default, "is not a seccomp action")
    if default == "SCMP_ACT_NOTIFY":
        raise ConfigError(f"{path}.defaultAction", default, "cannot be the default action")
    if "defaultErrnoRet" in seccomp and seccomp["defaultErrnoRet"] is not None:
        v = seccomp["defaultErrnoRet"]
        if not _is_uint(v, 16):
            raise ConfigError(f"{path}.defaultErrnoRet", v, "is not an errno number (0-65535)")
        if default not in ERRNO_ACTIONS:
            raise ConfigError(f"{path}.defaultErrnoRet", v,
                              f"is not allowed with defaultAction {default} "
                              "(only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take an errno)")

    arches = seccomp.get("architectures")
    if arches is not None:
        if not isinstance(arches, list):
            raise ConfigError(f"{path}.architectures", arches, "is not an array")
        for i, a in enumerate(arches):
            if a not in ARCHES:
                raise ConfigError(f"{path}.architectures[{i}]", a,
                                  "is not a seccomp architecture")

    flags = seccomp.get("flags")
    if flags is not None:
        if not isinstance(flags, list):
            raise ConfigError(f"{path}.flags", flags, "is not an array")
        for i, f in enumerate(flags):
            if f not in FLAGS:
                raise ConfigError(f"{path}.flags[{i}]", f, "is not a seccomp flag")

    listener = seccomp.get("listenerPath")
    if listener is not None and listener != "":
        if not isinstance(listener, str):
            raise ConfigError(f"{path}.listenerPath", listener, "is not a string")
        if len(os.fsencode(listener)) > 107:
            raise ConfigError(f"{path}.listenerPath", listener,
                              "is too long for a unix socket path (107 bytes at most)")
    meta = seccomp.get("listenerMetadata")
    if meta is not None and meta != "":
        if not isinstance(meta, str):
            raise ConfigError(f"{path}.listenerMetadata", meta, "is not a string")
        if not listener:
            raise ConfigError(f"{path}.listenerMetadata", meta,
                              "must not be set without listenerPath")

    syscalls = seccomp.get("syscalls")
    if syscalls is None:
        return
    if not isinstance(syscalls, list):
        raise ConfigError(f"{path}.syscalls", syscalls, "is not an array")
    for i, sc in enumerate(syscalls):
        p = f"{path}.syscalls[{i}]"
        if not isinstance(sc, dict):
            raise ConfigError(p, sc, "is not an object")
        names = sc.get("names", MISSING)
        if names is MISSING or not isinstance(names, list) or not names:
            raise ConfigError(f"{p}.names", names, "must list at least one syscall name")
        for j, n in enumerate(names):
            if not isinstance(n, str) or not n:
                raise ConfigError(f"{p}.names[{j}]", n, "is not a syscall name")
        action = sc.get("action", MISSING)
        if action is MISSING:
            raise ConfigError(f"{p}.action", action, "is required")
        if action not in ACTIONS:
            raise ConfigError(f"{p}.action", action, "is not a seccomp action")
        if sc.get("errnoRet") is not None:
            v = sc["errnoRet"]
            if not _is_uint(v, 16):
                raise ConfigError(f"{p}.errnoRet", v, "is not an errno number (0-65535)")
            if action not in ERRNO_ACTIONS:
                raise ConfigError(f"{p}.errnoRet", v,
                                  f"is not allowed with action {action} "
                                  "(only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take an errno)")
        if action == "SCMP_ACT_NOTIFY":
            if "write" in names:
                raise ConfigError(f"{p}.names[{names.index('write')}]", "write",
                                  "cannot use SCMP_ACT_NOTIFY: SCMP_ACT_NOTIFY cannot be used "
                                  "for the write syscall (the runtime needs write to hand "
                                  "over the notify fd)")
            if not listener:
                raise ConfigError(f"{path}.listenerPath", MISSING,
                                  "is required when a rule uses SCMP_ACT_NOTIFY "
                                  f"({p})")
        args = sc.get("args")
        if args is None:
            continue
        if not isinstance(args, list):
            raise ConfigError(f"{p}.args", args, "is not an array")
        for k, arg in enumerate(args):
            ap = f"{p}.args[{k}]"
            if not isinstance(arg, dict):
                raise ConfigError(ap, arg, "is not an object")
            idx = arg.get("index", MISSING)
            if not _is_uint(idx, 32) or idx > 5:
                raise ConfigError(f"{ap}.index", idx, "is not a syscall argument index (0-5)")
            for key in ("value", "valueTwo"):
                v = arg.get(key, MISSING)
                if v is MISSING and key == "valueTwo":
                    continue
                if not _is_uint(v, 64):
                    raise ConfigError(f"{ap}.{key}", v, "is not a uint64")
            op = arg.get("op", MISSING)
            if op not in OPERATORS:
                raise ConfigError(f"{ap}.op", op, "is not a seccomp operator")


# ------------------------------------------------------------------ libseccomp via ctypes

_lib_cache = None


def _lib():
    global _lib_cache
    if _lib_cache is not None:
        return _lib_cache
    import ctypes

    try:
        lib = ctypes.CDLL(LIBSECCOMP)
    except OSError as e:
        raise RuntimeFailure(f"seccomp: cannot load {LIBSECCOMP} (is libseccomp2 installed? "
                             f"compile() must run before pivot_root): {e}") from None
    u32, c_int, vp = ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p

    class ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
        _fields_ = [("arg", ctypes.c_uint), ("op", c_int),
                    ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

    class Version(ctypes.Structure):  # struct scmp_version
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    sigs = {
        "seccomp_init": (vp, [u32]),
        "seccomp_release": (None, [vp]),
        "seccomp_arch_resolve_name": (u32, [ctypes.c_char_p]),
        "seccomp_arch_native": (u32, []),
        "seccomp_arch_add": (c_int, [vp, u32]),
        "seccomp_attr_set": (c_int, [vp, c_int, u32]),
        "seccomp_syscall_resolve_name": (c_int, [ctypes.c_char_p]),
        "seccomp_syscall_resolve_name_arch": (c_int, [u32, ctypes.c_char_p]),
        "seccomp_rule_add_array": (c_int, [vp, u32, c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)]),
        "seccomp_export_bpf": (c_int, [vp, c_int]),
        "seccomp_version": (ctypes.POINTER(Version), []),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    lib.ArgCmp = ArgCmp
    _lib_cache = lib
    return lib


def libseccomp_version() -> str:
    v = _lib().seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def resolve_syscall(name: str, arch: str | None = None) -> int | None:
    """Syscall number for the native arch (or an OCI arch name); None if libseccomp does not
    know it. Negative numbers are libseccomp's pseudo syscalls (e.g. socketcall on x86_64)."""
    lib = _lib()
    if arch is None:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
    else:
        nr = lib.seccomp_syscall_resolve_name_arch(_arch_token(arch), name.encode())
    return None if nr == _NR_SCMP_ERROR else nr


def _arch_token(oci_arch: str) -> int:
    tok = _lib().seccomp_arch_resolve_name(ARCHES[oci_arch].encode())
    if tok == 0:
        raise ConfigError("linux.seccomp.architectures", oci_arch,
                          f"is not supported by libseccomp {libseccomp_version()}")
    return tok


class Program:
    """A compiled filter: raw BPF (struct sock_filter array) and the seccomp(2) flags."""

    __slots__ = ("bpf", "flags", "notify")

    def __init__(self, bpf: bytes, flags: int, notify: bool):
        self.bpf, self.flags, self.notify = bpf, flags, notify

    def __len__(self) -> int:
        return len(self.bpf) // 8

    def __repr__(self) -> str:
        return f"<seccomp.Program {len(self)} insns flags={self.flags:#x} notify={self.notify}>"


def compile(seccomp: dict, path: str = "linux.seccomp",  # noqa: A001
            cache_dir: str | None = None) -> Program | None:
    """Build the filter with libseccomp; None if seccomp is disabled. Raises ConfigError.

    cache_dir: keep the program there, and reuse it for the same profile. libseccomp needs
    30-40 ms for Docker's default profile and every Docker container (and every exec into one)
    brings the same profile: crun keeps such a cache too (<root>/.cache/seccomp)."""
    if seccomp is None:
        return None
    if not isinstance(seccomp, dict):
        raise ConfigError(path, seccomp, "is not an object")
    if not enabled(seccomp):
        return None
    _parse(seccomp, path)
    notify = _uses_notify(seccomp)
    cached = _cache_path(cache_dir, seccomp) if cache_dir else None
    bpf = _cache_read(cached) if cached else None
    if bpf is None:
        rules = _libseccomp_filter(seccomp, path)  # first: its errors name the JSON path
        bpf = _enosys_stub(seccomp, seccomp["defaultAction"]) + rules
        if cached:
            _cache_write(cached, bpf)
    return Program(bpf, _filter_flags(seccomp.get("flags"), notify), notify)


def _libseccomp_filter(seccomp: dict, path: str) -> bytes:
    """The filter of the profile's rules, as libseccomp builds it (raw BPF)."""
    lib = _lib()
    default_name = seccomp["defaultAction"]
    default = _action_value(default_name, seccomp.get("defaultErrnoRet"))
    syscalls = seccomp.get("syscalls") or []

    ctx = lib.seccomp_init(default)
    if not ctx:
        raise RuntimeFailure(f"seccomp: seccomp_init({default_name}) failed")
    try:
        # NNP is process.noNewPrivileges' business, never the filter's.
        _ok(lib.seccomp_attr_set(ctx, _FLTATR_CTL_NNP, 0), "seccomp_attr_set(CTL_NNP)")
        for i, arch in enumerate(seccomp.get("architectures") or ()):
            try:
                tok = _arch_token(arch)
            except ConfigError as e:
                raise ConfigError(f"{path}.architectures[{i}]", arch, e.problem) from None
            rc = lib.seccomp_arch_add(ctx, tok)
            if rc < 0 and rc != -_EEXIST:
                _ok(rc, f"adding architecture {arch}")
        if len(syscalls) > 32:
            # binary tree: fewer instructions per syscall for long profiles (as runc);
            # not with 0 rules (libseccomp <= 2.5.4 misbehaves). Not fatal if refused.
            lib.seccomp_attr_set(ctx, _FLTATR_CTL_OPTIMIZE, 2)
        for i, sc in enumerate(syscalls):
            action = _action_value(sc["action"], sc.get("errnoRet"))
            if action == default:
                continue
            conds = _conditions(lib, sc.get("args") or ())
            for name in sc["names"]:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == _NR_SCMP_ERROR:
                    continue  # unknown to libseccomp: assume the kernel lacks it (runc)
                for group in conds:
                    arr = (lib.ArgCmp * len(group))(*group) if group else None
                    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(group), arr)
                    _ok(rc, f"adding rule {path}.syscalls[{i}] for syscall {name}")
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


# ------------------------------------------------------------------ the cache of programs

CACHE_SUBDIR = ".cache/seccomp"  # under the runtime's --root, as crun's
CACHE_MAX = 64  # programs kept; past that the cache starts over (profiles are few in practice)


def _cache_path(cache_dir: str, seccomp: dict) -> str:
    """The file for this profile: named by a hash of all the program depends on: the profile,
    the libseccomp that builds it, the kernel (libseccomp asks it what it supports) and this
    module's code (a change here must not reuse programs built by the old code)."""
    from pyruntime import lean
    me = os.stat(__file__)
    key = "\0".join((_library_identity(), os.uname().release, f"{me.st_mtime_ns}:{me.st_size}",
                     jsonio.dumps(seccomp, sort_keys=True)))
    return os.path.join(cache_dir, lean.sha256(key.encode()).hexdigest() + ".bpf")


def _library_identity() -> str:
    """libseccomp's version and the file it was loaded from: a distribution's fix can keep the
    version number and still change the programs it builds."""
    version = libseccomp_version()  # loads the library
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and "/libseccomp.so" in parts[5]:
                path = parts[5].strip()
                try:
                    st = os.stat(path)
                except OSError:
                    break
                return f"{version}:{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    return version


def _cache_read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            bpf = f.read()
    except OSError:
        return None
    return bpf if bpf and len(bpf) % 8 == 0 else None  # whole struct sock_filter entries


def _cache_write(path: str, bpf: bytes) -> None:
    """Best effort: a cache that cannot be written only costs the next call the compile.
    Written aside and renamed, so a concurrent reader sees all of a program or none."""
    d = os.path.dirname(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        names = os.listdir(d)
        if len(names) >= CACHE_MAX:
            for n in names:
                try:
                    os.unlink(os.path.join(d, n))
                except OSError:
                    pass
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600),
                  "wb") as f:
            f.write(bpf)
        os.rename(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _conditions(lib, args) -> list[list]:
    """Rules to add for one syscall, each a list of struct scmp_arg_cmp."""
    if not args:
        return [[]]
    conds = [lib.ArgCmp(a["index"], OPERATORS[a["op"]], a["value"], a.get("valueTwo") or 0)
             for a in args]
    indexes = [a["index"] for a in args]
    if len(set(indexes)) != len(indexes):
        return [[c] for c in conds]  # same argument twice: one rule each (runc)
    return [conds]


def _ok(rc: int, what: str) -> None:
    if rc < 0:
        raise RuntimeFailure(f"seccomp: {what}: {os.strerror(-rc)}")


def _export(lib, ctx) -> bytes:
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        _ok(lib.seccomp_export_bpf(ctx, fd), "seccomp_export_bpf")
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def _filter_flags(flags, notify: bool) -> int:
    value = 0
    if flags is None:
        # runc and crun default to SPEC_ALLOW (no forced SSB mitigation) when it is available.
        flags = ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"] if kernel_supports_flags(FLAG_SPEC_ALLOW) else []
    for f in flags:
        bit = FLAGS[f]
        if bit == FLAG_TSYNC:
            continue  # single-threaded init: nothing to sync (runc ignores it too)
        if bit == FLAG_WAIT_KILLABLE_RECV and not notify:
            continue  # meaningless without a listener; the kernel would refuse it
        value |= bit
    if notify:
        value |= FLAG_NEW_LISTENER
    return value


# ------------------------------------------------------------------ the -ENOSYS stub (runc)

# Kernel AUDIT_ARCH values of libseccomp arch tokens where they differ (x32 is x86_64 with
# bit 30 set in the syscall number).
_X32_TOKEN = 0x4000003E
_X86_64_AUDIT = 0xC000003E
_X32_BIT = 0x40000000
_S390_TOKENS = (0x16, 0x80000016)

_LD_ABS_W = 0x20   # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15      # BPF_JMP | BPF_JEQ | BPF_K
_JGT_K = 0x25      # BPF_JMP | BPF_JGT | BPF_K
_JSET_K = 0x45     # BPF_JMP | BPF_JSET | BPF_K
_JA = 0x05         # BPF_JMP | BPF_JA
_RET_K = 0x06      # BPF_RET | BPF_K


def _enosys_stub(seccomp: dict, default_name: str) -> bytes:
    """A prologue that returns ENOSYS for syscalls newer than any the profile names.

    With a denying default action, a syscall the profile predates (say clone3 or openat2 under an
    old profile) would get EPERM and libc would not fall back to the older syscall; runc
    (libcontainer/seccomp/patchbpf) answers ENOSYS for every syscall number above the largest one
    the profile names, per listed architecture. Same here; the rest of the program is
    libseccomp's, untouched. Skipped when the default already allows, or is ENOSYS.
    """
    if default_name in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"):
        return b""
    if default_name == "SCMP_ACT_ERRNO" and seccomp.get("defaultErrnoRet") == _ENOSYS:
        return b""
    lib = _lib()
    names = {n for sc in seccomp.get("syscalls") or () for n in sc["names"]}
    # kernel audit arch -> {libseccomp token: largest syscall number}
    per_arch: dict[int, dict[int, int]] = {}
    for arch in seccomp.get("architectures") or ():
        tok = lib.seccomp_arch_resolve_name(ARCHES[arch].encode())
        if tok == 0 or tok in _S390_TOKENS:
            continue  # s390 multiplexes unknown syscalls through nr 0: leave it alone
        largest = max((nr for n in names
                       if (nr := lib.seccomp_syscall_resolve_name_arch(tok, n.encode())) >= 0),
                      default=None)
        if largest is None:
            continue
        audit = _X86_64_AUDIT if tok == _X32_TOKEN else tok
        per_arch.setdefault(audit, {})[tok] = largest
    if not per_arch:
        return b""

    # Assemble with symbolic labels; all jumps are forward and short.
    insns: list[tuple] = [(_LD_ABS_W, 0, 0, 4)]                      # A = arch
    sections = []
    for audit, modes in per_arch.items():
        label = f"arch{audit:x}"
        insns.append((_JEQ_K, label, 0, audit))
        body: list[tuple] = [(_LD_ABS_W, 0, 0, 0)]                   # A = nr
        if audit == _X86_64_AUDIT:
            native = modes.get(_X86_64_AUDIT)
            x32 = modes.get(_X32_TOKEN)
            body.append((_JSET_K, f"{label}x32", 0, _X32_BIT))
            body += _gt_enosys(native)
            body.append(("label", f"{label}x32"))
            body += _gt_enosys(x32)
        else:
            body += _gt_enosys(modes[audit])
        sections.append((label, body))
    insns.append((_JA, 0, 0, "filter"))
    for label, body in sections:
        insns.append(("label", label))
        insns += body
    insns.append(("label", "enosys"))
    insns.append((_RET_K, 0, 0, ACT_ERRNO | _ENOSYS))
    insns.append(("label", "filter"))
    return _assemble(insns)


def _gt_enosys(largest: int | None) -> list[tuple]:
    if largest is None:
        return [(_JA, 0, 0, "filter")]
    return [(_JGT_K, "enosys", 0, largest), (_JA, 0, 0, "filter")]


def _assemble(insns: list[tuple]) -> bytes:
    import struct

    labels, pc = {}, 0
    for ins in insns:
        if ins[0] == "label":
            labels[ins[1]] = pc
        else:
            pc += 1
    out, pc = [], 0
    for ins in insns:
        if ins[0] == "label":
            continue
        code, jt, jf, k = ins
        if isinstance(jt, str):
            jt = labels[jt] - pc - 1
        if isinstance(jf, str):
            jf = labels[jf] - pc - 1
        if isinstance(k, str):
            k = labels[k] - pc - 1
        assert 0 <= jt < 256 and 0 <= jf < 256
        out.append(struct.pack("=HBBI", code, jt, jf, k))
        pc += 1
    return b"".join(out)


# ------------------------------------------------------------------ install

def _libc():
    from pyruntime.linux.syscalls import libc
    return libc()


def _sys_seccomp_nr() -> int:
    from pyruntime.linux.syscalls import nr
    try:
        return nr("seccomp")
    except OSError as e:
        raise RuntimeFailure(f"seccomp: {e.strerror}") from e


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


def install(prog: Program | None) -> int | None:
    """Load a compiled filter into the calling thread (the init, right before execve).

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


def load(seccomp: dict) -> int | None:
    """compile() + install() for the current process; the notify fd or None."""
    return install(compile(seccomp))


# ------------------------------------------------------------------ agent side

class Notification:
    """struct seccomp_notif: a syscall waiting for the agent's answer."""

    __slots__ = ("id", "pid", "flags", "nr", "arch", "ip", "args")

    def __init__(self, raw: bytes):
        import struct

        (self.id, self.pid, self.flags, self.nr, self.arch, self.ip,
         *args) = struct.unpack("=QIIiIQ6Q", raw[:80])
        self.args = tuple(args)

    def __repr__(self) -> str:
        return f"<seccomp.Notification id={self.id} pid={self.pid} nr={self.nr} args={self.args}>"


def notify_receive(fd: int) -> Notification:
    """Block until a notified syscall arrives on a notify fd (SECCOMP_IOCTL_NOTIF_RECV)."""
    import fcntl

    buf = bytearray(80)  # must be zeroed
    while True:
        try:
            fcntl.ioctl(fd, _IOCTL_NOTIF_RECV, buf, True)
            return Notification(bytes(buf))
        except InterruptedError:
            continue


def notify_respond(fd: int, notif_id: int, *, val: int = 0, error: int = 0,
                   continue_syscall: bool = False) -> None:
    """Answer a notification: the syscall returns val, or fails with errno `error` (positive),
    or (continue_syscall) really runs. Raises ProcessLookupError (ENOENT) if the caller is gone."""
    import fcntl
    import struct

    flags = USER_NOTIF_FLAG_CONTINUE if continue_syscall else 0
    resp = bytearray(struct.pack("=QqiI", notif_id, val, -error if error else 0, flags))
    try:
        fcntl.ioctl(fd, _IOCTL_NOTIF_SEND, resp, True)
    except FileNotFoundError:
        raise ProcessLookupError(f"seccomp notification {notif_id} is no longer valid") from None


def notify_id_valid(fd: int, notif_id: int) -> bool:
    import fcntl
    import struct

    try:
        fcntl.ioctl(fd, _IOCTL_NOTIF_ID_VALID, struct.pack("=Q", notif_id))
        return True
    except FileNotFoundError:
        return False


def notify_answer(fd: int, *, val: int = 0, error: int = 0,
                  continue_syscall: bool = False) -> Notification:
    """Receive one notification and answer it; returns what was received (test/agent helper)."""
    n = notify_receive(fd)
    notify_respond(fd, n.id, val=val, error=error, continue_syscall=continue_syscall)
    return n


def process_state(state: dict, metadata: str = "", pid: int | None = None) -> dict:
    """The runtime-spec ContainerProcessState sent to a seccomp agent (as runc builds it)."""
    from pyruntime import SPEC_VERSION

    msg = {
        "ociVersion": SPEC_VERSION,
        "fds": [SECCOMP_FD_NAME],
        "pid": state.get("pid") if pid is None else pid,
    }
    if metadata:
        msg["metadata"] = metadata
    msg["state"] = state
    return msg


def connect_listener(listener_path: str, timeout: float | None = 30.0):
    """Connect to the agent at listenerPath (done by the runtime before the fork: the
    container's process can no longer reach host paths when its filter is loaded)."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        s.connect(listener_path)
    except OSError as e:
        s.close()
        raise RuntimeFailure(f"seccomp: failed to connect with seccomp agent at listenerPath "
                             f"{listener_path}: {e.strerror or e}") from None
    return s


def send_state(sock, notify_fd: int, state: dict, metadata: str = "",
               pid: int | None = None) -> None:
    """Send the container process state JSON with the notify fd (SCM_RIGHTS, on the first
    sendmsg) over a connected listener socket, then close it: one message per connection.
    It runs in the container's process after pivot_root, where no module can be imported any
    more: it uses only modules loaded before (see the imports at the top)."""
    data = jsonio.dumps(process_state(state, metadata, pid)).encode()
    try:
        try:
            fds = struct.pack("i", notify_fd)
            sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
            if sent < len(data):
                sock.sendall(data[sent:])
        finally:
            sock.close()
    except OSError as e:
        raise RuntimeFailure(f"seccomp: sending the notify fd to the listener: "
                             f"{e.strerror or e}") from None


def send_to_listener(listener_path: str, notify_fd: int, state: dict, metadata: str = "",
                     pid: int | None = None, timeout: float | None = 30.0) -> None:
    """connect_listener + send_state, for a process that can still reach listenerPath."""
    send_state(connect_listener(listener_path, timeout), notify_fd, state, metadata, pid)
