"""linux.resources as the systemd unit properties runc sends with StartTransientUnit and
SetUnitProperties; the cgroupfs code applies everything (these included) to the unit's dirs.

A property is (name, (D-Bus signature, value)).
"""
from __future__ import annotations

from pyruntime.errors import RuntimeFailure

from pyruntime.cgroups.common import Fields, shares_to_weight, swap_to_v2

USEC_INFINITY = (1 << 64) - 1
_DEFAULT_PERIOD = 100000


def _prop(name: str, sig: str, value):
    return (name, (sig, value))


def base_properties(slice_name: str, unit: str, description: str, pid: int | None,
                    unified: bool) -> list:
    """What runc's Apply sends with StartTransientUnit."""
    props = [_prop("Description", "s", description)]
    if unit.endswith(".slice"):
        props.append(_prop("Wants", "as", [slice_name]))  # a slice's parent is in its name
    else:
        props.append(_prop("Slice", "s", slice_name))
        props.append(_prop("Delegate", "b", True))
    if pid is not None:
        props.append(_prop("PIDs", "au", [pid]))
    # Accounting on from the start: the kernel handles joining a memory cgroup later badly.
    props += [_prop("MemoryAccounting", "b", True), _prop("CPUAccounting", "b", True),
              _prop("IOAccounting" if unified else "BlockIOAccounting", "b", True),
              _prop("TasksAccounting", "b", True),
              _prop("DefaultDependencies", "b", False)]
    return props


def range_to_bits(spec: str, field: str) -> bytes:
    """"0-2,7" -> the byte mask systemd's AllowedCPUs / AllowedMemoryNodes take (bit n = n)."""
    bits = 0
    for part in spec.strip().split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
            else:
                a = b = int(part)
        except ValueError:
            raise RuntimeFailure(f"{field}: {spec!r} is not a list of ranges") from None
        if a < 0 or b < a or b > 1 << 16:
            raise RuntimeFailure(f"{field}: {spec!r} has an invalid range {part!r}")
        for n in range(a, b + 1):
            bits |= 1 << n
    if not bits:
        raise RuntimeFailure(f"{field}: {spec!r} names no CPU or node")
    return bits.to_bytes((bits.bit_length() + 7) // 8, "little")


def _u64(v: int) -> int:
    return USEC_INFINITY if v == -1 else v


def _cpu_quota(props: list, quota, period, version, update: bool) -> None:
    if period is not None:
        if version() >= 242:  # CPUQuotaPeriodUSec is new in v242; cgroupfs still gets it
            props.append(_prop("CPUQuotaPeriodUSec", "t", period))
    if quota is None and (period is None or update):
        return
    per_sec = USEC_INFINITY
    if quota is not None and quota > 0:
        per_sec = quota * 1000000 // (period or _DEFAULT_PERIOD)
        # systemd keeps a whole percent: round up so that the cgroup's own quota fits.
        if per_sec % 10000:
            per_sec = (per_sec // 10000 + 1) * 10000
    props.append(_prop("CPUQuotaPerSecUSec", "t", per_sec))


def resource_properties(resources: dict | None, *, unified: bool, version=lambda: 0,
                        update: bool = False) -> list:
    """linux.resources as the unit properties runc sets ("0 = unset"); the cgroupfs code
    applies everything else. `version()` is systemd's version (asked only when it matters)."""
    if not resources:
        return []
    r = Fields(resources, "linux.resources", update)
    props: list = []
    if not update and resources.get("devices") is not None:
        from pyruntime.cgroups import devices
        props += device_properties(devices.parse(resources["devices"]))
    mem, cpu, pids = r.sub("memory"), r.sub("cpu"), r.sub("pids")
    limit = mem.int("limit", lo=-1)
    if unified:
        if limit is not None:
            props.append(_prop("MemoryMax", "t", _u64(limit)))
        res = mem.int("reservation", lo=-1)
        if res is not None:
            props.append(_prop("MemoryLow", "t", _u64(res)))
        swap = mem.int("swap", lo=-1)
        if swap is not None or limit == -1:
            sw = swap_to_v2(swap or 0, limit or 0, mem.p("swap"))
            if sw:
                props.append(_prop("MemorySwapMax", "t", _u64(sw)))
        shares = cpu.int("shares", lo=2, hi=262144)
        if shares is not None:
            props.append(_prop("CPUWeight", "t", shares_to_weight(shares)))
    else:
        if limit is not None:
            props.append(_prop("MemoryLimit", "t", _u64(limit)))
        shares = cpu.int("shares", lo=2, hi=262144)
        if shares is not None:
            props.append(_prop("CPUShares", "t", shares))
        weight = r.sub("blockIO").int("weight", lo=0)
        if weight is not None:
            props.append(_prop("BlockIOWeight", "t", weight))
    _cpu_quota(props, cpu.int("quota", lo=-1), cpu.int("period", lo=0), version, update)
    plimit = pids.int("limit", lo=-1)
    if plimit is not None:
        props.append(_prop("TasksMax", "t", _u64(plimit)))
    for key, name in (("cpus", "AllowedCPUs"), ("mems", "AllowedMemoryNodes")):
        s = cpu.str(key)
        if s is not None:
            bits = range_to_bits(s, cpu.p(key))
            if version() >= 244:
                props.append(_prop(name, "ay", bits))
    if unified and isinstance(resources.get("unified"), dict):
        props += unified_properties(resources["unified"], version)
    return props


_UNIFIED_MEMORY = {"memory.high": "MemoryHigh", "memory.low": "MemoryLow",
                   "memory.min": "MemoryMin", "memory.max": "MemoryMax",
                   "memory.swap.max": "MemorySwapMax"}


def unified_properties(unified: dict, version) -> list:
    """The linux.resources.unified keys systemd has properties for; the rest only go to
    cgroupfs (runc's best effort). Malformed values are left for the cgroupfs code to report."""
    props: list = []
    for key, raw in unified.items():
        if not isinstance(raw, str):
            continue
        v = raw.strip()
        try:
            if key in _UNIFIED_MEMORY or key == "pids.max":
                num = USEC_INFINITY if v == "max" else int(v)
                if num < 0:
                    continue
                props.append(_prop(_UNIFIED_MEMORY.get(key, "TasksMax"), "t", num))
            elif key == "cpu.weight":
                props.append(_prop("CPUWeight", "t", int(v)))
            elif key == "cpu.max":
                f = v.split()
                if not 1 <= len(f) <= 2:
                    continue
                quota = 0 if f[0] == "max" else int(f[0])
                period = int(f[1]) if len(f) == 2 else _DEFAULT_PERIOD
                _cpu_quota(props, quota or None, period, version, False)
            elif key in ("cpuset.cpus", "cpuset.mems"):
                bits = range_to_bits(v, f"linux.resources.unified[{key!r}]")
                if version() >= 244:
                    props.append(_prop("AllowedCPUs" if key == "cpuset.cpus"
                                       else "AllowedMemoryNodes", "ay", bits))
        except (ValueError, RuntimeFailure):
            continue
    return props


def device_properties(rules) -> list:
    """DevicePolicy and DeviceAllow for the ordered device rules (devices.Rule), as runc turns
    them into systemd's allow-list. systemd has no deny entries: a deny-by-exception list
    becomes a temporary deny-all, and the cgroupfs code writes the real rules after it."""
    allow_all, denied_in_allow_all = False, False
    entries: dict[tuple, set] = {}   # (type, major, minor) -> access, -1 = wildcard
    for r in rules:
        types = ("c", "b") if r.type == "a" else (r.type,)
        if r.type == "a" and r.access == "rwm":
            allow_all, denied_in_allow_all = r.allow, False
            entries.clear()
            continue
        if allow_all:
            if not r.allow:
                denied_in_allow_all = True
            continue
        for t in types:
            key = (t, -1, -1) if r.type == "a" else (t, r.major, r.minor)
            if r.allow:
                entries.setdefault(key, set()).update(r.access)
                continue
            # A deny takes its access away from every entry that covers the device.
            for k in list(entries):
                if k[0] == t and (key[1] < 0 or k[1] in (key[1], -1)) and \
                        (key[2] < 0 or k[2] in (key[2], -1)):
                    entries[k] -= set(r.access)
                    if not entries[k]:
                        del entries[k]
    if allow_all and not denied_in_allow_all:
        return [_prop("DevicePolicy", "s", "auto"), _prop("DeviceAllow", "a(ss)", [])]
    allow = []
    if not allow_all:
        for (t, major, minor), access in entries.items():
            group = "char-" if t == "c" else "block-"
            if major < 0 and minor >= 0:
                continue  # "*:n" has no systemd spelling (runc skips it too)
            if major < 0:
                path = group + "*"
            elif minor < 0:
                path = f"{group}{major}"  # systemd >= 240
            else:
                path = f"/dev/{'char' if t == 'c' else 'block'}/{major}:{minor}"
            allow.append((path, "".join(c for c in "rwm" if c in access)))
    return [_prop("DevicePolicy", "s", "strict"), _prop("DeviceAllow", "a(ss)", allow)]
