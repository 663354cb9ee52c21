"""pause, resume, update, ps, events and kill --all on real containers, checked from outside (the
cgroup files, /proc) and from inside (the container's own /sys/fs/cgroup view).

Each container gets cgroupsPath /pyrt-test/<id> so the leak check finds leftovers. The tests
hold for runc too where runc behaves the same:
    PYRUNTIME_TEST_RUNTIME=runc python3 -m pytest -q -n 2 tests/test_cgroup_commands.py
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import is_pyruntime, reap_zombies
from corehelp import (alive, assert_failed, prepare_in_cgroup as prepare, proc_state,
                      start_in_cgroup as start, stop_and_delete, wait_file, wait_for)

CG = Path("/sys/fs/cgroup")
V1 = all((CG / c / "cgroup.procs").exists() for c in ("memory", "freezer", "pids", "cpu"))
pytestmark = pytest.mark.skipif(not V1, reason="these tests read the v1 memory, freezer, pids and "
                                "cpu hierarchies (absent on pure v2 or inside tests/cgroup2-stage.sh; "
                                "test_cgroups_v2_containers.py covers that)")

MiB = 1 << 20


# ---------------------------------------------------------------- helpers

def cgdir(ctrl: str, cid: str) -> Path:
    return CG / ctrl / "pyrt-test" / cid


def cgread(ctrl: str, cid: str, name: str) -> str:
    return (cgdir(ctrl, cid) / name).read_text().strip()


def has_memsw() -> bool:
    return (CG / "memory" / "memory.memsw.limit_in_bytes").exists()


def status(runtime, cid) -> str:
    return runtime.state(cid)["status"]


def procs(cid: str) -> list[int]:
    return [int(p) for p in cgread("pids", cid, "cgroup.procs").split()]


def wait_procs(cid: str, n: int) -> list[int]:
    return wait_for(lambda: procs(cid) if len(procs(cid)) >= n else None)


def utime(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11])


def ps_json(runtime, cid) -> list[int]:
    out = runtime("ps", "--format", "json", cid).stdout
    return json.loads(out) or []


class Lines:
    """Read a process's stdout lines in a thread, with timeouts."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.q = proc, queue.Queue()
        self.t = threading.Thread(target=self._pump, daemon=True)
        self.t.start()

    def _pump(self):
        for line in self.proc.stdout:
            self.q.put(line)
        self.q.put(None)

    def next(self, timeout: float):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return ""

    def until(self, pred, timeout: float) -> list[dict]:
        seen, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.next(max(0.01, deadline - time.monotonic()))
            if line is None:
                break
            if line:
                ev = json.loads(line)
                seen.append(ev)
                if pred(ev):
                    return seen
        raise AssertionError(f"no matching event within {timeout}s; saw {seen}")


# ================================================================ pause / resume

def test_pause_and_resume(runtime, bundle):
    cid = start(runtime, bundle, "while :; do :; done & sleep 1000")
    init = runtime.state(cid)["pid"]
    wait_procs(cid, 2)
    time.sleep(0.3)
    busy = max(procs(cid), key=utime)  # the one spinning
    runtime("pause", cid)
    assert status(runtime, cid) == "paused"
    assert cgread("freezer", cid, "freezer.state") == "FROZEN"
    for pid in (init, busy):
        assert proc_state(pid) in ("D", "T"), proc_state(pid)  # v1 freezer: D
    t0 = utime(busy)
    time.sleep(0.3)
    assert utime(busy) == t0  # the busy loop stands still
    # pausing again: runc says "container not running"
    assert_failed(runtime("pause", cid, check=False), "container not running")

    runtime("resume", cid)
    assert status(runtime, cid) == "running"
    assert cgread("freezer", cid, "freezer.state") == "THAWED"
    wait_for(lambda: utime(busy) > t0, timeout=5)
    assert_failed(runtime("resume", cid, check=False), "container not paused")
    stop_and_delete(runtime, cid)


def test_pause_a_created_container(runtime, bundle):
    cid = prepare(runtime, bundle, "echo ran > /ran; sleep 1000")
    runtime.create(bundle, cid)
    runtime("pause", cid)
    assert status(runtime, cid) == "paused"
    runtime("resume", cid)
    assert status(runtime, cid) == "created"
    runtime("start", cid)
    assert wait_file(bundle.rootfs / "ran") == "ran\n"
    assert status(runtime, cid) == "running"
    stop_and_delete(runtime, cid)


def test_pause_resume_errors(runtime, bundle):
    assert_failed(runtime("pause", "nonexistent-xyz", check=False), "does not exist")
    assert_failed(runtime("resume", "nonexistent-xyz", check=False), "does not exist")
    cid = start(runtime, bundle, "true")
    runtime.wait_stopped(cid)
    assert_failed(runtime("pause", cid, check=False), "container not running")
    assert_failed(runtime("resume", cid, check=False), "container not paused")
    assert status(runtime, cid) == "stopped"
    runtime("delete", cid)


# ================================================================ kill on paused / stopped

def test_kill_all_on_a_paused_container(runtime, bundle):
    cid = start(runtime, bundle, "sleep 1000 & sleep 1001 & wait")
    pids = wait_procs(cid, 3)
    runtime("pause", cid)
    runtime("kill", "--all", cid, "KILL")
    wait_for(lambda: (reap_zombies(), not any(alive(p) for p in pids))[1], timeout=10)
    assert runtime.wait_stopped(cid)["status"] == "stopped"
    assert procs(cid) == []
    runtime("delete", cid)
    assert not cgdir("freezer", cid).exists()


def test_kill_init_of_a_paused_container(runtime, bundle):
    cid = start(runtime, bundle, "sleep 1000")
    init = runtime.state(cid)["pid"]
    runtime("pause", cid)
    runtime("kill", cid, "KILL")  # runc thaws for SIGKILL, or the init would never die
    wait_for(lambda: (reap_zombies(), not alive(init))[1], timeout=10)
    assert runtime.wait_stopped(cid)["status"] == "stopped"
    runtime("delete", cid)


def test_kill_all_on_a_stopped_container(runtime, bundle):
    cid = start(runtime, bundle, "true")
    runtime.wait_stopped(cid)
    assert runtime("kill", "--all", cid, "KILL", check=False).returncode == 0
    assert runtime("kill", "--all", cid, "0", check=False).returncode == 0
    runtime("delete", cid)


def test_kill_signal_0_probes_without_signalling(runtime, bundle):
    # kill(2)'s signal 0: runc accepts it, and tools use it to ask "is it still there?"
    cid = start(runtime, bundle, "trap 'echo got >/tmp/sig' USR1 TERM HUP; sleep 1000 & wait")
    init = runtime.state(cid)["pid"]
    runtime("kill", cid, "0")
    runtime("kill", "--all", cid, "0")
    assert alive(init) and runtime.state(cid)["status"] == "running"
    assert not (bundle.rootfs / "tmp" / "sig").exists()
    runtime("kill", cid, "KILL")
    runtime.wait_stopped(cid)
    assert_failed(runtime("kill", cid, "0", check=False), "container not running")
    runtime("delete", cid)


# ================================================================ update

def test_update_memory_seen_outside_and_inside(runtime, bundle):
    script = ("while :; do cat /sys/fs/cgroup/memory/memory.limit_in_bytes > /lim.tmp; "
              "mv /lim.tmp /lim; sleep 0.05; done")
    cid = start(runtime, bundle, script, resources={"memory": {"limit": 256 * MiB}},
                cgroup_view=True)
    lim = bundle.rootfs / "lim"
    assert int(wait_file(lim)) == 256 * MiB
    runtime("update", "--memory", "100M", cid)
    assert int(cgread("memory", cid, "memory.limit_in_bytes")) == 100 * MiB
    wait_for(lambda: lim.exists() and lim.read_text().strip() == str(100 * MiB))
    assert status(runtime, cid) == "running"
    stop_and_delete(runtime, cid)


@pytest.mark.parametrize("text,value", [("64m", 64 * MiB), ("1g", 1 << 30), ("1.5G", 3 << 29),
                                        ("131072k", 128 * MiB), ("100MiB", 100 * MiB),
                                        ("200000000", 200000000)])
def test_update_memory_suffixes(runtime, bundle, text, value):
    cid = start(runtime, bundle, "sleep 1000")
    runtime("update", "--memory", text, cid)
    got = int(cgread("memory", cid, "memory.limit_in_bytes"))
    assert got == value // 4096 * 4096  # the kernel rounds down to pages
    stop_and_delete(runtime, cid)


def test_update_flags(runtime, bundle):
    cid = start(runtime, bundle, "sleep 1000")
    args = ["--cpu-share", "512", "--cpu-period", "50000", "--cpu-quota", "25000",
            "--cpuset-cpus", "0", "--cpuset-mems", "0", "--memory", "64M",
            "--memory-reservation", "32M", "--pids-limit", "42"]
    if has_memsw():
        args += ["--memory-swap", "96M"]
    runtime("update", *args, cid)
    assert cgread("cpu", cid, "cpu.shares") == "512"
    assert cgread("cpu", cid, "cpu.cfs_period_us") == "50000"
    assert cgread("cpu", cid, "cpu.cfs_quota_us") == "25000"
    assert cgread("cpuset", cid, "cpuset.cpus") == "0"
    assert cgread("cpuset", cid, "cpuset.mems") == "0"
    assert int(cgread("memory", cid, "memory.limit_in_bytes")) == 64 * MiB
    assert int(cgread("memory", cid, "memory.soft_limit_in_bytes")) == 32 * MiB
    assert cgread("pids", cid, "pids.max") == "42"
    if has_memsw():
        assert int(cgread("memory", cid, "memory.memsw.limit_in_bytes")) == 96 * MiB
        # memory -1 without a swap value: memory and memory+swap both unlimited
        runtime("update", "--memory", "-1", cid)
        assert int(cgread("memory", cid, "memory.limit_in_bytes")) > 1 << 60
        assert int(cgread("memory", cid, "memory.memsw.limit_in_bytes")) > 1 << 60
    runtime("update", "--pids-limit", "-1", cid)
    assert cgread("pids", cid, "pids.max") == "max"
    stop_and_delete(runtime, cid)


def test_update_from_stdin_zero_means_unset(runtime, bundle):
    res = {"memory": {"limit": 64 * MiB, "reservation": 32 * MiB},
           "cpu": {"shares": 512, "quota": 20000, "period": 100000}, "pids": {"limit": 50}}
    cid = start(runtime, bundle, "sleep 1000", resources=res)
    # What Docker sends: every field, the ones the user did not set as 0.
    docker = {"memory": {"limit": 0, "reservation": 0, "swap": 0, "kernel": 0, "kernelTCP": 0},
              "cpu": {"shares": 0, "quota": 0, "period": 0, "realtimeRuntime": 0,
                      "realtimePeriod": 0, "cpus": "", "mems": ""},
              "blockIO": {"weight": 0}, "pids": {"limit": 30}}
    runtime("update", "--resources", "-", cid, input=json.dumps(docker))
    assert int(cgread("memory", cid, "memory.limit_in_bytes")) == 64 * MiB
    assert int(cgread("memory", cid, "memory.soft_limit_in_bytes")) == 32 * MiB
    assert cgread("cpu", cid, "cpu.shares") == "512"
    assert cgread("cpu", cid, "cpu.cfs_quota_us") == "20000"
    assert cgread("cpu", cid, "cpu.cfs_period_us") == "100000"
    assert cgread("pids", cid, "pids.max") == "30"
    stop_and_delete(runtime, cid)


def test_update_from_file_ignores_flags(runtime, bundle, tmp_path):
    cid = start(runtime, bundle, "sleep 1000")
    f = tmp_path / "res.json"
    f.write_text(json.dumps({"memory": {"limit": 80 * MiB}, "cpu": {"shares": 300}}))
    runtime("update", "-r", f, "--pids-limit", "7", cid)
    assert int(cgread("memory", cid, "memory.limit_in_bytes")) == 80 * MiB
    assert cgread("cpu", cid, "cpu.shares") == "300"
    assert cgread("pids", cid, "pids.max") == "max"  # flags are ignored with --resources
    stop_and_delete(runtime, cid)


def test_update_pids_limit_bites_inside(runtime, bundle):
    # Once the limit bites, only builtins and exec work: ash gives up on a failed fork.
    script = ("while [ ! -e /go ]; do sleep 0.05; done; "
              "sh -c 'for i in $(seq 20); do sleep 1000 & done' 2>/forkerr; "
              "read m < /sys/fs/cgroup/pids/pids.max; echo $m > /max; echo done > /done; "
              "exec sleep 1000")
    cid = start(runtime, bundle, script, cgroup_view=True)
    runtime("update", "--pids-limit", "5", cid)
    assert cgread("pids", cid, "pids.max") == "5"
    (bundle.rootfs / "go").write_text("")
    wait_file(bundle.rootfs / "done", timeout=10)
    assert (bundle.rootfs / "max").read_text().strip() == "5"  # seen from inside too
    assert len(procs(cid)) <= 5
    assert int(cgread("pids", cid, "pids.current")) <= 5
    assert (bundle.rootfs / "forkerr").read_text()  # sh reported the failed forks
    stop_and_delete(runtime, cid)


def test_update_keeps_a_paused_container_paused(runtime, bundle):
    cid = start(runtime, bundle, "sleep 1000")
    runtime("pause", cid)
    runtime("update", "--memory", "50M", "--pids-limit", "20", cid)
    assert status(runtime, cid) == "paused"
    assert int(cgread("memory", cid, "memory.limit_in_bytes")) == 50 * MiB
    runtime("resume", cid)
    stop_and_delete(runtime, cid)


def test_update_errors(runtime, bundle):
    cid = start(runtime, bundle, "sleep 1000")
    assert_failed(runtime("update", "--memory", "1x", cid, check=False),
                  "invalid value for memory")
    assert_failed(runtime("update", "--l3-cache-schema", "L3:0=f", cid, check=False),
                  "Intel RDT/CAT: l3 cache schema is not enabled")
    assert_failed(runtime("update", "--mem-bw-schema", "MB:0=50", cid, check=False),
                  "Intel RDT/MBA: memory bandwidth schema is not enabled")
    assert_failed(runtime("update", "-r", "-", cid, input="{not json", check=False))
    assert_failed(runtime("update", "--memory", "1M", "nonexistent-xyz", check=False),
                  "does not exist")
    stop_and_delete(runtime, cid)
    cid = start(runtime, bundle, "true")
    runtime.wait_stopped(cid)
    assert_failed(runtime("update", "--memory", "64M", cid, check=False),
                  "container not running")
    runtime("delete", cid)


# ================================================================ ps

def test_ps_json_lists_the_init_and_its_children(runtime, bundle):
    cid = start(runtime, bundle, "sleep 1000 & sleep 1001 & wait")
    init = runtime.state(cid)["pid"]
    pids = wait_procs(cid, 3)
    got = ps_json(runtime, cid)
    assert init in got
    assert sorted(got) == sorted(pids) and len(got) == 3
    assert os.getpid() not in got
    stop_and_delete(runtime, cid)


def test_ps_table(runtime, bundle):
    cid = start(runtime, bundle, "sleep 1000 & wait")
    pids = wait_procs(cid, 2)
    out = runtime("ps", cid).stdout.splitlines()
    assert out[0].split()[:2] == ["UID", "PID"]  # ps -ef's header
    rows = {int(line.split()[1]) for line in out[1:]}
    assert rows == set(pids)
    out = runtime("ps", cid, "-o", "pid,comm").stdout.splitlines()
    assert out[0].split() == ["PID", "COMMAND"]
    assert {int(line.split()[0]) for line in out[1:]} == set(pids)
    assert {line.split()[1] for line in out[1:]} == {"sh", "sleep"}
    assert_failed(runtime("ps", "--format", "yaml", cid, check=False), "invalid format option")
    stop_and_delete(runtime, cid)


# ================================================================ events

def test_events_stats(runtime, bundle):
    cid = start(runtime, bundle, "sleep 1000 & wait",
                resources={"memory": {"limit": 128 * MiB}, "pids": {"limit": 40}})
    wait_procs(cid, 2)
    out = runtime("events", "--stats", cid).stdout
    assert len(out.strip().splitlines()) == 1
    ev = json.loads(out)
    assert ev["type"] == "stats" and ev["id"] == cid
    data = ev["data"]
    assert {"cpu", "memory", "pids", "blkio", "hugetlb"} <= set(data)
    assert data["cpu"]["usage"]["total"] > 0
    assert len(data["cpu"]["usage"]["percpu"]) == os.cpu_count()
    assert data["memory"]["usage"]["limit"] == 128 * MiB
    assert data["memory"]["usage"]["usage"] > 0
    assert isinstance(data["memory"]["raw"], dict) and "rss" in data["memory"]["raw"]
    assert data["pids"] == {"current": 2, "limit": 40}
    # the interval is parsed even with --stats
    assert runtime("events", "--stats", "--interval", "500ms", cid).returncode == 0
    assert_failed(runtime("events", "--interval", "0s", cid, check=False),
                  "duration interval must be greater than 0")
    stop_and_delete(runtime, cid)
    cid = start(runtime, bundle, "true")
    runtime.wait_stopped(cid)
    assert_failed(runtime("events", "--stats", cid, check=False), "is not running")
    runtime("delete", cid)


def test_events_stream_reports_an_oom_kill(runtime, bundle):
    mem = {"limit": 24 * MiB}
    if has_memsw():
        mem["swap"] = 24 * MiB  # no swap to escape into
    hog = "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done"
    script = f"while [ ! -e /go ]; do sleep 0.05; done; sh -c '{hog}'; echo $? > /rc; sleep 1000"
    cid = start(runtime, bundle, script, resources={"memory": mem})
    proc = subprocess.Popen(runtime.cmd("events", "--interval", "300ms", cid),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = Lines(proc)
    try:
        first = lines.until(lambda e: e["type"] == "stats", timeout=10)[-1]
        assert first["id"] == cid and "memory" in first["data"]
        (bundle.rootfs / "go").write_text("")
        lines.until(lambda e: e["type"] == "oom", timeout=20)
        assert wait_file(bundle.rootfs / "rc", timeout=10).strip() == "137"  # SIGKILLed
        kv = dict(line.split() for line in cgread("memory", cid, "memory.oom_control")
                  .splitlines())
        assert int(kv["oom_kill"]) >= 1
        assert status(runtime, cid) == "running"  # only the hog died
        # the stream goes on with stats after the OOM
        lines.until(lambda e: e["type"] == "stats", timeout=10)
        # ... and ends once the container is gone (runc: once its cgroup is removed)
        stop_and_delete(runtime, cid)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.skipif(not is_pyruntime(), reason="runc streams until the cgroup is removed")
def test_events_stream_ends_when_the_container_stops(runtime, bundle):
    cid = start(runtime, bundle, "while [ ! -e /stop ]; do sleep 0.05; done")
    proc = subprocess.Popen(runtime.cmd("events", "--interval", "200ms", cid),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(proc)
        lines.until(lambda e: e["type"] == "stats", timeout=10)
        (bundle.rootfs / "stop").write_text("")
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    runtime.wait_stopped(cid)
    runtime("delete", cid)


# ================================================================ parsers (no container)

@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own parsers")
def test_parsers():
    from pyruntime.cgroups.ops import parse_duration, ram_in_bytes
    assert ram_in_bytes("500M") == 500 * MiB
    assert ram_in_bytes("1g") == 1 << 30
    assert ram_in_bytes("2 kb") == 2048
    assert ram_in_bytes("7") == 7
    for bad in ("1x", "", "-5M", "M", "1.2.3.4x"):
        with pytest.raises(ValueError):
            ram_in_bytes(bad)
    assert parse_duration("5s") == 5
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1m30s") == 90
    assert parse_duration("1.5h") == 5400
    assert parse_duration("2") == 2
    assert parse_duration("-1s") == -1
    for bad in ("", "5x", "s", "1s2"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# ================================================================ an existing cgroup, v1 limits

def test_unified_resources_on_a_v1_host_are_refused(runtime, bundle):
    # this module runs on v1 (or hybrid) hierarchies only: runc refuses unified there
    cid = prepare(runtime, bundle, "true", resources={"unified": {"memory.min": "131072"}})
    proc = runtime("create", "--bundle", bundle.path, cid, check=False, stdin=subprocess.DEVNULL)
    assert_failed(proc, "invalid configuration")
    assert "linux.resources.unified" in proc.stderr or not is_pyruntime()
    assert not (runtime.root / cid).exists() and not cgdir("memory", cid).exists()


def test_a_pre_existing_frozen_cgroup_is_refused(runtime, bundle):
    """The init would freeze mid-setup: refused with runc's words, and the cgroup we did
    not make is left as it was."""
    cid = prepare(runtime, bundle, "true")
    frozen = cgdir("freezer", cid)
    frozen.mkdir(parents=True)
    try:
        (frozen / "freezer.state").write_text("FROZEN")
        proc = runtime("create", "--bundle", bundle.path, cid, check=False,
                       stdin=subprocess.DEVNULL, timeout=20)
        assert proc.returncode == 1
        assert_failed(proc, "container's cgroup unexpectedly frozen")
        assert not (runtime.root / cid).exists()
        assert (frozen / "freezer.state").read_text().strip() == "FROZEN"
        assert (frozen / "cgroup.procs").read_text() == ""
    finally:
        (frozen / "freezer.state").write_text("THAWED")
        frozen.rmdir()
        for ctrl in ("memory", "pids", "cpu", "devices", "blkio"):
            if cgdir(ctrl, cid).exists():
                cgdir(ctrl, cid).rmdir()


def test_a_shared_non_empty_cgroup_gets_a_warning(runtime, bundle, tmp_path):
    first = start(runtime, bundle, "sleep 30")
    second = runtime.new_id()  # the same cgroupsPath as the first
    with open(tmp_path / "err", "w+") as err:  # the init holds create's stderr: not a pipe
        runtime("create", "--bundle", bundle.path, second, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err, capture_output=False)
    assert "container's cgroup is not empty: 1 process(es) found" in (tmp_path / "err").read_text()
    assert runtime.state(second)["status"] == "created"
    runtime("delete", "--force", second)
    stop_and_delete(runtime, first)


def test_update_leaves_no_window_without_device_access(runtime, bundle):
    """runc's "minimal transition rules": an update must not pass through a state where the
    container's allowed devices are denied (writes to /dev/null failing for a moment)."""
    bundle.config["linux"]["resources"]["devices"].append(
        {"allow": False, "type": "c", "major": 1, "minor": 11, "access": "rw"})
    bundle.config["linux"]["devices"] = [{"path": "/dev/kmsg", "type": "c", "major": 1,
                                          "minor": 11}]
    cid = start(runtime, bundle, "while :; do echo x > /dev/null || echo null-denied >> /log; "
                                 "head -c 1 /dev/kmsg >> /log 2>/dev/null; done")
    for _ in range(30):
        runtime("update", "--pids-limit", "30", cid)
    stop_and_delete(runtime, cid)
    assert (bundle.rootfs / "log").read_text() == ""
