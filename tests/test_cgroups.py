"""pyruntime.cgroups on the host's real cgroups (v1 or hybrid here; v2 in test_cgroups_v2.py).

Every test makes its cgroup at a unique absolute path, puts real processes in it, and removes it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import kill_cgroup
from pyruntime import cgroups
from pyruntime.cgroups.common import Layout, hugepage_sizes
from pyruntime.errors import RuntimeFailure

LAYOUT = cgroups.detect()
_V1_NEEDED = {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb"}
pytestmark = pytest.mark.skipif(
    LAYOUT.mode == "v2" or not _V1_NEEDED <= set(LAYOUT.v1),
    reason=f"needs the v1 hierarchies {sorted(_V1_NEEDED - set(LAYOUT.v1))} "
           "(pure v2 host, or tests/cgroup2-stage.sh moved them to cgroup2)")


def uniq(prefix="pyruntime-test"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def mgr():
    """Factory: a manager at /pyruntime-test-<uuid>[/sub], created; destroyed at teardown."""
    made = []

    def make(path=None, create=True, **kw):
        m = cgroups.manager(path or "/" + uniq(), "ignored-id", **kw)
        made.append(m)
        if create:
            m.create()
        return m

    yield make
    for m in reversed(made):
        kill_cgroup(m)
        m.destroy()


def spawn(m, *args, **kw) -> subprocess.Popen:
    """Start a process that joins the cgroup before it execs."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(list(args), preexec_fn=lambda: m.add_pid(os.getpid()), **kw)


def rd(m, ctrl, name) -> str:
    with open(os.path.join(m.paths[ctrl], name)) as f:
        return f.read().strip()


def page_bytes(size: str) -> int:
    """ "2MB" -> 2097152"""
    return int(size[:-2]) << {"KB": 10, "MB": 20, "GB": 30}[size[-2:]]


def status_state(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("State:"):
                return line.split()[1]
    return "?"


# ---------------------------------------------------------------- layout and paths

def test_detect_layout_of_this_host():
    assert LAYOUT.mode in ("v1", "hybrid")
    for ctrl in ("cpu", "memory", "pids", "freezer", "devices"):
        assert ctrl in LAYOUT.v1
        assert os.path.isdir(LAYOUT.v1[ctrl][0])


def test_detect_parses_v1_v2_hybrid(tmp_path):
    def mi(lines):
        p = tmp_path / uniq("mi")
        p.write_text("".join(f"{i} 1 0:{i} {ln}\n" for i, ln in enumerate(lines, 30)))
        return str(p)

    v2 = cgroups.detect(mi(["/ /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate"]))
    assert v2.mode == "v2" and v2.unified == ("/sys/fs/cgroup", "/") and v2.v1 == {}
    v1 = cgroups.detect(mi([
        "/ /sys/fs/cgroup/cpu,cpuacct rw shared:1 - cgroup cgroup rw,cpu,cpuacct",
        "/ /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
        "/ /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd,release_agent=/x"]))
    assert v1.mode == "v1" and v1.unified is None
    assert v1.v1["cpu"] == v1.v1["cpuacct"] == ("/sys/fs/cgroup/cpu,cpuacct", "/")
    assert set(v1.v1) == {"cpu", "cpuacct", "memory", "name=systemd"}
    hy = cgroups.detect(mi([
        "/ /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids",
        "/ /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw",
        r"/ /mnt/with\040space rw - cgroup cgroup rw,freezer"]))
    assert hy.mode == "hybrid" and hy.v1["freezer"][0] == "/mnt/with space"


def test_cgroups_path_semantics():
    lay = Layout({"memory": ("/sys/fs/cgroup/memory", "/"), "pids": ("/cg/pids", "/sub")},
                 ("/sys/fs/cgroup/unified", "/"),
                 {"memory": "/user/a", "pids": "/sub/x", "": "/u/b"})
    m = cgroups.manager("/docker/abc", "abc", layout=lay)
    assert m.paths == {"memory": "/sys/fs/cgroup/memory/docker/abc",
                       "pids": "/cg/pids/docker/abc", "": "/sys/fs/cgroup/unified/docker/abc"}
    # relative: below our own cgroup in each hierarchy (seen through the mount's root)
    m = cgroups.manager("rel/c", "abc", layout=lay)
    assert m.paths["memory"] == "/sys/fs/cgroup/memory/user/a/rel/c"
    assert m.paths["pids"] == "/cg/pids/x/rel/c"
    # no cgroupsPath: "<id>", relative, as runc
    assert cgroups.manager(None, "abc", layout=lay).paths["memory"] == \
        "/sys/fs/cgroup/memory/user/a/abc"
    assert cgroups.manager("", "abc", layout=lay).paths["memory"] == \
        "/sys/fs/cgroup/memory/user/a/abc"
    # `..` never climbs out of the hierarchy
    assert cgroups.manager("/../../etc", "x", layout=lay).paths["memory"] == \
        "/sys/fs/cgroup/memory/etc"
    assert cgroups.manager("../../etc", "x", layout=lay).paths["memory"] == \
        "/sys/fs/cgroup/memory/user/a/etc"
    # pure v2: relative paths start at the parent of our own cgroup (runc's fs2)
    v2 = Layout({}, ("/sys/fs/cgroup", "/"), {"": "/user.slice/session-1.scope"})
    assert cgroups.manager("c1", "x", layout=v2).paths == {"": "/sys/fs/cgroup/user.slice/c1"}
    assert cgroups.manager("/c1", "x", layout=v2).paths == {"": "/sys/fs/cgroup/c1"}


# ---------------------------------------------------------------- lifecycle

def test_create_add_pid_pids_destroy(mgr):
    m = mgr()
    for d in set(m.paths.values()):
        assert os.path.isdir(d)
    p = spawn(m, "sh", "-c", "sleep 30 & sleep 30 & wait")
    try:
        deadline = time.monotonic() + 5
        while len(m.pids()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        pids = m.pids()
        assert p.pid in pids and len(pids) == 3
        # every hierarchy holds it
        with open(f"/proc/{p.pid}/cgroup") as f:
            mine = f.read()
        for key, d in m.paths.items():
            assert d.endswith(os.path.basename(m.paths["memory"]))
        assert os.path.basename(m.paths["pids"]) in mine
    finally:
        kill_cgroup(m)
        p.wait()
    created = list(m.created)
    m.destroy()
    assert not any(os.path.exists(d) for d in created)
    m.destroy()  # twice: ENOENT is fine


def test_add_pid_later(mgr):
    m = mgr()
    p = subprocess.Popen(["sleep", "30"])
    try:
        m.add_pid(p.pid)
        assert m.pids() == [p.pid]
        assert rd(m, "pids", "cgroup.procs") == str(p.pid)
    finally:
        p.kill()
        p.wait()


def test_destroy_removes_only_what_we_created(mgr):
    parent = "/" + uniq()
    m0 = cgroups.manager(parent, "x")
    pre = sorted(set(m0.paths.values()))
    for d in pre:
        os.mkdir(d)
    try:
        m = mgr(parent + "/child/leaf")
        assert sorted(m.created) == sorted(
            [d + "/child" for d in pre] + [d + "/child/leaf" for d in pre])
        # a sub-cgroup the container made itself goes too
        os.mkdir(m.paths["memory"] + "/nested")
        p = spawn(m, "true")
        p.wait()
        st = m.to_state()
        cgroups.manager_from_state(json.loads(json.dumps(st))).destroy()
        for d in pre:
            assert os.path.isdir(d), "a pre-existing parent was removed"
            assert not os.path.exists(d + "/child")
    finally:
        for d in pre:
            for sub, _, _ in os.walk(d, topdown=False):
                os.rmdir(sub)


def test_destroy_waits_for_a_dying_cgroup(mgr):
    m = mgr()
    p = spawn(m, "sleep", "30")
    p.kill()  # not yet reaped: the zombie keeps the cgroup busy for a moment
    reaper = subprocess.Popen(["sh", "-c", "sleep 0.2"])
    reaper.wait()
    p.wait()
    m.destroy()
    assert not os.path.exists(m.paths["pids"])


def test_to_state_round_trip(mgr):
    m = mgr()
    st = json.loads(json.dumps(m.to_state()))
    m2 = cgroups.manager_from_state(st)
    assert m2.paths == m.paths and m2.created == m.created
    p = spawn(m2, "sleep", "30")
    try:
        assert m.pids() == [p.pid]
        m2.freeze()
        assert m.state() == "frozen"
        m.thaw()
        assert m2.state() == "thawed"
    finally:
        kill_cgroup(m)
        p.wait()


# ---------------------------------------------------------------- resources

def test_apply_limits_read_back(mgr):
    m = mgr()
    p = spawn(m, "sleep", "30")
    sizes = hugepage_sizes()
    size = "2MB" if "2MB" in sizes else (sizes[0] if sizes else None)
    res = {
        "memory": {"limit": 100 << 20, "reservation": 50 << 20, "swappiness": 10,
                   "kernel": 1 << 30, "disableOOMKiller": False},
        "cpu": {"shares": 512, "quota": 50000, "period": 200000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 20},
        "hugepageLimits": [{"pageSize": size, "limit": 2 * page_bytes(size)}] if size else [],
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                    {"allow": True, "type": "c", "major": 5, "access": "m"},
                    {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rwm"},
                    {"allow": False, "type": "b", "major": 7, "minor": 0, "access": "w"}],
    }
    swap = os.path.exists(m.paths["memory"] + "/memory.memsw.limit_in_bytes")
    if swap:
        res["memory"]["swap"] = 200 << 20
    try:
        m.apply(res)
        assert rd(m, "memory", "memory.limit_in_bytes") == str(100 << 20)
        assert rd(m, "memory", "memory.soft_limit_in_bytes") == str(50 << 20)
        assert rd(m, "memory", "memory.swappiness") == "10"
        if swap:
            assert rd(m, "memory", "memory.memsw.limit_in_bytes") == str(200 << 20)
        assert rd(m, "cpu", "cpu.shares") == "512"
        assert rd(m, "cpu", "cpu.cfs_quota_us") == "50000"
        assert rd(m, "cpu", "cpu.cfs_period_us") == "200000"
        assert rd(m, "cpuset", "cpuset.cpus") == "0"
        assert rd(m, "cpuset", "cpuset.mems") == "0"
        assert rd(m, "pids", "pids.max") == "20"
        if size:
            w = m.where("hugetlb")
            name = "max" if w[0] == 2 else "limit_in_bytes"
            with open(f"{w[1]}/hugetlb.{size}.{name}") as f:
                assert f.read().strip() == str(2 * page_bytes(size))
        assert rd(m, "devices", "devices.list").splitlines() == \
            ["c 1:3 rw", "c 5:* m", "b 7:0 rm"]
        # -1 is "unlimited"
        m.apply({"memory": {"limit": -1}, "pids": {"limit": -1}, "cpu": {"quota": -1}})
        assert int(rd(m, "memory", "memory.limit_in_bytes")) > 1 << 60
        assert rd(m, "pids", "pids.max") == "max"
        assert rd(m, "cpu", "cpu.cfs_quota_us") == "-1"
    finally:
        kill_cgroup(m)
        p.wait()


def test_blkio_throttle(mgr):
    m = mgr()
    w = m.where("blkio")
    if w is None:
        pytest.skip("no blkio/io controller")
    with open("/sys/block/" + sorted(os.listdir("/sys/block"))[0] + "/dev") as f:
        major, minor = (int(x) for x in f.read().split(":"))
    m.apply({"blockIO": {
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 77}]}})
    assert rd(m, "blkio", "blkio.throttle.read_bps_device") == f"{major}:{minor} {1 << 20}"
    assert rd(m, "blkio", "blkio.throttle.write_iops_device") == f"{major}:{minor} 77"


def test_memory_and_swap_order_on_update(mgr):
    m = mgr()
    if not os.path.exists(m.paths["memory"] + "/memory.memsw.limit_in_bytes"):
        pytest.skip("no swap accounting")
    m.apply({"memory": {"limit": 100 << 20, "swap": 200 << 20}})
    # raising both: swap must go first
    cgroups.update(m, {"memory": {"limit": 300 << 20, "swap": 400 << 20}})
    assert rd(m, "memory", "memory.limit_in_bytes") == str(300 << 20)
    assert rd(m, "memory", "memory.memsw.limit_in_bytes") == str(400 << 20)
    # lowering both: memory must go first
    cgroups.update(m, {"memory": {"limit": 50 << 20, "swap": 60 << 20}})
    assert rd(m, "memory", "memory.limit_in_bytes") == str(50 << 20)
    assert rd(m, "memory", "memory.memsw.limit_in_bytes") == str(60 << 20)


def test_update_zero_means_unset(mgr):
    m = mgr()
    m.apply({"memory": {"limit": 100 << 20, "swappiness": 0}, "pids": {"limit": 30},
             "cpu": {"shares": 300, "quota": 20000}})
    assert rd(m, "memory", "memory.swappiness") == "0"  # 0 is a value at create
    cgroups.update(m, {"memory": {"limit": 0, "reservation": 0, "swap": 0, "swappiness": 0},
                       "pids": {"limit": 0}, "cpu": {"shares": 0, "quota": 0, "period": 0,
                                                    "cpus": "", "mems": ""},
                       "blockIO": {"weight": 0}})
    assert rd(m, "memory", "memory.limit_in_bytes") == str(100 << 20)
    assert rd(m, "pids", "pids.max") == "30"
    assert rd(m, "cpu", "cpu.shares") == "300"
    assert rd(m, "cpu", "cpu.cfs_quota_us") == "20000"
    cgroups.update(m, {"pids": {"limit": 40}, "cpu": {"shares": 0, "quota": 30000}})
    assert rd(m, "pids", "pids.max") == "40"
    assert rd(m, "cpu", "cpu.cfs_quota_us") == "30000"
    assert rd(m, "cpu", "cpu.shares") == "300"


@pytest.mark.parametrize("res, field", [
    ({"memory": {"limit": "1g"}}, "linux.resources.memory.limit: '1g' is not an integer"),
    ({"memory": {"limit": -5}}, "linux.resources.memory.limit: -5 is out of range"),
    ({"memory": {"swappiness": 101}}, "linux.resources.memory.swappiness: 101 is out of range"),
    ({"cpu": {"shares": 1 << 40}}, "linux.resources.cpu.shares: "),
    ({"cpu": {"cpus": "99999"}}, "linux.resources.cpu.cpus: writing '99999'"),
    ({"pids": {"limit": True}}, "linux.resources.pids.limit: True is not an integer"),
    ({"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]},
     r"linux.resources.hugepageLimits\[0\].pageSize: '3MB' is not a huge page size"),
    ({"devices": [{"allow": True, "access": "rwx"}]},
     r"linux.resources.devices\[0\].access: 'rwx' must be a combination"),
    ({"devices": [{"allow": "yes"}]}, r"linux.resources.devices\[0\].allow"),
    ({"devices": [{"allow": True, "type": "p"}]}, r"linux.resources.devices\[0\].type"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": "8", "minor": 0, "rate": 1}]}},
     r"linux.resources.blockIO.throttleReadBpsDevice\[0\].major"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 4095, "minor": 4095, "rate": 1}]}},
     r"linux.resources.blockIO.throttleReadBpsDevice\[0\]: writing"),
    ({"unified": {"memory.max": "1"}} if LAYOUT.unified is None else
     {"unified": {"a/b": "1"}}, r"linux.resources.unified"),
])
def test_bad_values_name_the_field(mgr, res, field):
    m = mgr()
    with pytest.raises(RuntimeFailure, match=field):
        m.apply(res)


def test_unavailable_knobs_are_clear_errors(mgr):
    m = mgr()
    if "net_cls" not in m.paths:
        with pytest.raises(RuntimeFailure, match="linux.resources.network.classID: the net_cls "
                                                 "cgroup controller is not available"):
            m.apply({"network": {"classID": 0x100001}})
    if not os.path.exists(m.paths["blkio"] + "/blkio.weight") and \
            not os.path.exists(m.paths["blkio"] + "/blkio.bfq.weight"):
        with pytest.raises(RuntimeFailure, match=r"linux.resources.blockIO.weight: this host has "
                                                 r"no blkio.weight \(cgroup v1 without CFQ/BFQ\)"):
            m.apply({"blockIO": {"weight": 500}})
    if "rdma" not in m.paths:
        with pytest.raises(RuntimeFailure, match="linux.resources.rdma: the rdma"):
            m.apply({"rdma": {"mlx5_1": {"hcaHandles": 3}}})
    # kernel memory is ignored, as runc >= 1.1 does
    m.apply({"memory": {"kernel": 64 << 20}})


# ---------------------------------------------------------------- limits that bite

def test_pids_max_stops_a_fork_bomb(mgr):
    m = mgr()
    m.apply({"pids": {"limit": 10}})
    p = spawn(m, "sh", "-c", "for i in $(seq 50); do sleep 2 & done; wait",
              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while len(m.pids()) < 10 and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(m.pids()) <= 10
        assert int(rd(m, "pids", "pids.current")) <= 10
        assert m.stats()["pids"]["limit"] == 10
        # let the shell finish its loop (its failed forks say so on stderr) before we kill
        _, err = p.communicate(timeout=30)
    finally:
        kill_cgroup(m)
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=10)
    assert "fork" in err.lower() or "resource temporarily unavailable" in err.lower(), err


def test_memory_hog_is_oom_killed(mgr):
    m = mgr()
    res = {"memory": {"limit": 50 << 20}}
    if os.path.exists(m.paths["memory"] + "/memory.memsw.limit_in_bytes"):
        res["memory"]["swap"] = 50 << 20  # no swap to escape into
    m.apply(res)
    assert m.oom_kill_count() == 0
    p = spawn(m, "python3", "-c", "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])")
    assert p.wait(timeout=60) == -signal.SIGKILL
    assert m.oom_kill_count() >= 1
    mem = m.stats()["memory"]
    peak = max(mem["usage"].get("max", 0), mem["swap"].get("max", 0))
    assert peak >= (50 << 20) - (1 << 20), mem  # it reached the limit


def test_freeze_and_thaw(mgr):
    m = mgr()
    p = spawn(m, "sh", "-c", "while :; do :; done")
    try:
        assert m.state() == "thawed"
        m.freeze()
        assert m.state() == "frozen"
        assert status_state(p.pid) == "D"  # how the v1 freezer shows a frozen task
        with open(f"/proc/{p.pid}/stat") as f:
            t0 = f.read().rsplit(")", 1)[1].split()[11]
        time.sleep(0.2)
        with open(f"/proc/{p.pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[11] == t0  # utime stood still
        m.thaw()
        assert m.state() == "thawed"
        assert status_state(p.pid) in ("R", "S")
    finally:
        kill_cgroup(m)
        p.wait()


def test_stats_shape(mgr):
    m = mgr()
    m.apply({"memory": {"limit": 256 << 20}, "pids": {"limit": 50}})
    p = spawn(m, "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 30")
    try:
        time.sleep(0.3)
        st = m.stats()
        json.dumps(st)
        assert set(st) >= {"cpu", "memory", "pids", "blkio", "hugetlb"}
        assert st["cpu"]["usage"]["total"] > 0
        assert len(st["cpu"]["usage"]["percpu"]) == os.cpu_count()
        assert {"kernel", "user"} <= set(st["cpu"]["usage"])
        assert isinstance(st["cpu"]["throttling"], dict)
        mem = st["memory"]
        assert mem["usage"]["limit"] == 256 << 20 and mem["usage"]["usage"] > 0
        assert {"limit", "failcnt"} <= set(mem["swap"]) and isinstance(mem["raw"], dict)
        assert st["pids"] == {"current": 2, "limit": 50}
        for size, h in st["hugetlb"].items():
            assert size.endswith("B") and "failcnt" in h
    finally:
        kill_cgroup(m)
        p.wait()


def test_oom_watcher_eventfd_and_polling(mgr):
    """`events` learns of OOMs by a v1 eventfd, or (v2, no eventfd) by polling the count."""
    from pyruntime.cgroups.ops import OOMWatcher
    m = mgr()
    res = {"memory": {"limit": 32 << 20}}
    if os.path.exists(m.paths["memory"] + "/memory.memsw.limit_in_bytes"):
        res["memory"]["swap"] = 32 << 20
    m.apply(res)
    by_fd, by_poll = OOMWatcher(m), OOMWatcher(m)
    by_poll.close()  # no eventfd: falls back to polling oom_kill
    try:
        assert by_fd.pollable and not by_poll.pollable
        assert by_fd.check() == 0 and by_poll.check() == 0
        p = spawn(m, "python3", "-c", "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])")
        assert p.wait(timeout=60) == -signal.SIGKILL
        import select
        assert select.select([by_fd], [], [], 5)[0]
        assert by_fd.check() >= 1 and by_poll.check() >= 1
        assert by_poll.check() == 0  # counted once
        # removing the cgroup wakes the eventfd too: that is the end, not an OOM
        kill_cgroup(m)
        m.destroy()
        assert select.select([by_fd], [], [], 5)[0]
        assert by_fd.check() == 0 and by_fd.gone
    finally:
        by_fd.close()


# ---------------------------------------------------------------- placement (a new child)

# Run in a fresh interpreter: clone3 needs a process with one thread (a pytest-xdist worker
# has more), and an os.register_at_fork hook cannot be taken back.
_PLACE = """
import json, os, sys, threading
from pyruntime import cgroups
m = cgroups.manager_from_state(json.loads(sys.argv[1]))
stop = threading.Event()
extra = [threading.Thread(target=stop.wait) for _ in range(int(sys.argv[2]))]
for t in extra:
    t.start()
p = m.placement()
r, w = os.pipe()
go_r, go_w = os.pipe()
pid = p.fork()
if pid == 0:
    p.child()
    os.write(w, b"moved")
    os.read(go_r, 1)
    with open("/proc/self/cgroup") as f:
        os.write(w, f.read().encode())
    os._exit(0)
stop.set()
os.close(w)
assert os.read(r, 5) == b"moved"
p.parent(pid)
os.write(go_w, b"x")
with os.fdopen(r) as f:
    seen = f.read()
os.waitpid(pid, 0)
print(json.dumps({"born_in_v2": p.born_in_v2, "seen": seen}))
"""


def _python(code: str, *args: str) -> str:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", code, *args], check=True, text=True,
                          capture_output=True, cwd=repo, timeout=30).stdout


@pytest.mark.parametrize("threads", [0, 1], ids=["clone3", "a-thread-forces-fork"])
def test_placement_puts_a_child_in_every_hierarchy(mgr, threads):
    """The child moves itself into each v1 hierarchy and is born into the cgroup2 one
    (clone3); with another thread alive it is forked and the parent moves it into cgroup2."""
    m = mgr()
    rel = "/" + os.path.basename(m.paths["memory"])
    got = json.loads(_python(_PLACE, json.dumps(m.to_state()), str(threads)))
    assert got["born_in_v2"] == (threads == 0 and "" in m.paths)
    lines = got["seen"].splitlines()
    assert len(lines) == len(open("/proc/self/cgroup").read().splitlines())
    assert all(line.endswith(":" + rel) for line in lines), got["seen"]


_WHOLE_FORK = """
import ctypes, os, sys, threading
from pyruntime.linux import syscalls
ran = []
os.register_at_fork(after_in_child=lambda: ran.append("child"))
fd = os.open(sys.argv[1], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
r, w = os.pipe()
pid = syscalls.fork_into_cgroup(fd)
if pid == 0:
    addr = ctypes.c_uint64()
    syscalls.libc().prctl(syscalls.PR_GET_TID_ADDRESS, ctypes.byref(addr), 0, 0, 0)
    tid = ctypes.c_int.from_address(addr.value).value
    grandchild = os.fork()
    if grandchild == 0:
        os._exit(7)
    forked = os.waitstatus_to_exitcode(os.waitpid(grandchild, 0)[1])
    t = threading.Thread(target=lambda: ran.append("thread"))
    t.start()
    t.join()
    with open("/proc/self/cgroup") as f:
        v2 = [line for line in f if line.startswith("0::")]
    os.write(w, repr((tid == os.getpid(), ran, forked, v2)).encode())
    os._exit(0)
os.close(w)
with os.fdopen(r) as f:
    print(f.read())
assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
assert ran == []
"""


def test_fork_into_cgroup_is_a_whole_fork(mgr):
    """What glibc's and CPython's fork do holds in clone3's child: glibc's cached tid is the
    child's, os.register_at_fork's hooks ran, and it can fork and start threads."""
    m = mgr()
    if "" not in m.paths:
        pytest.skip("no cgroup2 hierarchy on this host")
    rel = "/" + os.path.basename(m.paths[""])
    got = _python(_WHOLE_FORK, m.paths[""]).strip()
    assert got == repr((True, ["child", "thread"], 7, [f"0::{rel}\n"])), got
