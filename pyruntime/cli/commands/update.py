"""update container resource constraints"""
import json
import sys

from pyruntime.cgroups.ops import ram_in_bytes
from pyruntime.cli.commands import runtime
from pyruntime.errors import ContainerNotRunning, RuntimeFailure

def configure(p):
    p.add_argument("--resources", "-r", default="",
                   help="path to a file holding the LinuxResources JSON to apply, or '-' for "
                        "stdin (0 or a missing field leaves a value as it is); all other "
                        "options are then ignored")
    p.add_argument("--blkio-weight", type=int, default=0,
                   help="per cgroup block IO weight, 10 to 1000")
    p.add_argument("--cpu-period", default="", help="CPU CFS period (usecs)")
    p.add_argument("--cpu-quota", default="", help="CPU CFS quota (usecs) per period")
    p.add_argument("--cpu-burst", default="", help="CPU CFS burst (usecs)")
    p.add_argument("--cpu-share", default="", help="CPU shares (relative weight)")
    p.add_argument("--cpu-rt-period", default="", help="CPU realtime period (usecs)")
    p.add_argument("--cpu-rt-runtime", default="", help="CPU realtime runtime (usecs) per period")
    p.add_argument("--cpu-idle", default="", help="cgroup SCHED_IDLE: 0 or 1")
    p.add_argument("--cpuset-cpus", default="", help="CPUs to use (e.g. 0-1)")
    p.add_argument("--cpuset-mems", default="", help="memory nodes to use")
    p.add_argument("--memory", default="", help="memory limit (bytes, or 500M, 1g ...; -1 = none)")
    p.add_argument("--memory-reservation", default="", help="memory soft limit")
    p.add_argument("--memory-swap", default="",
                   help="total memory + swap limit; -1 for unlimited swap")
    p.add_argument("--kernel-memory", default="", help="(obsolete, ignored)")
    p.add_argument("--kernel-memory-tcp", default="",
                   help="kernel TCP buffer memory limit (cgroup v1 only)")
    p.add_argument("--pids-limit", type=int, default=0,
                   help="maximum number of pids in the container (-1 = none)")
    p.add_argument("--l3-cache-schema", default="", help="Intel RDT/CAT L3 cache schema")
    p.add_argument("--mem-bw-schema", default="", help="Intel RDT/MBA memory bandwidth schema")
    p.add_argument("container_id")


def _read_resources(src: str) -> dict:
    try:
        if src == "-":
            text = sys.stdin.read()
        else:
            with open(src) as f:
                text = f.read()
    except OSError as e:
        raise RuntimeFailure(f"--resources {src}: {e.strerror}", errno=e.errno) from None
    try:
        r = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise RuntimeFailure(f"--resources {src}: invalid JSON: {e}") from None
    if not isinstance(r, dict):
        raise RuntimeFailure(f"--resources {src}: want a LinuxResources JSON object")
    return r


def _from_flags(opts) -> dict:
    mem, cpu = {}, {}
    r = {"memory": mem, "cpu": cpu, "blockIO": {}, "pids": {}}
    if opts.blkio_weight:
        r["blockIO"]["weight"] = opts.blkio_weight
    if opts.cpuset_cpus:
        cpu["cpus"] = opts.cpuset_cpus
    if opts.cpuset_mems:
        cpu["mems"] = opts.cpuset_mems
    for flag, key, lo in (("cpu_idle", "idle", None), ("cpu_burst", "burst", 0),
                          ("cpu_period", "period", 0), ("cpu_rt_period", "realtimePeriod", 0),
                          ("cpu_share", "shares", 0), ("cpu_quota", "quota", None),
                          ("cpu_rt_runtime", "realtimeRuntime", None)):
        val = getattr(opts, flag)
        if val:
            try:
                v = int(val, 10)
            except ValueError:
                v = None
            if v is None or (lo is not None and v < lo):
                raise RuntimeFailure(f"invalid value for {flag.replace('_', '-')}: {val!r}")
            cpu[key] = v
    for flag, key in (("memory", "limit"), ("memory_swap", "swap"),
                      ("memory_reservation", "reservation"), ("kernel_memory", "kernel"),
                      ("kernel_memory_tcp", "kernelTCP")):
        val = getattr(opts, flag)
        if val:
            if val == "-1":
                mem[key] = -1
            else:
                try:
                    mem[key] = ram_in_bytes(val)
                except ValueError as e:
                    raise RuntimeFailure(f"invalid value for {flag.replace('_', '-')}: "
                                         f"{e}") from None
    if opts.pids_limit:
        r["pids"]["limit"] = opts.pids_limit
    return r


def _check_intel_rdt(opts) -> None:
    if not (opts.l3_cache_schema or opts.mem_bw_schema):
        return
    mounted = False
    try:
        with open("/proc/self/mountinfo") as f:
            mounted = any(" - resctrl " in line for line in f)
    except OSError:
        pass
    if opts.l3_cache_schema and not mounted:
        raise RuntimeFailure("Intel RDT/CAT: l3 cache schema is not enabled")
    if opts.mem_bw_schema and not mounted:
        raise RuntimeFailure("Intel RDT/MBA: memory bandwidth schema is not enabled")
    raise RuntimeFailure("Intel RDT: the container has no intelRdt group (pyruntime does not "
                         "create one)")


def main(opts, ctx):
    r = _read_resources(opts.resources) if opts.resources else _from_flags(opts)
    rt = runtime(ctx)
    if opts.l3_cache_schema or opts.mem_bw_schema:
        if rt.state(opts.container_id).status == "stopped":
            raise ContainerNotRunning(opts.container_id)
        _check_intel_rdt(opts)
    rt.update(opts.container_id, r)
    return 0
