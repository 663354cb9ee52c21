"""cgroup v2: one dir; runc's conversions from the (v1-shaped) OCI resources."""
from __future__ import annotations

import os
import time

from pyruntime.errors import RuntimeFailure

from pyruntime.cgroups.common import (Fields, blkio_to_io_weight, device_entries, exists, read_int,
                     read_kv, read_or, shares_to_weight, swap_to_v2, write)


def _num(v: int) -> str:
    return "max" if v == -1 else str(v)


def enable_controllers(mount: str, leaf: str) -> None:
    """Enable every available controller in cgroup.subtree_control from the hierarchy's root
    down to the parent of `leaf` (as runc's fs2 driver). Failures are left for apply() to report:
    a dir holding processes cannot delegate (the no-internal-processes rule)."""
    rel = os.path.relpath(leaf, mount)
    if rel == ".":
        return
    d = mount
    for part in rel.split("/"):
        avail = (read_or(d, "cgroup.controllers", "") or "").split()
        have = set((read_or(d, "cgroup.subtree_control", "") or "").split())
        want = [c for c in avail if c not in have]
        if want:
            try:
                write(d, "cgroup.subtree_control", " ".join("+" + c for c in want), "cgroups")
            except RuntimeFailure:
                for c in want:
                    try:
                        write(d, "cgroup.subtree_control", "+" + c, "cgroups")
                    except RuntimeFailure:
                        pass
        d = os.path.join(d, part)


def controllers(d: str) -> set[str]:
    return set((read_or(d, "cgroup.controllers", "") or "").split())


# ---------------------------------------------------------------- setters

def set_memory(d: str, f: Fields) -> None:
    limit = f.int("limit", lo=-1)
    swap = f.int("swap", lo=-1)
    res = f.int("reservation", lo=-1)
    if limit is None and swap is None and res is None:
        return
    if f.obj.get("checkBeforeUpdate") is True and limit is not None and limit > 0:
        cur = read_int(d, "memory.current")
        if cur >= limit:
            raise RuntimeFailure(f"{f.p('limit')}: rejecting memory limit {limit} below the "
                                 f"current usage {cur} (checkBeforeUpdate)")
    if swap is not None or limit == -1:
        mem = limit
        if mem is None:  # an update of swap alone: convert against the limit in force
            cur = read_or(d, "memory.max", "max").strip()
            mem = -1 if cur == "max" else int(cur)
        v = swap_to_v2(swap or 0, mem, f.p("swap"))
        if v != 0 or (swap or 0) > 0:  # memory == memory+swap: no swap at all
            if exists(d, "memory.swap.max"):
                write(d, "memory.swap.max", _num(v), f.p("swap"))
            elif swap not in (None, -1):
                raise RuntimeFailure(f"{f.p('swap')}: this host has no memory.swap.max "
                                     "(no swap accounting)")
    if limit is not None:
        write(d, "memory.max", _num(limit), f.p("limit"))
    if res is not None:
        write(d, "memory.low", _num(res), f.p("reservation"))
    # kernel, kernelTCP, swappiness, disableOOMKiller: no v2 knob; runc ignores them too.


def set_cpu(d: str, f: Fields) -> None:
    shares = f.int("shares", lo=2, hi=262144)
    if shares is not None:
        write(d, "cpu.weight", shares_to_weight(shares), f.p("shares"))
    quota = f.int("quota", lo=-1)
    period = f.int("period", lo=0)
    if quota is not None or period is not None:
        if quota is None or period is None:  # keep the other half as it is
            cur = (read_or(d, "cpu.max", "max 100000") or "max 100000").split()
            if quota is None:
                quota = -1 if cur[0] == "max" else int(cur[0])
            if period is None:
                period = int(cur[1])
        write(d, "cpu.max", f"{_num(quota)} {period}", f.p("quota"))
    burst = f.int("burst", lo=0, zero_is_unset=False)
    if burst is not None:
        write(d, "cpu.max.burst", burst, f.p("burst"))
    idle = f.int("idle", zero_is_unset=False)
    if idle is not None:
        write(d, "cpu.idle", idle, f.p("idle"))
    for key in ("realtimeRuntime", "realtimePeriod"):
        if f.int(key) is not None:
            raise RuntimeFailure(f"{f.p(key)}: real-time scheduling limits need cgroup v1 "
                                 "(cgroup v2 has no cpu.rt_* files)")


def set_io(d: str, f: Fields) -> None:
    weight = f.int("weight", lo=10, hi=1000)
    if weight is not None:
        if exists(d, "io.bfq.weight"):
            write(d, "io.bfq.weight", weight, f.p("weight"))
        elif exists(d, "io.weight"):
            write(d, "io.weight", blkio_to_io_weight(weight), f.p("weight"))
        else:
            raise RuntimeFailure(f"{f.p('weight')}: this host has no io.weight or io.bfq.weight")
    if f.int("leafWeight") is not None:
        raise RuntimeFailure(f"{f.p('leafWeight')}: cgroup v2 has no leaf weight")
    for i, wd in enumerate(f.list("weightDevice")):
        p = f"{f.p('weightDevice')}[{i}]"
        if not isinstance(wd, dict):
            raise RuntimeFailure(f"{p}: must be an object")
        if wd.get("weight") is not None:
            if not exists(d, "io.bfq.weight"):
                raise RuntimeFailure(f"{p}.weight: per-device weights need io.bfq.weight "
                                     "(BFQ scheduler) on cgroup v2")
            write(d, "io.bfq.weight", f"{wd.get('major')}:{wd.get('minor')} {wd['weight']}",
                  f"{p}.weight")
        if wd.get("leafWeight") is not None:
            raise RuntimeFailure(f"{p}.leafWeight: cgroup v2 has no leaf weight")
    for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                      ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for p, major, minor, rate in device_entries(f, key, "rate"):
            write(d, "io.max", f"{major}:{minor} {name}={rate or 'max'}", p)


def set_pids(d: str, f: Fields) -> None:
    limit = f.int("limit")
    if limit is not None:
        write(d, "pids.max", limit if limit > 0 else "max", f.p("limit"))


def set_unified(d: str, unified, path: str, available: set[str]) -> None:
    if not isinstance(unified, dict):
        raise RuntimeFailure(f"{path}: must be an object")
    for k, v in unified.items():
        p = f"{path}.{k}"
        if "/" in k or k in (".", ".."):
            raise RuntimeFailure(f"{p}: must be a file name (no slashes)")
        if not isinstance(v, str):
            raise RuntimeFailure(f"{p}: {v!r} is not a string")
        ctrl = k.split(".", 1)[0]
        if not exists(d, k):
            if "." not in k:
                raise RuntimeFailure(f"{p}: must be in the form CONTROLLER.PARAMETER")
            if ctrl not in available and ctrl != "cgroup":
                raise RuntimeFailure(f"{p}: controller {ctrl!r} is not available")
        write(d, k, v, p)


# ---------------------------------------------------------------- freezer

def freeze(d: str, timeout: float = 10.0) -> None:
    if not exists(d, "cgroup.freeze"):
        raise RuntimeFailure("pause: this host has no cgroup.freeze (kernel < 5.2)")
    write(d, "cgroup.freeze", "1", "pause")
    _wait_frozen(d, True, timeout)


def thaw(d: str) -> None:
    write(d, "cgroup.freeze", "0", "resume")
    _wait_frozen(d, False, 10.0)


def _wait_frozen(d: str, want: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while read_kv(d, "cgroup.events").get("frozen", 0) != int(want):
        if time.monotonic() > deadline:
            if want:
                write(d, "cgroup.freeze", "0", "pause")
            raise RuntimeFailure(f"{'pause' if want else 'resume'}: cgroup {d} did not "
                                 f"{'freeze' if want else 'thaw'} within {timeout}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def freezer_state(d: str) -> str:
    return "frozen" if (read_or(d, "cgroup.freeze", "0") or "0").strip() == "1" else "thawed"


def oom_kill_count(d: str) -> int:
    return read_kv(d, "memory.events").get("oom_kill", 0)


# ---------------------------------------------------------------- stats

def stat_cpu(st: dict, d: str) -> None:
    kv = read_kv(d, "cpu.stat")
    usage, thr = st["cpu"]["usage"], st["cpu"]["throttling"]
    usage["total"] = kv.get("usage_usec", 0) * 1000
    usage["user"] = kv.get("user_usec", 0) * 1000
    usage["kernel"] = kv.get("system_usec", 0) * 1000
    thr["periods"] = kv.get("nr_periods", 0)
    thr["throttledPeriods"] = kv.get("nr_throttled", 0)
    thr["throttledTime"] = kv.get("throttled_usec", 0) * 1000


def stat_memory(st: dict, d: str) -> None:
    if not exists(d, "memory.current"):
        return
    m = st["memory"]
    raw = read_kv(d, "memory.stat")
    m["cache"] = raw.get("file", 0)
    m["raw"] = raw
    usage = {"limit": read_int(d, "memory.max"), "usage": read_int(d, "memory.current"),
             "max": read_int(d, "memory.peak"),
             "failcnt": read_kv(d, "memory.events").get("max", 0)}
    m["usage"] = usage
    if exists(d, "memory.swap.current"):
        # v1 reported memory+swap: keep that meaning (runc does the same).
        swap = {"limit": read_int(d, "memory.swap.max"),
                "usage": read_int(d, "memory.swap.current") + usage["usage"], "failcnt": 0}
        if swap["limit"] != (1 << 64) - 1 and usage["limit"] != (1 << 64) - 1:
            swap["limit"] += usage["limit"]
        m["swap"] = swap


def stat_pids(st: dict, d: str) -> None:
    if exists(d, "pids.current"):
        st["pids"]["current"] = read_int(d, "pids.current")
        lim = (read_or(d, "pids.max", "max") or "max").strip()
        st["pids"]["limit"] = 0 if lim == "max" else int(lim)


def stat_io(st: dict, d: str) -> None:
    sb, sd = [], []
    for line in (read_or(d, "io.stat", "") or "").splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, minor = (int(x) for x in parts[0].split(":"))
        for item in parts[1:]:
            k, _, v = item.partition("=")
            table, op = {"rbytes": (sb, "Read"), "wbytes": (sb, "Write"),
                         "rios": (sd, "Read"), "wios": (sd, "Write")}.get(k, (None, None))
            if table is not None:
                table.append({"major": major, "minor": minor, "op": op, "value": int(v)})
    st["blkio"]["ioServiceBytesRecursive"] = sb
    st["blkio"]["ioServicedRecursive"] = sd


def stat_hugetlb(st: dict, d: str, sizes: list[str]) -> None:
    for size in sizes:
        if not exists(d, f"hugetlb.{size}.current"):
            continue
        st["hugetlb"][size] = {"usage": read_int(d, f"hugetlb.{size}.current"),
                               "failcnt": read_kv(d, f"hugetlb.{size}.events").get("max", 0)}

