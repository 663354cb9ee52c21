"""The cgroupfs driver: one container's cgroup in every hierarchy of the host. Its Manager is
also the base of the systemd driver's (systemd/manager.py); cgroups/__init__.py picks between them.

One class serves v1, hybrid and v2 hosts. Each controller is driven where the host has it:
its own v1 hierarchy if mounted, else the cgroup2 hierarchy (in hybrid mode that is how
controllers no v1 hierarchy took, e.g. hugetlb, get used).
"""
from __future__ import annotations

import errno
import os
import time

from pyruntime.errors import RuntimeFailure

from pyruntime.cgroups import devices as _devices
from pyruntime.cgroups import v1, v2
from pyruntime.cgroups.placement import Placement, add
from pyruntime.cgroups.common import Fields, Layout, clean_path, default_layout, hugepage_sizes, read_or, write  # noqa: F401 (tests/unit/fakes_cgroups.py replaces it)

# v1 controller name -> its cgroup v2 name
_V2_NAME = {"blkio": "io"}


class Manager:
    def __init__(self, dirs: dict[str, str], mode: str, unified_mount: str | None,
                 created: list[str] | None = None, extra: dict | None = None):
        self.dirs = dict(dirs)          # controller (v1 name) or "" (cgroup2) -> absolute dir
        self.mode = mode
        self.unified_mount = unified_mount
        self.created = list(created or [])   # dirs we made (only these are removed)
        self.extra = dict(extra or {})       # e.g. the attached device BPF program
        self.undelegated: dict[str, str] = {}  # rootless: controller -> the dir we may not write
        self._v2ctl: set[str] | None = None
        self.self_move = True  # False: the parent moves a new child (placement.py)

    # ------------------------------------------------------------ paths

    @property
    def paths(self) -> dict[str, str]:
        return dict(self.dirs)

    def _unique_dirs(self) -> list[str]:
        seen = []
        for d in self.dirs.values():
            if d not in seen:
                seen.append(d)
        return seen

    def v2_controllers(self) -> set[str]:
        if self._v2ctl is None:
            self._v2ctl = v2.controllers(self.dirs[""]) if "" in self.dirs else set()
        return self._v2ctl

    def where(self, ctrl: str):
        """(1, dir) if `ctrl` has a v1 hierarchy, (2, dir) if cgroup2 has it, else None."""
        if ctrl in self.dirs and ctrl != "":
            return 1, self.dirs[ctrl]
        if "" in self.dirs and _V2_NAME.get(ctrl, ctrl) in self.v2_controllers():
            return 2, self.dirs[""]
        return None

    def _need(self, ctrl: str, field: str):
        w = self.where(ctrl)
        if w is None and self.undelegated:
            from pyruntime.cgroups.common import delegation_hint
            blocker = self.undelegated.get(ctrl) or self.undelegated.get("") or \
                next(iter(self.undelegated.values()))
            raise RuntimeFailure(delegation_hint(field, blocker))
        if w is None:
            name = _V2_NAME.get(ctrl, ctrl) if self.mode == "v2" else ctrl
            raise RuntimeFailure(f"{field}: the {name} cgroup controller is not available on "
                                 "this host")
        return w

    # ------------------------------------------------------------ lifecycle

    def planned(self) -> list[str]:
        """The dirs create() would make, parents first: the state records them before they
        exist, so a create killed at any instant leaves `delete` the list of what to remove."""
        out: list[str] = []
        for d in self._unique_dirs():
            missing = []
            while not os.path.isdir(d):
                missing.append(d)
                d = os.path.dirname(d)
            out += [m for m in reversed(missing) if m not in out]
        return out

    def create(self) -> None:
        for d in self._unique_dirs():
            new = _makedirs(d, self.created)
            if new and d == self.dirs.get("cpuset"):
                for nd in new:
                    v1.init_cpuset(nd)
        if "" in self.dirs and self.unified_mount:
            from pyruntime.cgroups import delegation  # enabled only while a container of ours needs them
            delegation.acquire(self.unified_mount, self.dirs[""])
        self._v2ctl = None

    def add_pid(self, pid: int) -> None:
        for d in self._unique_dirs():
            add(d, "cgroup.procs", pid, f"pid {pid}", cgroup2=d == self.dirs.get(""))

    def placement(self) -> Placement:
        """How a new child gets in (placement.py): it moves itself, unless the caller is not
        root (rootless: a delegation may not extend to v1's `tasks`; cgroup.procs is what
        rootless.restrict checked)."""
        return Placement(self.dirs, self_move=self.self_move and os.geteuid() == 0,
                         move=self.add_pid)

    def destroy(self) -> None:
        # (an attached device filter goes away with its cgroup: no need to detach it)
        left = []
        leaves = set(self.dirs.values())
        for top in sorted(self.created, key=lambda p: p.count("/"), reverse=True):
            if top not in leaves:
                # A parent we made: another container may have its cgroup in it by now.
                try:
                    os.rmdir(top)
                except OSError:
                    pass
                continue
            # Sub-cgroups the container made inside ours go too, deepest first.
            if os.path.isdir(top):
                subs = [dp for dp, _, _ in os.walk(top, topdown=False)]
            else:
                subs = []
            for d in subs:
                if not _rmdir(d):
                    left.append(d)
        if left:
            raise RuntimeFailure(f"cgroups: unable to remove {', '.join(left)}: still in use")
        self.created = []
        if "" in self.dirs and self.unified_mount:
            from pyruntime.cgroups import delegation
            delegation.release(self.dirs[""])

    # ------------------------------------------------------------ processes

    def _procs_dir(self) -> str:
        for key in ("", "freezer", "pids", "memory", "cpu", "devices"):
            if key in self.dirs and (key != "" or self.mode == "v2"):
                return self.dirs[key]
        return self._unique_dirs()[0]

    def pids(self) -> list[int]:
        from pyruntime.cgroups.common import walk_procs
        d = self._procs_dir()
        return sorted(set(walk_procs(d))) if os.path.isdir(d) else []

    def freeze(self) -> None:
        kind, d = self._freezer()
        (v1 if kind == 1 else v2).freeze(d)

    def thaw(self) -> None:
        kind, d = self._freezer()
        (v1 if kind == 1 else v2).thaw(d)

    def state(self) -> str:
        kind, d = self._freezer()
        return (v1 if kind == 1 else v2).freezer_state(d)

    def _freezer(self):
        if "freezer" in self.dirs:
            return 1, self.dirs["freezer"]
        if "" in self.dirs and os.path.exists(os.path.join(self.dirs[""], "cgroup.freeze")):
            return 2, self.dirs[""]
        raise RuntimeFailure("cgroups: this host has no freezer (no v1 freezer hierarchy, no "
                             "cgroup.freeze)")

    def oom_kill_count(self) -> int:
        w = self.where("memory")
        if w is None:
            return 0
        return (v1 if w[0] == 1 else v2).oom_kill_count(w[1])

    # ------------------------------------------------------------ resources

    def apply(self, resources: dict | None, update: bool = False) -> None:
        """Apply linux.resources (the raw OCI dict). update=True: 0 means "leave as is"."""
        if not resources:
            return
        r = Fields(resources, "linux.resources", update)
        mem = r.sub("memory")
        if mem:
            if _has_any(mem, ("limit", "swap", "reservation", "kernelTCP", "swappiness")) or \
                    mem.obj.get("disableOOMKiller") is True:
                kind, d = self._need("memory", "linux.resources.memory")
                (v1 if kind == 1 else v2).set_memory(d, mem)
        cpu = r.sub("cpu")
        if cpu:
            if _has_any(cpu, ("shares", "quota", "period", "burst", "realtimeRuntime",
                              "realtimePeriod", "idle")):
                kind, d = self._need("cpu", "linux.resources.cpu")
                (v1 if kind == 1 else v2).set_cpu(d, cpu)
            if cpu.str("cpus") is not None or cpu.str("mems") is not None:
                kind, d = self._need("cpuset", "linux.resources.cpu.cpus")
                v1.set_cpuset(d, cpu)  # same file names on v1 and v2
        pids = r.sub("pids")
        if pids and pids.int("limit") is not None:
            kind, d = self._need("pids", "linux.resources.pids.limit")
            (v1 if kind == 1 else v2).set_pids(d, pids)
        bio = r.sub("blockIO")
        if bio and any(v not in (None, [], 0) for v in bio.obj.values()):
            kind, d = self._need("blkio", "linux.resources.blockIO")
            (v1.set_blkio if kind == 1 else v2.set_io)(d, bio)
        huge = r.list("hugepageLimits")
        if huge:
            kind, d = self._need("hugetlb", "linux.resources.hugepageLimits")
            v1.set_hugetlb(d, huge, hugepage_sizes(), "linux.resources.hugepageLimits",
                           v2=kind == 2)
        net = r.sub("network")
        if net and self.mode != "v2":  # cgroup v2 has no net_cls/net_prio: runc ignores them
            if net.int("classID") is not None:
                kind, d = self._need("net_cls", "linux.resources.network.classID")
                v1.set_net_cls(d, net)
            if net.list("priorities"):
                kind, d = self._need("net_prio", "linux.resources.network.priorities")
                v1.set_net_prio(d, net)
        if resources.get("rdma"):
            kind, d = self._need("rdma", "linux.resources.rdma")
            v1.set_rdma(d, resources["rdma"], "linux.resources.rdma")
        if "devices" in resources and resources["devices"] is not None:
            rules = _devices.parse(resources["devices"])
            if rules:
                self._apply_devices(rules)
        if resources.get("unified"):
            if self.mode != "v2":
                # runc refuses it on hybrid hosts too: the keys name v2 files, and a v1
                # controller would silently not get them
                raise RuntimeFailure("linux.resources.unified: invalid configuration: it needs "
                                     "a cgroup v2 host, this one is cgroup v1 (or hybrid)")
            v2.set_unified(self.dirs[""], resources["unified"], "linux.resources.unified",
                           self.v2_controllers())

    def _apply_devices(self, rules) -> None:
        if "devices" in self.dirs:
            _devices.apply_v1(self.dirs["devices"], rules)
            return
        # No v1 devices hierarchy: cgroup2's device filter, also on a hybrid host (a BPF program
        # attached to the container's cgroup2 dir works whatever holds the other controllers).
        if "" not in self.dirs:
            raise RuntimeFailure("linux.resources.devices: the devices cgroup controller is not "
                                 "available on this host")
        from pyruntime.cgroups import bpf  # only v2 hosts pay for ctypes
        d = self.dirs[""]
        try:
            old = bpf.attached_ids(d)
        except OSError:
            old = []
        # The new filter goes on first: while both are attached the kernel needs both to allow.
        self.extra["devices_bpf"] = bpf.attach_device_rules(d, rules)
        for prog_id in old:
            bpf.detach(d, {"prog_id": prog_id})

    # ------------------------------------------------------------ stats

    def stats(self) -> dict:
        st = _empty_stats()
        sizes = hugepage_sizes()
        cpu, acct = self.where("cpu"), self.where("cpuacct")
        if cpu and cpu[0] == 2:
            v2.stat_cpu(st, cpu[1])
        elif cpu or acct:
            v1.stat_cpu(st, cpu and cpu[1], acct and acct[1])
        elif "" in self.dirs:  # cpu.stat exists in every v2 cgroup
            v2.stat_cpu(st, self.dirs[""])
        for ctrl, f1, f2 in (("memory", v1.stat_memory, v2.stat_memory),
                             ("pids", v1.stat_pids, v2.stat_pids),
                             ("blkio", v1.stat_blkio, v2.stat_io)):
            w = self.where(ctrl)
            if w:
                (f1 if w[0] == 1 else f2)(st, w[1])
        w = self.where("hugetlb")
        if w:
            (v1.stat_hugetlb if w[0] == 1 else v2.stat_hugetlb)(st, w[1], sizes)
        w = self.where("cpuset")
        if w:
            _stat_cpuset(st, w[0], w[1])
        return _prune(st)

    # ------------------------------------------------------------ persistence

    def to_state(self) -> dict:
        return {"mode": self.mode, "dirs": self.dirs, "unified_mount": self.unified_mount,
                "created": self.created, "extra": self.extra}

    @classmethod
    def from_state(cls, d: dict) -> "Manager":
        return cls(d["dirs"], d["mode"], d.get("unified_mount"), d.get("created"),
                   d.get("extra"))


# ---------------------------------------------------------------- helpers

def _has_any(f: Fields, keys) -> bool:
    for k in keys:
        v = f.obj.get(k)
        if v is not None and not (f.update and v == 0):
            return True
    return False


def _makedirs(d: str, created: list[str]) -> list[str]:
    """mkdir -p, recording (in `created`, as we go) and returning the dirs we made.

    A parent that another container made can vanish under us: its delete removes the
    parents it made once they look empty, which ours does before our own dir is in it.
    Then we make it again (a few times: each round needs a delete racing us anew)."""
    new: list[str] = []
    for _ in range(8):
        missing = []
        p = d
        while not os.path.isdir(p):
            missing.append(p)
            p = os.path.dirname(p)
        try:
            for p in reversed(missing):
                try:
                    os.mkdir(p, 0o755)
                except FileExistsError:
                    continue
                created.append(p)
                new.append(p)
            return new
        except FileNotFoundError as e:  # a parent went: again
            err = e
        except OSError as e:
            err = e
            break
    raise RuntimeFailure(f"cgroups: cannot create {p}: {err.strerror}",
                         errno=err.errno) from None


def _rmdir(d: str) -> bool:
    delay = 0.001
    deadline = time.monotonic() + 2.0
    while True:
        try:
            os.rmdir(d)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _empty_stats() -> dict:
    def entry():
        return {"limit": 0, "usage": 0, "max": 0, "failcnt": 0}
    return {
        "cpu": {"usage": {"total": 0, "percpu": [], "percpu_kernel": [], "percpu_user": [],
                          "kernel": 0, "user": 0},
                "throttling": {"periods": 0, "throttledPeriods": 0, "throttledTime": 0}},
        "cpuset": {"cpu_exclusive": 0, "mem_hardwall": 0, "mem_exclusive": 0,
                   "memory_migrate": 0, "memory_spread_page": 0, "memory_spread_slab": 0,
                   "memory_pressure": 0, "sched_load_balance": 0, "sched_relax_domain_level": 0},
        "memory": {"cache": 0, "usage": entry(), "swap": entry(), "kernel": entry(),
                   "kernelTCP": entry(), "raw": {}},
        "pids": {"current": 0, "limit": 0},
        "blkio": {},
        "hugetlb": {},
        "intel_rdt": {},
        "network_interfaces": None,
    }


def _drop_zero(d: dict, keys) -> None:
    for k in keys:
        if k in d and not d[k]:
            del d[k]


def _prune(st: dict) -> dict:
    """Leave out what runc's JSON tags mark omitempty, so the output matches runc's."""
    _drop_zero(st["cpu"]["usage"], ("total", "percpu", "percpu_kernel", "percpu_user"))
    _drop_zero(st["cpu"]["throttling"], ("periods", "throttledPeriods", "throttledTime"))
    _drop_zero(st["cpuset"], ("cpus", "mems"))
    m = st["memory"]
    for k in ("usage", "swap", "kernel", "kernelTCP"):
        _drop_zero(m[k], ("usage", "max"))
    _drop_zero(m, ("cache", "raw"))
    _drop_zero(st["pids"], ("current", "limit"))
    for k in list(st["blkio"]):
        if not st["blkio"][k]:
            del st["blkio"][k]
        else:
            for e in st["blkio"][k]:
                _drop_zero(e, ("major", "minor", "op", "value"))
    for h in st["hugetlb"].values():
        _drop_zero(h, ("usage", "max"))
    return st


def _cpu_list(s: str) -> list[int]:
    out = []
    for part in s.strip().split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def _stat_cpuset(st: dict, kind: int, d: str) -> None:
    c = st["cpuset"]
    suffix = "" if kind == 1 else ".effective"
    c["cpus"] = _cpu_list(read_or(d, "cpuset.cpus" + suffix, "") or "")
    c["mems"] = _cpu_list(read_or(d, "cpuset.mems" + suffix, "") or "")
    if kind == 1:
        for k in ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate",
                  "memory_spread_page", "memory_spread_slab", "memory_pressure",
                  "sched_load_balance", "sched_relax_domain_level"):
            try:
                c[k] = int((read_or(d, "cpuset." + k, "0") or "0").strip())
            except ValueError:
                pass


def build(cgroups_path: str | None, container_id: str, layout: Layout | None = None) -> Manager:
    layout = layout or default_layout()
    inner = clean_path(cgroups_path) if cgroups_path else container_id
    if not inner or inner == ".":
        raise RuntimeFailure(f"linux.cgroupsPath: {cgroups_path!r} is not a cgroup path")
    dirs = {}
    if layout.mode != "v2":
        for key in layout.v1:
            dirs[key] = layout.hierarchy_dir(key, inner)
    if layout.unified:
        dirs[""] = layout.hierarchy_dir("", inner, v2_parent=layout.mode == "v2")
    return Manager(dirs, layout.mode, layout.unified[0] if layout.unified else None)
