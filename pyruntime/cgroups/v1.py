"""cgroup v1: one hierarchy per controller (or a few co-mounted). Each function gets the dir of
its controller's hierarchy and a common.Fields view of one linux.resources object."""
from __future__ import annotations

import errno
import os
import time

from pyruntime.errors import RuntimeFailure

from pyruntime.cgroups.common import Fields, device_entries, exists, read, read_int, read_kv, read_or, write


# ---------------------------------------------------------------- memory

def _set_limit(d: str, value: int, field: str) -> None:
    try:
        write(d, "memory.limit_in_bytes", value, field)
    except RuntimeFailure as e:
        if e.errno != errno.EBUSY:
            raise
        raise RuntimeFailure(
            f"{field}: unable to set memory limit to {value} (current usage: "
            f"{read_int(d, 'memory.usage_in_bytes')}, peak usage: "
            f"{read_int(d, 'memory.max_usage_in_bytes')})") from None


def set_memory(d: str, f: Fields) -> None:
    limit = f.int("limit", lo=-1)
    swap = f.int("swap", lo=-1)
    if limit == -1 and swap is None:
        swap = -1  # unlimited memory without a swap limit: unlimited memory+swap (runc)
    if swap is not None and not exists(d, "memory.memsw.limit_in_bytes"):
        if swap != -1:
            raise RuntimeFailure(f"{f.p('swap')}: this host has no memory.memsw.limit_in_bytes "
                                 "(swap accounting is off; boot with swapaccount=1)")
        swap = None
    swap_field = f.p("swap")
    if f.obj.get("checkBeforeUpdate") is True and limit is not None and limit > 0:
        cur = read_int(d, "memory.usage_in_bytes")
        if cur >= limit:
            raise RuntimeFailure(f"{f.p('limit')}: rejecting memory limit {limit} below the "
                                 f"current usage {cur} (checkBeforeUpdate)")
    if limit is not None and swap is not None:
        # The kernel insists on memsw >= memory at every step: pick the order that keeps it.
        if swap == -1 or read_int(d, "memory.limit_in_bytes") < swap:
            write(d, "memory.memsw.limit_in_bytes", swap, swap_field)
            _set_limit(d, limit, f.p("limit"))
        else:
            _set_limit(d, limit, f.p("limit"))
            write(d, "memory.memsw.limit_in_bytes", swap, swap_field)
    elif limit is not None:
        _set_limit(d, limit, f.p("limit"))
    elif swap is not None:
        write(d, "memory.memsw.limit_in_bytes", swap, swap_field)
    res = f.int("reservation", lo=-1)
    if res is not None:
        write(d, "memory.soft_limit_in_bytes", res, f.p("reservation"))
    # memory.kernel is ignored, as runc >= 1.1 does (kmem.limit_in_bytes is obsolete since 5.4).
    tcp = f.int("kernelTCP", lo=-1)
    if tcp is not None and exists(d, "memory.kmem.tcp.limit_in_bytes"):
        write(d, "memory.kmem.tcp.limit_in_bytes", tcp, f.p("kernelTCP"))
    sw = f.int("swappiness", zero_is_unset=False)
    if sw is not None and sw != -1 and sw < 1 << 63:
        if not 0 <= sw <= 100:
            raise RuntimeFailure(f"{f.p('swappiness')}: {sw} is out of range (0..100)")
        write(d, "memory.swappiness", sw, f.p("swappiness"))
    if f.obj.get("disableOOMKiller") is True:
        write(d, "memory.oom_control", 1, f.p("disableOOMKiller"))


# ---------------------------------------------------------------- cpu, cpuset

def set_cpu(d: str, f: Fields) -> None:
    shares = f.int("shares", lo=0)
    if shares is not None:
        write(d, "cpu.shares", shares, f.p("shares"))
        got = read_int(d, "cpu.shares")
        if got != shares:  # the kernel clamps silently; runc reports it
            bound = "maximum" if shares > got else "minimum"
            raise RuntimeFailure(f"{f.p('shares')}: {shares} is out of range: the {bound} "
                                 f"allowed cpu-shares is {got}")
    period = f.int("period", lo=0)
    quota = f.int("quota", lo=-1)
    if period is not None:
        try:
            write(d, "cpu.cfs_period_us", period, f.p("period"))
        except RuntimeFailure as e:
            # The current quota may not fit the new period: set the quota first, then retry.
            if e.errno != errno.EINVAL or quota is None:
                raise
            write(d, "cpu.cfs_quota_us", quota, f.p("quota"))
            write(d, "cpu.cfs_period_us", period, f.p("period"))
    if quota is not None:
        write(d, "cpu.cfs_quota_us", quota, f.p("quota"))
    burst = f.int("burst", lo=0, zero_is_unset=False)
    if burst is not None:
        write(d, "cpu.cfs_burst_us", burst, f.p("burst"))
    rt_period = f.int("realtimePeriod", lo=0)
    if rt_period is not None:
        write(d, "cpu.rt_period_us", rt_period, f.p("realtimePeriod"))
    rt_runtime = f.int("realtimeRuntime", lo=-1)
    if rt_runtime is not None:
        write(d, "cpu.rt_runtime_us", rt_runtime, f.p("realtimeRuntime"))
    idle = f.int("idle", zero_is_unset=False)
    if idle is not None:
        write(d, "cpu.idle", idle, f.p("idle"))


def set_cpuset(d: str, f: Fields) -> None:
    for key, name in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        v = f.str(key)
        if v is not None:
            write(d, name, v, f.p(key))


def init_cpuset(d: str) -> None:
    """A new v1 cpuset starts empty, and an empty cpuset takes no tasks: fill it (and any empty
    ancestor, as runc does) from the nearest parent that has cpus and mems."""
    parent = os.path.dirname(d)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if read(d, name).strip():
            continue
        if not read(parent, name).strip() and os.path.exists(os.path.join(parent, name)):
            init_cpuset(parent)
        write(d, name, read(parent, name).strip(), f"cgroup {d}: {name}")


# ---------------------------------------------------------------- pids, blkio, hugetlb, net, rdma

def set_pids(d: str, f: Fields) -> None:
    limit = f.int("limit")
    if limit is not None:
        write(d, "pids.max", limit if limit > 0 else "max", f.p("limit"))


def set_blkio(d: str, f: Fields) -> None:
    bfq = exists(d, "blkio.bfq.weight")
    prefix = "blkio.bfq." if bfq else "blkio."
    weight = f.int("weight", lo=10, hi=1000)
    if weight is not None:
        if not bfq and not exists(d, "blkio.weight"):
            raise RuntimeFailure(f"{f.p('weight')}: this host has no blkio.weight (cgroup v1 "
                                 "without CFQ/BFQ)")
        write(d, prefix + "weight", weight, f.p("weight"))
    leaf = f.int("leafWeight", lo=10, hi=1000)
    if leaf is not None:
        if not exists(d, "blkio.leaf_weight"):
            raise RuntimeFailure(f"{f.p('leafWeight')}: this host has no blkio.leaf_weight "
                                 "(cgroup v1 without CFQ)")
        write(d, "blkio.leaf_weight", leaf, f.p("leafWeight"))
    for i, wd in enumerate(f.list("weightDevice")):
        p = f"{f.p('weightDevice')}[{i}]"
        if not isinstance(wd, dict):
            raise RuntimeFailure(f"{p}: must be an object")
        dev = f"{wd.get('major')}:{wd.get('minor')}"
        for key, fname in (("weight", prefix + "weight_device"),
                           ("leafWeight", "blkio.leaf_weight_device")):
            if wd.get(key) is not None:
                if not exists(d, fname):
                    raise RuntimeFailure(f"{p}.{key}: this host has no {fname} (cgroup v1 "
                                         "without CFQ/BFQ)")
                write(d, fname, f"{dev} {wd[key]}", f"{p}.{key}")
    for key, fname in (("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
                       ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
                       ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
                       ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device")):
        for p, major, minor, rate in device_entries(f, key, "rate"):
            write(d, fname, f"{major}:{minor} {rate or 0}", p)


def set_hugetlb(d: str, entries: list, sizes: list[str], path: str, v2: bool) -> None:
    for i, e in enumerate(entries):
        p = f"{path}[{i}]"
        if not isinstance(e, dict):
            raise RuntimeFailure(f"{p}: must be an object")
        size, limit = e.get("pageSize"), e.get("limit")
        if size not in sizes:
            raise RuntimeFailure(f"{p}.pageSize: {size!r} is not a huge page size of this host "
                                 f"({', '.join(sizes) or 'none'})")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise RuntimeFailure(f"{p}.limit: {limit!r} is not an integer")
        name = f"hugetlb.{size}.max" if v2 else f"hugetlb.{size}.limit_in_bytes"
        value = "max" if (v2 and limit < 0) else limit
        write(d, name, value, f"{p}.limit")
        rsvd = f"hugetlb.{size}.rsvd.max" if v2 else f"hugetlb.{size}.rsvd.limit_in_bytes"
        if exists(d, rsvd):
            write(d, rsvd, value, f"{p}.limit")


def set_net_cls(d: str, f: Fields) -> None:
    cid = f.int("classID", lo=0)
    if cid is not None:
        write(d, "net_cls.classid", cid, f.p("classID"))


def set_net_prio(d: str, f: Fields) -> None:
    for i, pr in enumerate(f.list("priorities")):
        p = f"{f.p('priorities')}[{i}]"
        if not isinstance(pr, dict) or not isinstance(pr.get("name"), str):
            raise RuntimeFailure(f"{p}: must be an object with a name")
        write(d, "net_prio.ifpriomap", f"{pr['name']} {int(pr.get('priority', 0))}", p)


def set_rdma(d: str, rdma, path: str) -> None:
    if not isinstance(rdma, dict):
        raise RuntimeFailure(f"{path}: must be an object")
    for dev, lim in rdma.items():
        if not isinstance(lim, dict):
            raise RuntimeFailure(f"{path}.{dev}: must be an object")
        parts = [dev]
        if lim.get("hcaHandles") is not None:
            parts.append(f"hca_handle={lim['hcaHandles']}")
        if lim.get("hcaObjects") is not None:
            parts.append(f"hca_object={lim['hcaObjects']}")
        if len(parts) > 1:
            write(d, "rdma.max", " ".join(parts), f"{path}.{dev}")


# ---------------------------------------------------------------- freezer

def freeze(d: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    delay, n = 0.0005, 0
    while True:
        if n % 25 == 0:
            # A freeze can stall on a task in an uninterruptible sleep; runc re-kicks it.
            write(d, "freezer.state", "FROZEN", "pause")
        state = read(d, "freezer.state").strip()
        if state == "FROZEN":
            return
        if time.monotonic() > deadline:
            write(d, "freezer.state", "THAWED", "pause")
            raise RuntimeFailure(f"pause: unable to freeze {d}: still {state} after {timeout}s")
        n += 1
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def thaw(d: str) -> None:
    write(d, "freezer.state", "THAWED", "resume")
    deadline = time.monotonic() + 10
    while read(d, "freezer.state").strip() != "THAWED":
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"resume: unable to thaw {d}")
        time.sleep(0.001)


def freezer_state(d: str) -> str:
    s = read_or(d, "freezer.state", "THAWED").strip()
    return "frozen" if s == "FROZEN" else "thawed"


def oom_kill_count(d: str) -> int:
    return read_kv(d, "memory.oom_control").get("oom_kill", 0)


# ---------------------------------------------------------------- stats

def _ints(s: str | None) -> list[int]:
    return [int(x) for x in (s or "").split()]


def stat_cpu(st: dict, cpu: str | None, cpuacct: str | None) -> None:
    usage, thr = st["cpu"]["usage"], st["cpu"]["throttling"]
    if cpuacct:
        usage["total"] = read_int(cpuacct, "cpuacct.usage")
        usage["percpu"] = _ints(read_or(cpuacct, "cpuacct.usage_percpu"))
        usage["percpu_kernel"] = _ints(read_or(cpuacct, "cpuacct.usage_percpu_sys"))
        usage["percpu_user"] = _ints(read_or(cpuacct, "cpuacct.usage_percpu_user"))
        ticks = os.sysconf("SC_CLK_TCK")
        kv = read_kv(cpuacct, "cpuacct.stat")
        usage["kernel"] = kv.get("system", 0) * 1_000_000_000 // ticks
        usage["user"] = kv.get("user", 0) * 1_000_000_000 // ticks
    if cpu:
        kv = read_kv(cpu, "cpu.stat")
        thr["periods"] = kv.get("nr_periods", 0)
        thr["throttledPeriods"] = kv.get("nr_throttled", 0)
        thr["throttledTime"] = kv.get("throttled_time", 0)


def _mem_entry(d: str, prefix: str) -> dict:
    if not exists(d, prefix + "usage_in_bytes"):
        return {"limit": 0, "failcnt": 0}
    return {"limit": read_int(d, prefix + "limit_in_bytes"),
            "usage": read_int(d, prefix + "usage_in_bytes"),
            "max": read_int(d, prefix + "max_usage_in_bytes"),
            "failcnt": read_int(d, prefix + "failcnt")}


def stat_memory(st: dict, d: str) -> None:
    m = st["memory"]
    raw = read_kv(d, "memory.stat")
    m["cache"] = raw.get("cache", 0)
    m["usage"] = _mem_entry(d, "memory.")
    m["swap"] = _mem_entry(d, "memory.memsw.")
    m["kernel"] = _mem_entry(d, "memory.kmem.")
    m["kernelTCP"] = _mem_entry(d, "memory.kmem.tcp.")
    m["raw"] = raw


def stat_pids(st: dict, d: str) -> None:
    st["pids"]["current"] = read_int(d, "pids.current")
    lim = read_or(d, "pids.max", "max").strip()
    st["pids"]["limit"] = 0 if lim == "max" else int(lim)


def _blkio_file(d: str, name: str) -> list[dict]:
    out = []
    for line in (read_or(d, name, "") or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, minor = parts[0].split(":")
            out.append({"major": int(major), "minor": int(minor), "op": parts[1],
                        "value": int(parts[2])})
        elif len(parts) == 2 and ":" in parts[0]:  # sectors, io_time: no op
            major, minor = parts[0].split(":")
            out.append({"major": int(major), "minor": int(minor), "op": "",
                        "value": int(parts[1])})
    return out


def stat_blkio(st: dict, d: str) -> None:
    b = st["blkio"]
    # Scheduler stats (BFQ, then CFQ) when there are any, else the throttle layer's (as runc).
    for prefix in ("blkio.bfq.", "blkio."):
        if _blkio_file(d, prefix + "io_serviced_recursive"):
            b["ioServiceBytesRecursive"] = _blkio_file(d, prefix + "io_service_bytes_recursive")
            b["ioServicedRecursive"] = _blkio_file(d, prefix + "io_serviced_recursive")
            b["ioQueueRecursive"] = _blkio_file(d, prefix + "io_queued_recursive")
            b["ioServiceTimeRecursive"] = _blkio_file(d, prefix + "io_service_time_recursive")
            b["ioWaitTimeRecursive"] = _blkio_file(d, prefix + "io_wait_time_recursive")
            b["ioMergedRecursive"] = _blkio_file(d, prefix + "io_merged_recursive")
            b["ioTimeRecursive"] = _blkio_file(d, prefix + "time_recursive")
            b["sectorsRecursive"] = _blkio_file(d, prefix + "sectors_recursive")
            return
    b["ioServiceBytesRecursive"] = _blkio_file(d, "blkio.throttle.io_service_bytes_recursive")
    b["ioServicedRecursive"] = _blkio_file(d, "blkio.throttle.io_serviced_recursive")


def stat_hugetlb(st: dict, d: str, sizes: list[str]) -> None:
    for size in sizes:
        st["hugetlb"][size] = {
            "usage": read_int(d, f"hugetlb.{size}.usage_in_bytes"),
            "max": read_int(d, f"hugetlb.{size}.max_usage_in_bytes"),
            "failcnt": read_int(d, f"hugetlb.{size}.failcnt")}
