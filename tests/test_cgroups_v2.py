"""pyruntime.cgroups driving cgroup v2 for real.

On a pure v2 host this is the host's hierarchy. On a hybrid host the manager is pointed at the
cgroup2 mount alone (a v2-only Layout), and gets whatever controllers it holds: none, or those no
v1 hierarchy took. `tests/cgroup2-stage.sh enter` hands idle v1 controllers (pids, hugetlb, cpu,
cpuset, ...) over to cgroup2 so that the controller tests below run too; `leave` gives them back.
Tests of a controller the hierarchy lacks are skipped; the core (cgroup.procs, cgroup.freeze,
cgroup.events, cpu.stat, BPF device filters) always runs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from conftest import kill_cgroup
from corehelp import wait_for
from pyruntime import cgroups
from pyruntime.cgroups.common import Layout, hugepage_sizes
from pyruntime.errors import RuntimeFailure

HOST = cgroups.detect()
pytestmark = pytest.mark.skipif(HOST.unified is None, reason="no cgroup2 hierarchy mounted")
V2 = Layout({}, HOST.unified, HOST.own) if HOST.unified else None
ROOT_CONTROLLERS = set()
if HOST.unified:
    with open(os.path.join(HOST.unified[0], "cgroup.controllers")) as f:
        ROOT_CONTROLLERS = set(f.read().split())


def needs(*ctrls):
    missing = [c for c in ctrls if c not in ROOT_CONTROLLERS]
    return pytest.mark.skipif(bool(missing), reason=f"cgroup2 lacks {missing} "
                              "(run tests/cgroup2-stage.sh enter)")


@pytest.fixture
def mgr():
    made = []

    def make(path=None):
        m = cgroups.manager(path or f"/pyruntime-test-{uuid.uuid4().hex[:12]}", "x", layout=V2)
        made.append(m)
        m.create()
        return m

    yield make
    for m in reversed(made):
        kill_cgroup(m)
        m.destroy()


def spawn(m, *args, **kw) -> subprocess.Popen:
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(list(args), preexec_fn=lambda: m.add_pid(os.getpid()), **kw)


def rd(m, name) -> str:
    with open(os.path.join(m.paths[""], name)) as f:
        return f.read().strip()


def utime(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[11])


# ---------------------------------------------------------------- always

def test_v2_layout_and_paths(mgr):
    m = mgr()
    assert m.mode == "v2" and list(m.paths) == [""]
    assert m.paths[""].startswith(HOST.unified[0] + "/pyruntime-test-")
    assert os.path.exists(m.paths[""] + "/cgroup.procs")
    # every controller the root has is delegated down to us
    assert set(rd(m, "cgroup.controllers").split()) == ROOT_CONTROLLERS


def test_v2_pids_freeze_thaw_destroy(mgr):
    m = mgr("/pyruntime-test-" + uuid.uuid4().hex[:12] + "/nested")
    p = spawn(m, "sh", "-c", "sleep 30 & while :; do :; done")
    try:
        deadline = time.monotonic() + 5
        while len(m.pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert p.pid in m.pids() and len(m.pids()) == 2
        with open(f"/proc/{p.pid}/cgroup") as f:
            assert m.paths[""][len(HOST.unified[0]):] in f.read()
        assert m.state() == "thawed"
        m.freeze()
        assert m.state() == "frozen" and rd(m, "cgroup.freeze") == "1"
        assert "frozen 1" in rd(m, "cgroup.events")
        t0 = utime(p.pid)
        time.sleep(0.2)
        assert utime(p.pid) == t0
        m.thaw()
        assert m.state() == "thawed"
        wait_for(lambda: utime(p.pid) > t0)  # it runs again (a tick can take long under load)
    finally:
        kill_cgroup(m)
        p.wait()
    created = list(m.created)
    assert len(created) == 2
    m.destroy()
    assert not any(os.path.exists(d) for d in created)


def test_v2_stats_and_state_round_trip(mgr):
    m = mgr()
    p = spawn(m, "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 30")
    try:
        time.sleep(0.3)
        st = m.stats()
        json.dumps(st)
        assert st["cpu"]["usage"]["total"] > 0 and "user" in st["cpu"]["usage"]
        m2 = cgroups.manager_from_state(json.loads(json.dumps(m.to_state())))
        assert m2.paths == m.paths and m2.pids() == m.pids()
    finally:
        kill_cgroup(m)
        p.wait()


def test_v2_device_filter(mgr):
    """Device rules become a BPF program: deny all, allow /dev/null rw."""
    from pyruntime.cgroups import bpf
    m = mgr()
    m.apply({"devices": [{"allow": False, "access": "rwm"},
                         {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                         {"allow": True, "type": "c", "major": 1, "access": "r"},
                         {"allow": False, "type": "c", "major": 1, "minor": 8, "access": "r"}]})
    assert bpf.attached_ids(m.paths[""]) == [m.extra["devices_bpf"]["prog_id"]]

    def can(cmd):
        return spawn(m, "sh", "-c", cmd, stderr=subprocess.DEVNULL).wait() == 0

    assert can("echo x > /dev/null")
    assert can("head -c1 /dev/zero")           # c 1:5 r via the wildcard minor
    assert not can("echo x > /dev/zero")       # ... but not w
    assert not can("head -c1 /dev/random")     # c 1:8 denied after the wildcard
    assert not can("head -c1 /dev/tty")        # c 5:0: default deny
    # an update swaps the program (allow all, then deny writes to /dev/null)
    m.apply({"devices": [{"allow": True, "access": "rwm"},
                         {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]},
            update=True)
    assert bpf.attached_ids(m.paths[""]) == [m.extra["devices_bpf"]["prog_id"]]
    assert can("head -c1 /dev/zero") and can("head -c1 /dev/random")
    assert can("cat /dev/null")
    assert not can("echo x > /dev/null")
    # survives the state round trip: `update` in another process replaces it again
    m2 = cgroups.manager_from_state(json.loads(json.dumps(m.to_state())))
    m2.apply({"devices": [{"allow": True, "access": "rwm"}]}, update=True)
    assert bpf.attached_ids(m.paths[""]) == [m2.extra["devices_bpf"]["prog_id"]]
    assert can("echo x > /dev/null")


def test_v2_missing_controller_is_a_clear_error(mgr):
    m = mgr()
    for ctrl, res, field in (
            ("memory", {"memory": {"limit": 1 << 30}}, "linux.resources.memory"),
            ("pids", {"pids": {"limit": 5}}, "linux.resources.pids.limit"),
            ("io", {"blockIO": {"weight": 100}}, "linux.resources.blockIO"),
            ("cpu", {"cpu": {"shares": 100}}, "linux.resources.cpu")):
        if ctrl not in ROOT_CONTROLLERS:
            with pytest.raises(RuntimeFailure, match=f"{field}: the {ctrl} cgroup controller is "
                                                     "not available"):
                m.apply(res)
    # knobs cgroup v2 does not have at all: silently ignored as runc does
    m.apply({"network": {"classID": 1}, "memory": {"kernel": 1 << 20}})
    with pytest.raises(RuntimeFailure, match=r"linux.resources.unified.a/b: must be a file name"):
        m.apply({"unified": {"a/b": "1"}})
    with pytest.raises(RuntimeFailure, match=r"linux.resources.unified.nosuch.knob: controller "
                                             r"'nosuch' is not available"):
        m.apply({"unified": {"nosuch.knob": "1"}})


def test_v2_unified_writes_core_files(mgr):
    m = mgr()
    m.apply({"unified": {"cgroup.max.descendants": "7"}})
    assert rd(m, "cgroup.max.descendants") == "7"


# ---------------------------------------------------------------- with controllers

def refused_forks(m):
    return int(dict(line.split() for line in rd(m, "pids.events").splitlines())["max"])


@needs("pids")
def test_v2_pids_max_stops_a_fork_bomb(mgr):
    m = mgr()
    m.apply({"pids": {"limit": 10}})
    assert rd(m, "pids.max") == "10"
    p = spawn(m, "sh", "-c", "for i in $(seq 50); do sleep 5 & done; wait",
              stderr=subprocess.PIPE, text=True)
    try:
        # The kernel counts each fork refused at the limit in pids.events; wait for the first
        # refusal rather than for the shell's message, which a kill can beat to stderr.
        deadline = time.monotonic() + 10
        while refused_forks(m) == 0 and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert refused_forks(m) > 0
        assert len(m.pids()) <= 10
        assert m.stats()["pids"]["limit"] == 10
    finally:
        kill_cgroup(m)
        p.communicate(timeout=10)
    cgroups.update(m, {"pids": {"limit": 0}})
    assert rd(m, "pids.max") == "10"
    m.apply({"pids": {"limit": -1}})
    assert rd(m, "pids.max") == "max"


@needs("memory")
def test_v2_memory_conversions_and_oom(mgr):
    m = mgr()
    swap = os.path.exists(m.paths[""] + "/memory.swap.max")
    res = {"memory": {"limit": 50 << 20, "reservation": 10 << 20}}
    if swap:
        res["memory"]["swap"] = 80 << 20  # memory+swap: memory.swap.max gets 30M
    m.apply(res)
    assert rd(m, "memory.max") == str(50 << 20)
    assert rd(m, "memory.low") == str(10 << 20)
    if swap:
        assert rd(m, "memory.swap.max") == str(30 << 20)
        m.apply({"memory": {"limit": 50 << 20, "swap": 50 << 20}})
        assert rd(m, "memory.swap.max") == "0"
        with pytest.raises(RuntimeFailure, match="linux.resources.memory.swap: memory\\+swap"):
            m.apply({"memory": {"limit": 50 << 20, "swap": 10 << 20}})
    p = spawn(m, "python3", "-c", "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])")
    assert p.wait(timeout=60) == -signal.SIGKILL
    assert m.oom_kill_count() >= 1
    st = m.stats()["memory"]
    assert st["usage"]["limit"] == 50 << 20
    m.apply({"memory": {"limit": -1}})
    assert rd(m, "memory.max") == "max"


@needs("cpu")
def test_v2_cpu_conversions(mgr):
    m = mgr()
    m.apply({"cpu": {"shares": 1024, "quota": 50000, "period": 100000}})
    assert rd(m, "cpu.weight") == "39"   # runc: 1 + (1024-2)*9999/262142
    assert rd(m, "cpu.max") == "50000 100000"
    cgroups.update(m, {"cpu": {"quota": 20000, "period": 0, "shares": 0}})
    assert rd(m, "cpu.max") == "20000 100000" and rd(m, "cpu.weight") == "39"
    m.apply({"cpu": {"quota": -1}})
    assert rd(m, "cpu.max") == "max 100000"
    with pytest.raises(RuntimeFailure, match="linux.resources.cpu.realtimeRuntime"):
        m.apply({"cpu": {"realtimeRuntime": 1000}})


@needs("cpuset")
def test_v2_cpuset(mgr):
    m = mgr()
    m.apply({"cpu": {"cpus": "0", "mems": "0"}})
    assert rd(m, "cpuset.cpus") == "0" and rd(m, "cpuset.mems") == "0"


@needs("hugetlb")
def test_v2_hugetlb(mgr):
    sizes = hugepage_sizes()
    size = "2MB" if "2MB" in sizes else sizes[0]
    m = mgr()
    m.apply({"hugepageLimits": [{"pageSize": size, "limit": 0}]})
    assert rd(m, f"hugetlb.{size}.max") == "0"
    st = m.stats()
    assert "failcnt" in st["hugetlb"][size]


# ---------------------------------------------------------------- conversions, on plain files
# (the controller tests above need cgroup2-stage.sh on a hybrid host; these check runc's
# v1 -> v2 conversions everywhere, writing into an ordinary directory)

def _files(tmp_path, **files):
    for name, value in files.items():
        (tmp_path / name.replace("__", ".")).write_text(value)
    return str(tmp_path)


def _get(d, name):
    with open(os.path.join(d, name)) as f:
        return f.read()


def test_v2_conversions_on_files(tmp_path):
    from pyruntime.cgroups import v2
    from pyruntime.cgroups.common import Fields
    d = _files(tmp_path, memory__max="max", memory__swap__max="max", memory__low="0",
               cpu__weight="100", cpu__max="max 100000", io__weight="default 100", io__max="",
               pids__max="max", memory__current="4096")

    def f(obj, update=False):
        return Fields(obj, "linux.resources.x", update)

    v2.set_memory(d, f({"limit": 100, "swap": 300, "reservation": 50}))
    assert (_get(d, "memory.max"), _get(d, "memory.swap.max"), _get(d, "memory.low")) == \
        ("100", "200", "50")
    v2.set_memory(d, f({"limit": -1}))
    assert (_get(d, "memory.max"), _get(d, "memory.swap.max")) == ("max", "max")
    v2.set_memory(d, f({"limit": 100, "swap": 100}))
    assert _get(d, "memory.swap.max") == "0"
    v2.set_memory(d, f({"swap": 150}, update=True))  # against the limit in force (100)
    assert _get(d, "memory.swap.max") == "50"
    with pytest.raises(RuntimeFailure, match="checkBeforeUpdate"):
        v2.set_memory(d, f({"limit": 1000, "checkBeforeUpdate": True}))
    with pytest.raises(RuntimeFailure, match="swap limit without memory limit"):
        v2.set_memory(d, f({"swap": 100, "limit": -1}))
    v2.set_cpu(d, f({"shares": 2}))
    assert _get(d, "cpu.weight") == "1"
    v2.set_cpu(d, f({"shares": 262144}))
    assert _get(d, "cpu.weight") == "10000"
    v2.set_cpu(d, f({"period": 50000}))
    assert _get(d, "cpu.max") == "max 50000"
    v2.set_io(d, f({"weight": 10}))
    assert _get(d, "io.weight") == "1"
    v2.set_io(d, f({"weight": 1000}))
    assert _get(d, "io.weight") == "10000"
    v2.set_io(d, f({"throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 0}]}))
    assert _get(d, "io.max") == "8:0 wiops=max"
    v2.set_pids(d, f({"limit": -1}))
    assert _get(d, "pids.max") == "max"
