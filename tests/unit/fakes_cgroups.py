"""A fake cgroup for tests without root: the real cgroupfs Manager, pointed at plain files.

The cgroup code only opens files that exist (O_WRONLY, no O_CREAT), so a tmp dir seeded with
the files a real cgroup has stands in for one. Every write goes through `common.write`; the
fake wraps it to record (controller, file, value) in order, and still writes the file so
that read-backs (v1 cpu.shares, the limit in force) see what the code wrote. v2's device
filter is a BPF program attached to the cgroup: the fake records the program instead.
"""
from __future__ import annotations

import os
from pathlib import Path

from pyruntime.cgroups import bpf, cgroupfs, common, devices, placement, v1, v2

HUGEPAGE_SIZES = ["2MB", "1GB"]

V1_FILES = {
    "memory": {"memory.limit_in_bytes": "9223372036854771712", "memory.usage_in_bytes": "0",
               "memory.max_usage_in_bytes": "0", "memory.memsw.limit_in_bytes": "9223372036854771712",
               "memory.soft_limit_in_bytes": "9223372036854771712", "memory.swappiness": "60",
               "memory.kmem.tcp.limit_in_bytes": "9223372036854771712", "memory.oom_control": "0"},
    "cpu": {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "pids": {"pids.max": "max"},
    "blkio": {"blkio.weight": "500", "blkio.leaf_weight": "500", "blkio.weight_device": "",
              "blkio.leaf_weight_device": "", "blkio.throttle.read_bps_device": "",
              "blkio.throttle.write_bps_device": "", "blkio.throttle.read_iops_device": "",
              "blkio.throttle.write_iops_device": ""},
    "hugetlb": {f"hugetlb.{s}.limit_in_bytes": "-1" for s in HUGEPAGE_SIZES},
    "devices": {"devices.allow": "", "devices.deny": ""},
}

V2_FILES = {
    "cgroup.controllers": "cpuset cpu io memory hugetlb pids", "cgroup.procs": "",
    "memory.max": "max", "memory.low": "0", "memory.swap.max": "max", "memory.current": "0",
    "cpu.weight": "100", "cpu.max": "max 100000", "cpuset.cpus": "", "cpuset.mems": "",
    "pids.max": "max", "io.weight": "default 100", "io.max": "",
    **{f"hugetlb.{s}.max": "max" for s in HUGEPAGE_SIZES},
}


class FakeCgroup:
    """One container's cgroup on a v1 or v2 host, as files under `root`.

    fake = FakeCgroup(tmp_path, "v2", monkeypatch); fake.manager.apply(resources)
    fake.writes -> [("", "memory.max", "1048576"), ...]; fake.files("") -> {name: content}
    """

    def __init__(self, root: Path, mode: str, monkeypatch):
        self.mode = mode
        self.writes: list[tuple[str, str, str]] = []
        self.bpf_rules: list = []
        self.dirs: dict[str, str] = {}
        layout = {"": V2_FILES} if mode == "v2" else V1_FILES
        for key, files in layout.items():
            d = root / (key or "unified") / "ctr"
            d.mkdir(parents=True)
            for name, content in files.items():
                (d / name).write_text(content)
            (d / "cgroup.procs").touch()
            if key:
                (d / "tasks").touch()
            self.dirs[key] = str(d)
        self._key = {d: k for k, d in self.dirs.items()}
        real_write = common.write

        def write(dirpath, name, value, field):
            self.writes.append((self._key.get(dirpath, dirpath), name, str(value)))
            real_write(dirpath, name, value, field)

        for module in (common, v1, v2, devices, cgroupfs, placement):
            monkeypatch.setattr(module, "write", write)
        monkeypatch.setattr(cgroupfs, "hugepage_sizes", lambda: list(HUGEPAGE_SIZES))
        # The v2 device filter: what would be attached, not a program loaded into the kernel.
        monkeypatch.setattr(bpf, "attached_ids", lambda d: [])
        monkeypatch.setattr(bpf, "attach_device_rules", self._attach)
        self.manager = cgroupfs.Manager(self.dirs, mode, str(root / "unified") if mode == "v2"
                                        else None)

    def _attach(self, cgroup_dir, rules):
        self.bpf_rules = list(rules)
        return {"program": bpf.program(rules)}

    def written(self, key: str = "") -> dict[str, str]:
        """The last value written to each file of one controller's dir ("" = cgroup2)."""
        return {name: value for k, name, value in self.writes if k == key}

    def files(self, key: str = "") -> dict[str, str]:
        d = self.dirs[key]
        return {n: Path(d, n).read_text() for n in sorted(os.listdir(d))}
