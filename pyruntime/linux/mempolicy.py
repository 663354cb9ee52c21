"""linux.memoryPolicy: the NUMA memory policy of the container's process (set_mempolicy(2)),
set by the init before execve; a policy survives execve and fork."""
from __future__ import annotations

from pyruntime.errors import ConfigError, RuntimeFailure

MODES = {"MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2, "MPOL_INTERLEAVE": 3,
         "MPOL_LOCAL": 4, "MPOL_PREFERRED_MANY": 5, "MPOL_WEIGHTED_INTERLEAVE": 6}
FLAGS = {"MPOL_F_NUMA_BALANCING": 1 << 13, "MPOL_F_RELATIVE_NODES": 1 << 14,
         "MPOL_F_STATIC_NODES": 1 << 15}
_NO_NODES = {"MPOL_DEFAULT", "MPOL_LOCAL"}
_NEED_NODES = {"MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_PREFERRED_MANY", "MPOL_WEIGHTED_INTERLEAVE"}


def parse_list(text: str, path: str) -> set[int]:
    """A CPU or node list such as "0-3,7"."""
    out: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ConfigError(path, text, 'is not a list such as "0-3,7"') from None
        if a < 0 or b < a or b >= 1 << 16:
            raise ConfigError(path, text, f"has a bad range {part!r}")
        out.update(range(a, b + 1))
    return out


def parse(policy: dict, path: str = "linux.memoryPolicy") -> tuple[int, int]:
    """-> (mode with its flags, node mask) for set_mempolicy(2)."""
    if not isinstance(policy, dict):
        raise ConfigError(path, policy, "must be an object")
    mode = policy.get("mode")
    if mode not in MODES:
        raise ConfigError(f"{path}.mode", mode, f"is not a memory policy mode ({', '.join(MODES)})")
    flags = 0
    for i, flag in enumerate(policy.get("flags") or []):
        if flag not in FLAGS:
            raise ConfigError(f"{path}.flags[{i}]", flag,
                              f"is not a memory policy flag ({', '.join(FLAGS)})")
        flags |= FLAGS[flag]
    nodes_text = policy.get("nodes") or ""
    if not isinstance(nodes_text, str):
        raise ConfigError(f"{path}.nodes", nodes_text, "must be a string")
    nodes = parse_list(nodes_text, f"{path}.nodes")
    if nodes and mode in _NO_NODES:
        raise ConfigError(f"{path}.nodes", nodes_text, f"must be empty for {mode}")
    if not nodes and mode in _NEED_NODES:
        raise ConfigError(f"{path}.nodes", nodes_text, f"must name at least one node for {mode}")
    return MODES[mode] | flags, sum(1 << n for n in nodes)


def apply(parsed: tuple[int, int] | None) -> None:
    if parsed is None:
        return
    import os
    from pyruntime.linux import syscalls as sc
    mode, mask = parsed
    try:
        sc.set_mempolicy(mode, mask, mask.bit_length() + 64)
    except OSError as e:
        raise RuntimeFailure(f"linux.memoryPolicy: set_mempolicy: {os.strerror(e.errno)} (are the nodes "
                             "online and allowed by the cpuset?)", errno=e.errno) from None
