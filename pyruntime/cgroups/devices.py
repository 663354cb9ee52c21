"""linux.resources.devices: validation, cgroup v1 rule strings.

(cgroup v2 has no devices files: rules become an eBPF program, see bpf.py.)
"""
from __future__ import annotations

from pyruntime.errors import RuntimeFailure

from pyruntime.cgroups.common import write


class Rule:
    __slots__ = ("allow", "type", "major", "minor", "access")

    def __init__(self, allow: bool, type: str, major: int, minor: int, access: str):
        self.allow, self.type, self.major, self.minor, self.access = (
            allow, type, major, minor, access)

    def v1(self) -> str:
        """'c 1:3 rwm'; -1 is the wildcard '*'."""
        if self.type == "a":
            return "a *:* " + self.access
        maj = "*" if self.major < 0 else str(self.major)
        mnr = "*" if self.minor < 0 else str(self.minor)
        return f"{self.type} {maj}:{mnr} {self.access}"

    def __repr__(self):
        return f"Rule({'allow' if self.allow else 'deny'} {self.v1()})"


def parse(devices, path: str = "linux.resources.devices") -> list[Rule]:
    if not isinstance(devices, list):
        raise RuntimeFailure(f"{path}: must be an array")
    rules = []
    for i, d in enumerate(devices):
        p = f"{path}[{i}]"
        if not isinstance(d, dict):
            raise RuntimeFailure(f"{p}: must be an object")
        allow = d.get("allow")
        if not isinstance(allow, bool):
            raise RuntimeFailure(f"{p}.allow: {allow!r} must be true or false")
        typ = d.get("type")
        typ = "a" if typ in (None, "") else typ
        if typ not in ("a", "b", "c"):
            raise RuntimeFailure(f"{p}.type: {typ!r} is not a device type (a, b or c)")
        nums = []
        for k in ("major", "minor"):
            v = d.get(k)
            if v is None:
                v = -1
            if isinstance(v, bool) or not isinstance(v, int) or v < -1:
                raise RuntimeFailure(f"{p}.{k}: {v!r} is not a device number")
            nums.append(v)
        access = d.get("access")
        access = "rwm" if access in (None, "") else access
        if not isinstance(access, str) or not access or set(access) - set("rwm"):
            raise RuntimeFailure(f"{p}.access: {access!r} must be a combination of r, w and m")
        access = "".join(c for c in "rwm" if c in access)
        rules.append(Rule(allow, typ, nums[0], nums[1], access))
    return rules


def apply_v1(d: str, rules: list[Rule], path: str = "linux.resources.devices") -> None:
    """Write the rules in config order to devices.allow / devices.deny."""
    for i, r in enumerate(rules):
        write(d, "devices.allow" if r.allow else "devices.deny", r.v1(), f"{path}[{i}]")
