"""linux.memoryPolicy (set_mempolicy in the init) and process.execCPUAffinity (for `exec`),
checked from inside real containers: /proc/self/numa_maps shows the task's memory policy on
mappings without one of their own, /proc/self/status the CPUs a process may run on."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import is_pyruntime
from corehelp import assert_failed, parse_status, run_sh

from pyruntime.linux import mempolicy
from pyruntime.errors import ConfigError


@pytest.mark.parametrize("policy,shown", [
    ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}, "bind=static:0"),
    ({"mode": "MPOL_INTERLEAVE", "nodes": "0"}, "interleave:0"),
    ({"mode": "MPOL_PREFERRED", "nodes": "0"}, "prefer:0"),
    ({"mode": "MPOL_LOCAL"}, "local"),
])
def test_memory_policy_from_inside(runtime, bundle, policy, shown):
    bundle.config["linux"]["memoryPolicy"] = policy
    first = run_sh(runtime, bundle, "head -n 1 /proc/self/numa_maps").split()
    assert first[1] == shown, first


def test_exec_gets_the_memory_policy(runtime, bundle):
    bundle.config["linux"]["memoryPolicy"] = {"mode": "MPOL_INTERLEAVE", "nodes": "0"}
    bundle.config["process"]["args"] = ["sleep", "300"]
    bundle.write()
    cid = runtime.create(bundle)
    runtime("start", cid)
    out = runtime("exec", cid, "head", "-n", "1", "/proc/self/numa_maps",
                  stdin=subprocess.DEVNULL).stdout
    assert out.split()[1] == "interleave:0"


def test_no_memory_policy_is_the_default(runtime, bundle):
    assert run_sh(runtime, bundle, "head -n 1 /proc/self/numa_maps").split()[1] == "default"


@pytest.mark.parametrize("policy,path,problem", [
    ({"mode": "MPOL_BIND"}, "linux.memoryPolicy.nodes", "must name at least one node"),
    ({"mode": "MPOL_LOCAL", "nodes": "0"}, "linux.memoryPolicy.nodes", "must be empty"),
    ({"mode": "MPOL_BINDD", "nodes": "0"}, "linux.memoryPolicy.mode", "is not a memory policy"),
    ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["X"]}, "linux.memoryPolicy.flags[0]",
     "is not a memory policy flag"),
    ({"mode": "MPOL_BIND", "nodes": "0-x"}, "linux.memoryPolicy.nodes", "is not a list"),
])
def test_memory_policy_mistakes(policy, path, problem):
    with pytest.raises(ConfigError) as e:
        mempolicy.parse(policy)
    assert e.value.path == path and problem in e.value.problem


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's error wording")
def test_memory_policy_on_a_missing_node_fails_cleanly(runtime, bundle):
    bundle.config["linux"]["memoryPolicy"] = {"mode": "MPOL_BIND", "nodes": "63"}
    bundle.config["process"]["args"] = ["true"]
    bundle.write()
    r = runtime.run(bundle, None, check=False)
    assert_failed(r, "linux.memoryPolicy: set_mempolicy: ")


def test_cpu_lists():
    assert mempolicy.parse_list("0-3, 7", "x") == {0, 1, 2, 3, 7}
    assert mempolicy.parse_list("", "x") == set()
    with pytest.raises(ConfigError):
        mempolicy.parse_list("3-1", "x")


# ---------------------------------------------------------------- execCPUAffinity

needs_two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")


@pytest.fixture
def sleeping(runtime, bundle):
    cid = runtime.new_id()
    bundle.config["process"]["args"] = ["sleep", "300"]
    bundle.config["process"]["execCPUAffinity"] = {"final": "1"}
    bundle.config["linux"]["cgroupsPath"] = f"/pyrt-test/{cid}"
    bundle.write()
    runtime.create(bundle, cid)
    runtime("start", cid)
    return cid


def _exec_cpus(runtime, cid, tmp_path, affinity) -> str:
    spec = {"args": ["cat", "/proc/self/status"], "cwd": "/", "env": ["PATH=/bin"]}
    if affinity is not None:
        spec["execCPUAffinity"] = affinity
    (tmp_path / "process.json").write_text(json.dumps(spec))
    out = runtime("exec", "--process", tmp_path / "process.json", cid,
                  stdin=subprocess.DEVNULL).stdout
    return parse_status(out)["Cpus_allowed_list"]


@needs_two_cpus
def test_exec_final_affinity(runtime, sleeping, tmp_path):
    everything = _exec_cpus(runtime, sleeping, tmp_path, None)
    assert _exec_cpus(runtime, sleeping, tmp_path, {"final": "1"}) == "1"
    assert _exec_cpus(runtime, sleeping, tmp_path, {"initial": "0", "final": "1"}) == "1"
    # initial alone: the kernel decides after the cgroup move, as the spec says
    assert _exec_cpus(runtime, sleeping, tmp_path, {"initial": "0"}) in (everything, "0")


@needs_two_cpus
def test_not_applied_to_the_init(runtime, sleeping):
    """config.md: "This setting is not applicable to the container's init process"."""
    pid = runtime.state(sleeping)["pid"]
    allowed = parse_status(open(f"/proc/{pid}/status").read())["Cpus_allowed_list"]
    assert allowed != "1"


@needs_two_cpus
def test_exec_without_process_uses_the_configs(runtime, sleeping):
    out = runtime("exec", sleeping, "cat", "/proc/self/status", stdin=subprocess.DEVNULL).stdout
    assert parse_status(out)["Cpus_allowed_list"] == "1"


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's error wording")
def test_exec_affinity_outside_the_machine_fails_cleanly(runtime, sleeping, tmp_path):
    spec = {"args": ["true"], "cwd": "/", "execCPUAffinity": {"final": "1000"}}
    (tmp_path / "process.json").write_text(json.dumps(spec))
    r = runtime("exec", "--process", tmp_path / "process.json", sleeping, check=False,
                stdin=subprocess.DEVNULL)
    assert_failed(r, "process.execCPUAffinity.final: ")
