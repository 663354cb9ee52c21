"""The config's linux.seccomp object: the names a profile may use (seccomp.h 2.5.x), and check(),
the semantic validation that raises a ConfigError naming the JSON path."""
from __future__ import annotations

import os

from pyruntime.errors import MISSING, ConfigError

from pyruntime.seccomp.kernel import FLAG_NEW_LISTENER, FLAG_TSYNC, FLAG_WAIT_KILLABLE_RECV, FLAGS, kernel_supports_flags

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

_EPERM = 1


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
