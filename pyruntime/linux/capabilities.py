"""Linux capabilities: names, checks against the host, and applying all five sets.

All five go through the syscall layer: prctl(PR_CAPBSET_DROP) for the bounding set, one
capset(2) for the effective, permitted and inheritable ones, prctl(PR_CAP_AMBIENT) for the
ambient set.
"""
from __future__ import annotations

from pyruntime.linux import syscalls
from pyruntime.errors import ConfigError, RuntimeFailure

NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]
NUMBER = {name: i for i, name in enumerate(NAMES)}
SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def bounding_set() -> int:
    """The caller's bounding set as a mask (from /proc, cheaper than 41 prctl calls; with
    them in a container that mounts no proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    return int(line.split()[1], 16)
    except FileNotFoundError:
        pass
    have = 0
    for i in range(last_cap() + 1):
        try:
            if syscalls.prctl(syscalls.PR_CAPBSET_READ, i):
                have |= 1 << i
        except OSError:  # EINVAL: past the kernel's last capability
            break
    return have


def check(caps, where: str) -> None:
    """Every name must be a capability this kernel knows (runc ignores unknown ones; the spec
    says a runtime must error)."""
    top = last_cap()
    for kind in SETS:
        for i, name in enumerate(getattr(caps, kind) or []):
            n = NUMBER.get(name)
            if n is None:
                raise ConfigError(f"{where}.{kind}[{i}]", name, "is not a capability")
            if n > top:
                raise ConfigError(f"{where}.{kind}[{i}]", name, "is not supported by this kernel")


def check_grantable(caps, where: str) -> None:
    """Fail at create, not at start, when a set asks for a capability outside our bounding
    set (this machine lacks CAP_SYS_RESOURCE, for one): it could never be granted."""
    have = bounding_set()
    for kind in SETS:
        for i, name in enumerate(getattr(caps, kind) or []):
            if not have >> NUMBER[name] & 1:
                raise ConfigError(f"{where}.{kind}[{i}]", name, "is not in the runtime's "
                                  "capability bounding set, so it cannot be granted")


def mask(names: list[str] | None) -> int:
    m = 0
    for name in names or ():
        m |= 1 << NUMBER[name]
    return m


def drop_bounding(caps) -> None:
    """Drop what the bounding set must not hold; raise if a wanted cap is not in the host's."""
    want = mask(caps.bounding)
    have = bounding_set()
    missing = want & ~have
    if missing:
        names = [NAMES[i] for i in range(len(NAMES)) if missing >> i & 1]
        raise RuntimeFailure(f"process.capabilities.bounding: {', '.join(names)} not in the "
                             f"runtime's capability bounding set, so it cannot be granted")
    for i in range(last_cap() + 1):
        if have >> i & 1 and not want >> i & 1:
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, i)


def set_exactly(effective: int, permitted: int, inheritable: int) -> None:
    """Make the three sets exactly these masks: one capset(2)."""
    syscalls.capset(effective, permitted, inheritable)


def apply_sets(caps) -> None:
    """capset the effective/permitted/inheritable sets exactly, then raise the ambient ones."""
    permitted = mask(caps.permitted)
    try:
        set_exactly(mask(caps.effective), permitted, mask(caps.inheritable))
    except PermissionError:
        bounding = bounding_set()
        lost = [n for n in (caps.permitted or []) + (caps.effective or []) if not bounding >> NUMBER[n] & 1]
        if lost:
            raise RuntimeFailure(f"process.capabilities: {', '.join(sorted(set(lost)))} not in the "
                                 "capability bounding set, so it cannot be granted") from None
        raise
    # The kernel only keeps an ambient capability that is also permitted and inheritable;
    # runc skips the others quietly (its own `runc spec` asks for ambient without inheritable).
    raisable = permitted & mask(caps.inheritable)
    for name in caps.ambient or ():
        if raisable >> NUMBER[name] & 1:
            syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, NUMBER[name])
