"""Real containers whose controllers live in cgroup2, checked from outside (the container's
cgroup2 files) and from inside (its /sys/fs/cgroup/unified view, /proc/self).

On this kind of machine (hybrid) cgroup2 holds no controller until `tests/cgroup2-stage.sh`
hands idle v1 controllers over; CI runs this file inside the stage:
    tests/cgroup2-stage.sh run python3 -m pytest -n auto tests/test_cgroups_v2.py \
        tests/test_cgroups_v2_containers.py
Each test needs specific controllers in cgroup2 and is skipped (saying which) without them.
memory never moves here (the sandbox's own processes live in the v1 memory hierarchy).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from conftest import is_pyruntime
import corehelp
from corehelp import assert_failed, proc_state, start_in_cgroup, wait_file, wait_for

from pyruntime import cgroups

HOST = cgroups.detect()
UNIFIED = Path(HOST.unified[0]) if HOST.unified else None
IN_V1 = set(HOST.v1) if HOST.mode != "v2" else set()
ON_V2 = set()
if UNIFIED:
    ON_V2 = set((UNIFIED / "cgroup.controllers").read_text().split())
# Where the container sees its cgroup2 dir: the root of its view on v2, "unified" on hybrid.
INSIDE = "/sys/fs/cgroup" if HOST.mode == "v2" else "/sys/fs/cgroup/unified"

pytestmark = pytest.mark.skipif(UNIFIED is None, reason="no cgroup2 hierarchy mounted")


def on_v2(*ctrls):
    """Skip unless each controller is in cgroup2 (and, on a hybrid host, not also in v1)."""
    missing = [c for c in ctrls if c not in ON_V2 or (c == "io" and "blkio" in IN_V1)
               or (c != "io" and c in IN_V1)]
    return pytest.mark.skipif(bool(missing), reason=f"{missing} not in cgroup2 here (this "
                              "hybrid host keeps them in v1; tests/cgroup2-stage.sh moves them)")


def cgdir(cid: str) -> Path:
    base = UNIFIED
    if HOST.mode == "v2" and HOST.own not in ("", "/"):
        base = UNIFIED / HOST.own.lstrip("/")  # absolute paths are below the runtime's own
    return base / "pyrt-test" / cid


def cgread(cid: str, name: str) -> str:
    return (cgdir(cid) / name).read_text().strip()


def start(runtime, bundle, script: str, resources: dict | None = None, view=True) -> str:
    return start_in_cgroup(runtime, bundle, script, resources=resources, cgroup_view=view)


def stop_and_delete(runtime, cid: str) -> None:
    corehelp.stop_and_delete(runtime, cid)
    assert not cgdir(cid).exists()


def procs(cid: str) -> list[int]:
    return [int(p) for p in cgread(cid, "cgroup.procs").split()]


@on_v2("pids")
def test_pids_limit_outside_inside_and_a_fork_bomb(runtime, bundle):
    script = (f"read m < {INSIDE}/pids.max; echo $m > /max; cat /proc/self/cgroup > /self; "
              "sh -c 'for i in $(seq 30); do sleep 1000 & done' 2>/forkerr; "
              "echo done > /done; exec sleep 1000")
    cid = start(runtime, bundle, script, {"pids": {"limit": 8}})
    wait_file(bundle.rootfs / "done", timeout=10)
    assert cgread(cid, "pids.max") == "8"
    assert (bundle.rootfs / "max").read_text().strip() == "8"
    # the container's processes are in its cgroup2 dir, and nowhere else in cgroup2
    assert (bundle.rootfs / "self").read_text().splitlines()[0] != "0::/"  # no cgroupns: a path
    assert runtime.state(cid)["pid"] in procs(cid)
    assert int(cgread(cid, "pids.current")) <= 8
    assert int(dict(ln.split() for ln in cgread(cid, "pids.events").splitlines())["max"]) > 0
    assert (bundle.rootfs / "forkerr").read_text()  # sh reported the failed forks
    runtime("update", "--pids-limit", "50", cid)
    assert cgread(cid, "pids.max") == "50"
    stop_and_delete(runtime, cid)


@on_v2("cpu")
def test_cpu_conversions_and_update(runtime, bundle):
    cid = start(runtime, bundle, f"cat {INSIDE}/cpu.max > /max; cat {INSIDE}/cpu.weight > /w; "
                "echo done > /done; exec sleep 1000",
                {"cpu": {"shares": 2048, "quota": 50000, "period": 100000}})
    wait_file(bundle.rootfs / "done", timeout=10)
    # runc's conversion: weight = 1 + ((shares - 2) * 9999) / 262142
    assert cgread(cid, "cpu.weight") == str(1 + ((2048 - 2) * 9999) // 262142) == "79"
    assert cgread(cid, "cpu.max") == "50000 100000"
    assert (bundle.rootfs / "max").read_text().strip() == "50000 100000"
    assert (bundle.rootfs / "w").read_text().strip() == "79"
    runtime("update", "--cpu-quota", "20000", "--cpu-period", "50000", "--cpu-share", "1024",
            cid)
    assert cgread(cid, "cpu.max") == "20000 50000"
    assert cgread(cid, "cpu.weight") == "39"
    # -1: no quota
    runtime("update", "--cpu-quota", "-1", cid)
    assert cgread(cid, "cpu.max").split()[0] == "max"
    # rt knobs have no cgroup2 file: a clear error naming the field
    assert_failed(runtime("update", "--cpu-rt-runtime", "1000", cid, check=False),
                  "realtime")
    stop_and_delete(runtime, cid)


@on_v2("cpu")
def test_cpu_quota_throttles(runtime, bundle):
    # 10% of one CPU: a busy loop gets throttled, which cpu.stat counts
    cid = start(runtime, bundle, "while :; do :; done",
                {"cpu": {"quota": 10000, "period": 100000}}, view=False)
    wait_for(lambda: int(dict(ln.split() for ln in cgread(cid, "cpu.stat").splitlines())
                         .get("nr_throttled", 0)) > 2, timeout=5)
    stats = json.loads(runtime("events", "--stats", cid).stdout)["data"]
    assert stats["cpu"]["throttling"]["throttledPeriods"] > 0
    assert stats["cpu"]["usage"]["total"] > 0
    stop_and_delete(runtime, cid)


@on_v2("cpuset")
def test_cpuset_seen_by_the_scheduler(runtime, bundle):
    cid = start(runtime, bundle, "grep Cpus_allowed_list /proc/self/status > /cpus; "
                "grep Mems_allowed_list /proc/self/status > /mems; echo done > /done; "
                "exec sleep 1000", {"cpu": {"cpus": "0", "mems": "0"}}, view=False)
    wait_file(bundle.rootfs / "done", timeout=10)
    assert cgread(cid, "cpuset.cpus") == "0"
    assert cgread(cid, "cpuset.cpus.effective") == "0"
    assert (bundle.rootfs / "cpus").read_text().split()[-1] == "0"
    assert (bundle.rootfs / "mems").read_text().split()[-1] == "0"
    if os.cpu_count() > 1:
        runtime("update", "--cpuset-cpus", "1", cid)
        assert cgread(cid, "cpuset.cpus") == "1"
        pid = runtime.state(cid)["pid"]
        assert os.sched_getaffinity(pid) == {1}
    stop_and_delete(runtime, cid)


@on_v2("io")
def test_io_weight_and_throttle(runtime, bundle):
    devs = sorted(Path("/sys/block").glob("*/dev"))
    if not devs:
        pytest.skip("no block device in /sys/block")
    major, minor = map(int, devs[0].read_text().split(":"))
    cid = start(runtime, bundle, "sleep 1000", {"blockIO": {
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 2097152}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 120}]}}, view=False)
    line = next(ln for ln in cgread(cid, "io.max").splitlines()
                if ln.startswith(f"{major}:{minor} "))
    assert "rbps=2097152" in line and "wiops=120" in line
    stop_and_delete(runtime, cid)


@pytest.mark.skipif("freezer" in IN_V1, reason="the v1 freezer hierarchy is mounted here, and "
                    "is used (tests/cgroup2-stage.sh unmounts it)")
def test_pause_resume_with_cgroup_freeze(runtime, bundle):
    cid = start(runtime, bundle, "sleep 1000 & while :; do :; done", view=False)
    pid = runtime.state(cid)["pid"]
    runtime("pause", cid)
    assert runtime.state(cid)["status"] == "paused"
    assert cgread(cid, "cgroup.freeze") == "1"
    wait_for(lambda: "frozen 1" in cgread(cid, "cgroup.events"), timeout=5)
    assert proc_state(pid) == "S"  # cgroup2 freezes in the signal-stop path, not D
    runtime("resume", cid)
    assert runtime.state(cid)["status"] == "running"
    assert "frozen 0" in cgread(cid, "cgroup.events")
    # kill --all on a paused container: thawed so the signal is delivered
    runtime("pause", cid)
    runtime("kill", "--all", cid, "KILL")
    runtime.wait_stopped(cid)
    runtime("delete", cid)
    assert not cgdir(cid).exists()


@on_v2("pids")
def test_ps_and_kill_all_walk_the_cgroup2_dir(runtime, bundle):
    cid = start(runtime, bundle, "sleep 1000 & sleep 1000 & wait", view=False)
    pids = wait_for(lambda: procs(cid) if len(procs(cid)) == 3 else None, timeout=5)
    assert sorted(json.loads(runtime("ps", "--format", "json", cid).stdout)) == sorted(pids)
    runtime("kill", "--all", cid, "KILL")
    runtime.wait_stopped(cid)
    wait_for(lambda: not procs(cid), timeout=5)
    runtime("delete", cid)
    assert not cgdir(cid).exists()


@on_v2("hugetlb")
def test_hugetlb_limit(runtime, bundle):
    sizes = {p.name.split("-")[1] for p in Path("/sys/kernel/mm/hugepages").iterdir()}
    if "2048kB" not in sizes:
        pytest.skip(f"no 2 MiB huge pages here ({sorted(sizes)})")
    # the kernel rounds the limit down to whole pages: 3 pages stay 3 pages
    cid = start(runtime, bundle, "sleep 1000", {"hugepageLimits": [
        {"pageSize": "2MB", "limit": 3 << 21}]}, view=False)
    assert cgread(cid, "hugetlb.2MB.max") == str(3 << 21)
    if (cgdir(cid) / "hugetlb.2MB.rsvd.max").exists():
        assert cgread(cid, "hugetlb.2MB.rsvd.max") == str(3 << 21)
    stop_and_delete(runtime, cid)


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's BPF device filter")
@pytest.mark.skipif("devices" in IN_V1, reason="the v1 devices hierarchy is mounted here, and "
                    "is used (tests/cgroup2-stage.sh unmounts it)")
def test_device_filter_in_a_container(runtime, bundle):
    """The BPF program (ours, attached to the container's cgroup2 dir) decides opens: the host's
    /dev/loop-control bound in is refused by default, and opens once a rule allows it."""
    loop = {"destination": "/lc", "type": "bind", "source": "/dev/loop-control",
            "options": ["bind"]}
    script = "head -c0 /lc 2>/err; echo $? > /done; exec sleep 1000"
    for allow, expect in ((False, "denied"), (True, "allowed")):
        bundle.config["mounts"] = [m for m in bundle.config["mounts"]
                                   if m["destination"] != "/lc"] + [loop]
        (bundle.rootfs / "lc").touch()
        for f in ("done", "err"):
            (bundle.rootfs / f).unlink(missing_ok=True)
        rules = [{"allow": False, "access": "rwm"}]
        if allow:
            rules.append({"allow": True, "type": "c", "major": 10, "minor": 237, "access": "r"})
        bundle.config["linux"]["resources"] = {"devices": rules}
        cid = start(runtime, bundle, script, view=False)
        rc = wait_file(bundle.rootfs / "done", timeout=10).strip()
        assert (rc == "0") == (expect == "allowed"), (expect, rc, (bundle.rootfs / "err").read_text())
        if expect == "denied":
            assert "not permitted" in (bundle.rootfs / "err").read_text()
        saved = json.loads(Path(runtime.root, cid, "pyruntime.json").read_text())
        assert "devices_bpf" in saved["cgroup"]["extra"]  # the program attached is ours
        stop_and_delete(runtime, cid)


def test_failed_create_leaves_no_cgroup2_dir(runtime, bundle):
    cid = runtime.new_id()
    bundle.config["linux"]["cgroupsPath"] = f"/pyrt-test/{cid}"
    bundle.config["process"]["args"] = ["/no/such/program"]
    bundle.write()
    r = runtime("create", "--bundle", str(bundle.path), cid, check=False)
    assert_failed(r, "/no/such/program")
    time.sleep(0.05)
    assert not cgdir(cid).exists()
