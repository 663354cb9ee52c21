"""linux.resources into cgroup v1 files, v2 files and systemd unit properties, without root:
the real cgroupfs Manager writes into a fake cgroup (fakes_cgroups.py), and the systemd
driver's property conversion is a pure function."""
from __future__ import annotations

import pytest

from .fakes_cgroups import FakeCgroup
from pyruntime.cgroups.systemd.properties import USEC_INFINITY, resource_properties
from pyruntime.errors import RuntimeFailure

MiB = 1 << 20

RESOURCES = {
    "memory": {"limit": 256 * MiB, "swap": 512 * MiB, "reservation": 128 * MiB},
    "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
    "pids": {"limit": 100},
    "blockIO": {"weight": 500,
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": MiB}]},
    "hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 30}],
    "devices": [{"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": True, "type": "b", "major": 8, "access": "r"}],
}


@pytest.fixture
def v2(tmp_path, monkeypatch):
    return FakeCgroup(tmp_path, "v2", monkeypatch)


@pytest.fixture
def v1(tmp_path, monkeypatch):
    return FakeCgroup(tmp_path, "v1", monkeypatch)


def props(resources, unified=True, version=250, update=False) -> dict:
    return {name: value for name, (_sig, value) in
            resource_properties(resources, unified=unified, version=lambda: version,
                                update=update)}


# ---------------------------------------------------------------- cgroup v2

def test_v2_files(v2):
    v2.manager.apply(RESOURCES)
    w = v2.written("")
    assert w["cpu.weight"] == "39"  # shares 1024 on runc's linear map to [1, 10000]
    assert w["cpu.max"] == "50000 100000"
    assert w["memory.max"] == str(256 * MiB)
    assert w["memory.swap.max"] == str(256 * MiB)  # OCI swap is memory+swap; v2's is swap alone
    assert w["memory.low"] == str(128 * MiB)
    assert (w["cpuset.cpus"], w["cpuset.mems"]) == ("0-1", "0")
    assert w["pids.max"] == "100"
    assert w["io.weight"] == "4950"  # blkio.weight 500 on [10, 1000] -> io.weight on [1, 10000]
    assert w["io.max"] == f"8:0 rbps={MiB}"
    assert w["hugetlb.2MB.max"] == str(1 << 30)
    assert v2.files("")["memory.max"] == str(256 * MiB)


def test_v2_devices_become_a_bpf_program(v2):
    v2.manager.apply({"devices": RESOURCES["devices"]})
    assert [r.v1() for r in v2.bpf_rules] == ["a *:* rwm", "c 1:3 rwm", "b 8:* r"]
    prog = v2.manager.extra["devices_bpf"]["program"]
    assert prog and len(prog) % 8 == 0  # whole BPF instructions
    assert not any(name.startswith("devices.") for _, name, _ in v2.writes)


def test_v2_unlimited_memory_means_unlimited_swap(v2):
    v2.manager.apply({"memory": {"limit": -1}, "pids": {"limit": -1}})
    w = v2.written("")
    assert (w["memory.max"], w["memory.swap.max"], w["pids.max"]) == ("max", "max", "max")


def test_v2_swap_below_memory_is_refused(v2):
    with pytest.raises(RuntimeFailure, match=r"linux\.resources\.memory\.swap: memory\+swap "
                                             r"limit \(1\) should be >= memory limit"):
        v2.manager.apply({"memory": {"limit": 2, "swap": 1}})


def test_v2_update_zero_leaves_the_value(v2):
    v2.manager.apply({"cpu": {"shares": 0, "quota": 20000, "period": 0}}, update=True)
    assert v2.writes == [("", "cpu.max", "20000 100000")]  # the period in force is kept


# ---------------------------------------------------------------- cgroup v1

def test_v1_files(v1):
    v1.manager.apply(RESOURCES)
    assert v1.written("cpu") == {"cpu.shares": "1024", "cpu.cfs_period_us": "100000",
                                 "cpu.cfs_quota_us": "50000"}
    mem = [(name, value) for key, name, value in v1.writes if key == "memory"]
    # Lowering both from unlimited: memory first, so memsw >= memory holds at every step.
    assert mem == [("memory.limit_in_bytes", str(256 * MiB)),
                   ("memory.memsw.limit_in_bytes", str(512 * MiB)),
                   ("memory.soft_limit_in_bytes", str(128 * MiB))]
    assert v1.written("cpuset") == {"cpuset.cpus": "0-1", "cpuset.mems": "0"}
    assert v1.written("pids") == {"pids.max": "100"}
    assert v1.written("blkio") == {"blkio.weight": "500",
                                   "blkio.throttle.read_bps_device": f"8:0 {MiB}"}
    assert v1.written("hugetlb") == {"hugetlb.2MB.limit_in_bytes": str(1 << 30)}
    assert [(n, v) for k, n, v in v1.writes if k == "devices"] == [
        ("devices.deny", "a *:* rwm"), ("devices.allow", "c 1:3 rwm"),
        ("devices.allow", "b 8:* r")]


def test_v1_raising_both_sets_memsw_first(v1):
    v1.manager.apply({"memory": {"limit": 256 * MiB, "swap": 512 * MiB}})
    v1.writes.clear()
    v1.manager.apply({"memory": {"limit": 1024 * MiB, "swap": 2048 * MiB}})
    assert [n for _, n, _ in v1.writes] == ["memory.memsw.limit_in_bytes",
                                            "memory.limit_in_bytes"]


def test_v1_shares_the_kernel_clamps_are_reported(v1, monkeypatch):
    from pyruntime.cgroups import v1 as v1mod
    monkeypatch.setattr(v1mod, "read_int", lambda d, name, default=0: 262144)
    with pytest.raises(RuntimeFailure, match="maximum allowed cpu-shares is 262144"):
        v1.manager.apply({"cpu": {"shares": 500000}})


def test_unknown_hugepage_size_is_refused(v2):
    with pytest.raises(RuntimeFailure, match=r"hugepageLimits\[0\]\.pageSize: '3MB' is not a "
                                             "huge page size of this host"):
        v2.manager.apply({"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]})


# ---------------------------------------------------------------- systemd properties

def test_systemd_properties_unified(v2):
    p = props(RESOURCES)
    v2.manager.apply(RESOURCES)
    w = v2.written("")
    # the unit and the cgroup files agree
    assert str(p["CPUWeight"]) == w["cpu.weight"]
    assert str(p["MemorySwapMax"]) == w["memory.swap.max"]
    assert (p["MemoryMax"], p["MemoryLow"]) == (256 * MiB, 128 * MiB)
    assert p["TasksMax"] == 100
    assert p["CPUQuotaPerSecUSec"] == 500000
    assert p["CPUQuotaPeriodUSec"] == 100000
    assert (p["AllowedCPUs"], p["AllowedMemoryNodes"]) == (b"\x03", b"\x01")
    assert p["DevicePolicy"] == "strict"
    assert p["DeviceAllow"] == [("/dev/char/1:3", "rwm"), ("block-8", "r")]


def test_systemd_properties_v1():
    p = props(RESOURCES, unified=False)
    assert (p["CPUShares"], p["MemoryLimit"], p["BlockIOWeight"]) == (1024, 256 * MiB, 500)
    assert "CPUWeight" not in p and "MemorySwapMax" not in p


def test_systemd_old_versions_get_no_newer_properties():
    p = props(RESOURCES, version=241)
    assert "CPUQuotaPeriodUSec" not in p and "AllowedCPUs" not in p


def test_systemd_unlimited_and_rounding():
    p = props({"memory": {"limit": -1}, "pids": {"limit": -1}, "cpu": {"quota": 33333}})
    assert p["MemoryMax"] == p["MemorySwapMax"] == p["TasksMax"] == USEC_INFINITY
    # systemd keeps whole percents: rounded up so that the cgroup's own quota fits
    assert p["CPUQuotaPerSecUSec"] == 340000


def test_systemd_devices_allow_all_and_deny_by_exception():
    allow_all = [{"allow": True, "access": "rwm"}]
    assert props({"devices": allow_all}) == {"DevicePolicy": "auto", "DeviceAllow": []}
    # systemd has no deny entries: a temporary deny-all, the cgroupfs code writes the rest
    deny_one = allow_all + [{"allow": False, "type": "c", "major": 1, "minor": 3}]
    assert props({"devices": deny_one}) == {"DevicePolicy": "strict", "DeviceAllow": []}
    # an update leaves the device policy alone
    assert "DevicePolicy" not in props({"devices": allow_all}, update=True)


def test_systemd_unified_keys():
    p = props({"unified": {"memory.high": "1048576", "pids.max": "max", "cpu.weight": "50",
                           "cpu.max": "20000 100000", "io.max": "ignored"}})
    assert (p["MemoryHigh"], p["TasksMax"], p["CPUWeight"]) == (MiB, USEC_INFINITY, 50)
    assert p["CPUQuotaPerSecUSec"] == 200000


# ---------------------------------------------------------------- the drivers' import graph

def _imports(path) -> set[str]:
    """Every pyruntime module a file imports, at the top or inside a function."""
    import ast
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("pyruntime.")}


def test_cgroup_drivers_do_not_import_each_other():
    from pathlib import Path

    import pyruntime.cgroups
    pkg = Path(pyruntime.cgroups.__file__).parent
    assert not {m for m in _imports(pkg / "cgroupfs.py") if m.startswith("pyruntime.cgroups.systemd")}
    for f in (pkg / "systemd").glob("*.py"):
        # systemd's manager subclasses the cgroupfs one; nothing of systemd/ picks a driver
        assert not _imports(f) & {"pyruntime.cgroups.manager",
                                  "pyruntime.cgroups.manager_from_state"}, f


def test_a_parent_removed_by_a_racing_delete_is_made_again(tmp_path, monkeypatch):
    """Another container's delete removes the shared parent it made (then empty) between our
    check and our mkdir of the leaf: the create makes the parent again instead of failing."""
    from pyruntime.cgroups import cgroupfs
    parent, leaf = tmp_path / "pyrt-test", tmp_path / "pyrt-test" / "t-1"
    parent.mkdir()
    real_mkdir, raced = cgroupfs.os.mkdir, []

    def mkdir(p, mode=0o777):
        if p == str(leaf) and not raced:
            raced.append(p)
            parent.rmdir()  # the sibling's delete wins the race once
        return real_mkdir(p, mode)

    monkeypatch.setattr(cgroupfs.os, "mkdir", mkdir)
    created: list[str] = []
    assert cgroupfs._makedirs(str(leaf), created) == [str(parent), str(leaf)]
    assert raced and leaf.is_dir() and created == [str(parent), str(leaf)]


def test_a_cgroup_dir_that_cannot_be_made_is_named(tmp_path):
    from pyruntime.cgroups import cgroupfs
    (tmp_path / "file").write_text("")
    with pytest.raises(RuntimeFailure, match=r"cannot create .*file/t-1: Not a directory"):
        cgroupfs._makedirs(str(tmp_path / "file" / "t-1"), [])
