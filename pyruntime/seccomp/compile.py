"""A seccomp profile into a BPF program: libseccomp (Debian's libseccomp2, 2.5.x, through ctypes)
generates it and it is exported (``seccomp_export_bpf``), as runc and crun do; kernel.py loads
it. Loading it ourselves gives every filter flag the kernel has (libseccomp 2.5.4 has no
attribute for SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) and lets us prepend runc's -ENOSYS stub
(see ``_enosys_stub``). Programs are kept in an on-disk cache under the runtime's --root.
"""
from __future__ import annotations

import os

from pyruntime.lean import jsonio
from pyruntime.errors import ConfigError, RuntimeFailure

# (and so kernel.py is loaded wherever a program is made: the init's install() runs after
# pivot_root, where nothing can be imported any more)
from pyruntime.seccomp.kernel import (Program, FLAG_NEW_LISTENER, FLAG_SPEC_ALLOW, FLAG_TSYNC, FLAG_WAIT_KILLABLE_RECV, FLAGS,
                                      kernel_supports_flags)
from pyruntime.seccomp.profile import ACT_ERRNO, ARCHES, OPERATORS, _action_value, _parse, _uses_notify, enabled

LIBSECCOMP = "libseccomp.so.2"

# enum scmp_filter_attr (2.5.x: 1..9; SCMP_FLTATR_CTL_WAITKILL=10 is 2.6 only)
_FLTATR_CTL_NNP = 3
_FLTATR_CTL_OPTIMIZE = 8

_NR_SCMP_ERROR = -1
_ENOSYS = 38
_EEXIST = 17

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
                             f"compile() must run before pivot_root): {e}", errno=e.errno) from None
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


def compile(seccomp: dict, path: str = "linux.seccomp",  # noqa: A001
            cache_dir: str | None = None) -> Program | None:
    """Build the filter with libseccomp; None if seccomp is disabled. Raises ConfigError.

    cache_dir: keep the program there, and reuse it for the same profile. libseccomp is slow on
    a profile as long as Docker's default (bench/ shows it), and every Docker container (and
    every exec into one) brings the same profile: crun keeps such a cache too
    (<root>/.cache/seccomp)."""
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
_BUILDERS = (__file__, os.path.join(os.path.dirname(__file__), "profile.py"))


def _cache_path(cache_dir: str, seccomp: dict) -> str:
    """The file for this profile: named by a hash of all the program depends on: the profile,
    the libseccomp that builds it, the kernel (libseccomp asks it what it supports) and the
    code that builds it, here and in profile.py (a change there must not reuse programs built
    by the old code)."""
    from pyruntime import lean
    code = ":".join(f"{st.st_mtime_ns}:{st.st_size}" for st in map(os.stat, _BUILDERS))
    key = "\0".join((_library_identity(), os.uname().release, code,
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
