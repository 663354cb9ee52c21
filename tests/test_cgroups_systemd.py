"""The systemd cgroup driver (`--systemd-cgroup`): the pure parts (unit names, slices, unit
properties), and the whole driver against a real systemd.

This host runs no systemd, so test_real_systemd boots one: /lib/systemd/systemd as PID 1 of a
container that pyruntime itself runs (the host's /usr, a copy of /etc, tmpfs /run /tmp /var, a
cgroup namespace, and either its own cgroup2 dir at /sys/fs/cgroup, so that systemd runs in
unified mode, or the runtime's v1 cgroup mount, hybrid mode), then runs
`pyruntime --systemd-cgroup` inside it through `pyruntime exec` and checks the units from both
sides: systemctl inside, the cgroup files from the host.
"""
from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import Bundle, default_config, is_pyruntime, runtime_binary
from pyruntime import cgroups
from pyruntime.cgroups import devices
from pyruntime.cgroups.systemd import dbus, names, properties as sdprops
from pyruntime.cgroups.systemd import manager as sdm
from pyruntime.cgroups.common import Layout
from pyruntime.errors import RuntimeFailure

REPO = Path(__file__).resolve().parent.parent
INF = (1 << 64) - 1


def props(plist) -> dict:
    return {name: value for name, (_sig, value) in plist}


# ---------------------------------------------------------------- names and slices

@pytest.mark.parametrize("slice_name, path", [
    ("system.slice", "/system.slice"),
    ("a-b.slice", "/a.slice/a-b.slice"),
    ("a-b-c.slice", "/a.slice/a-b.slice/a-b-c.slice"),
    ("-.slice", "/"),
])
def test_expand_slice(slice_name, path):
    assert names.expand_slice(slice_name) == path


@pytest.mark.parametrize("bad", [".slice", "a", "a.scope", "a--b.slice", "-a.slice", "a-.slice",
                                 "a/b.slice"])
def test_expand_slice_rejects(bad):
    with pytest.raises(ValueError, match="invalid slice name"):
        names.expand_slice(bad)


@pytest.mark.parametrize("path, want", [
    ("system.slice:docker:abc", ("system.slice", "docker-abc.scope")),
    (":docker:abc", ("system.slice", "docker-abc.scope")),       # empty slice: system.slice
    ("machine-x.slice:libpod:abc", ("machine-x.slice", "libpod-abc.scope")),
    ("user.slice:p:pod-1.slice", ("user.slice", "pod-1.slice")),   # a slice unit: no prefix
    ("::abc", ("system.slice", "-abc.scope")),                    # runc's rule for no prefix
    (None, ("system.slice", "pyruntime-cid.scope")),              # no cgroupsPath
    ("", ("system.slice", "pyruntime-cid.scope")),
])
def test_parse_cgroups_path(path, want):
    assert names.parse_cgroups_path(path, "cid") == want


@pytest.mark.parametrize("bad, why", [
    ("/a/b", "is not of the form slice:prefix:name"),
    ("a:b", "is not of the form slice:prefix:name"),
    ("a:b:c:d", "is not of the form slice:prefix:name"),
    ("system.slice:p:", "has an empty name"),
    ("system.slice:p:a/b", "names a path"),
    ("bad:p:n", "invalid slice name: bad"),
    ("a--b.slice:p:n", "invalid slice name"),
    ("system.slice:p:a--b.slice", "invalid slice name"),
])
def test_parse_cgroups_path_errors_name_the_field_and_value(bad, why):
    with pytest.raises(RuntimeFailure) as e:
        names.parse_cgroups_path(bad, "cid")
    assert str(e.value).startswith(f"linux.cgroupsPath: {bad!r} ")
    assert why in str(e.value)


def test_manager_rejects_a_malformed_path_before_reaching_systemd():
    with pytest.raises(RuntimeFailure, match=r"linux.cgroupsPath: '/a/b' is not of the form"):
        cgroups.manager("/a/b", "x", systemd=True)


def test_unit_cgroup():
    assert names.unit_cgroup("system.slice", "docker-abc.scope") == "/system.slice/docker-abc.scope"
    assert names.unit_cgroup("a-b.slice", "p-n.scope") == "/a.slice/a-b.slice/p-n.scope"
    assert names.unit_cgroup("-.slice", "p-n.scope") == "/p-n.scope"
    assert names.unit_cgroup("system.slice", "k-pod.slice") == "/k.slice/k-pod.slice"


def test_unit_dirs_follow_systemd_root_in_each_hierarchy():
    hybrid = Layout({"memory": ("/sys/fs/cgroup/memory", "/"),
                     "name=systemd": ("/sys/fs/cgroup/systemd", "/")},
                    ("/sys/fs/cgroup/unified", "/"), {})
    pid1 = {"memory": "/", "name=systemd": "/init.scope", "": "/init.scope"}
    assert names.unit_dirs(hybrid, "/system.slice/p-n.scope", pid1) == {
        "memory": "/sys/fs/cgroup/memory/system.slice/p-n.scope",
        "name=systemd": "/sys/fs/cgroup/systemd/system.slice/p-n.scope",
        "": "/sys/fs/cgroup/unified/system.slice/p-n.scope"}
    # systemd in a container: its root is a sub-cgroup of the host's, seen through a mount
    # that shows that sub-tree.
    v2 = Layout({}, ("/sys/fs/cgroup", "/ctr"), {})
    assert names.unit_dirs(v2, "/system.slice/p-n.scope", {"": "/ctr/init.scope"}) == {
        "": "/sys/fs/cgroup/system.slice/p-n.scope"}


def test_build_and_state_round_trip():
    v2 = Layout({}, ("/sys/fs/cgroup", "/"), {})
    m = sdm.build("a-b.slice:pfx:c1", "c1", v2)
    assert m.extra["systemd"]["unit"] == "pfx-c1.scope"
    assert m.extra["systemd"]["cgroup"] == "/a.slice/a-b.slice/pfx-c1.scope"
    assert m.paths[""].endswith("/a.slice/a-b.slice/pfx-c1.scope")
    back = cgroups.manager_from_state(json.loads(json.dumps(m.to_state())))
    assert isinstance(back, sdm.SystemdManager) and back.unit == "pfx-c1.scope"
    assert back.paths == m.paths
    # The commands that reach the manager through ops.py get the same class.
    from pyruntime.cgroups.ops import container_manager

    class C:
        id, state = "c1", type("S", (), {"cgroup": m.to_state()})
    assert isinstance(container_manager(C), sdm.SystemdManager)
    assert type(cgroups.manager("/x", "x", layout=v2)) is cgroups.Manager


# ---------------------------------------------------------------- properties

def test_base_properties_of_a_scope_and_a_slice():
    p = props(sdprops.base_properties("a.slice", "x-c.scope", "d", 42, unified=True))
    assert p["Slice"] == "a.slice" and p["Delegate"] is True and p["PIDs"] == [42]
    assert p["DefaultDependencies"] is False and p["Description"] == "d"
    assert p["IOAccounting"] and p["TasksAccounting"] and "BlockIOAccounting" not in p
    p = props(sdprops.base_properties("a.slice", "c.slice", "d", None, unified=False))
    assert p["Wants"] == ["a.slice"] and "Slice" not in p and "Delegate" not in p
    assert "PIDs" not in p and p["BlockIOAccounting"] is True


def test_resource_properties_v2():
    r = {"memory": {"limit": 1 << 30, "reservation": 1 << 20, "swap": 2 << 30},
         "cpu": {"shares": 1024, "quota": 25000, "period": 100000, "cpus": "0-2,5", "mems": "0"},
         "pids": {"limit": 64}}
    p = props(sdprops.resource_properties(r, unified=True, version=lambda: 252))
    assert p == {"MemoryMax": 1 << 30, "MemoryLow": 1 << 20, "MemorySwapMax": 1 << 30,
                 "CPUWeight": 39, "CPUQuotaPeriodUSec": 100000, "CPUQuotaPerSecUSec": 250000,
                 "TasksMax": 64, "AllowedCPUs": bytes([0b100111]), "AllowedMemoryNodes": b"\x01"}


def test_resource_properties_v1():
    r = {"memory": {"limit": 1 << 30}, "cpu": {"shares": 512}, "blockIO": {"weight": 300},
         "pids": {"limit": -1}}
    p = props(sdprops.resource_properties(r, unified=False, version=lambda: 252))
    assert p == {"MemoryLimit": 1 << 30, "CPUShares": 512, "BlockIOWeight": 300,
                 "TasksMax": INF}


def test_zero_is_unset_and_minus_one_is_infinity():
    r = {"memory": {"limit": 0, "swap": 0}, "cpu": {"shares": 0, "quota": 0, "period": 0},
         "pids": {"limit": 0}}
    assert sdprops.resource_properties(r, unified=True, version=lambda: 252) == []
    p = props(sdprops.resource_properties({"memory": {"limit": -1}, "cpu": {"quota": -1}},
                                     unified=True, version=lambda: 252))
    assert p == {"MemoryMax": INF, "MemorySwapMax": INF, "CPUQuotaPerSecUSec": INF}


def test_cpu_quota_is_rounded_up_to_a_whole_percent():
    p = props(sdprops.resource_properties({"cpu": {"quota": 12345}}, unified=True,
                                     version=lambda: 252))
    assert p == {"CPUQuotaPerSecUSec": 130000}  # 123450 us/s -> 13%


def test_old_systemd_gets_no_period_or_cpuset_properties():
    r = {"cpu": {"quota": 50000, "period": 50000, "cpus": "0"}}
    p = props(sdprops.resource_properties(r, unified=True, version=lambda: 239))
    assert p == {"CPUQuotaPerSecUSec": 1000000}


def test_version_is_asked_only_when_needed():
    def boom():
        raise AssertionError("version asked")
    sdprops.resource_properties({"memory": {"limit": 1 << 20}, "pids": {"limit": 5}},
                           unified=True, version=boom)


def test_update_mode_leaves_quota_alone_when_only_the_period_changes():
    p = props(sdprops.resource_properties({"cpu": {"period": 50000, "quota": 0}}, unified=True,
                                     version=lambda: 252, update=True))
    assert p == {"CPUQuotaPeriodUSec": 50000}


def test_unified_keys_systemd_knows():
    u = {"memory.high": "1048576", "memory.max": "max", "pids.max": "10", "cpu.weight": "50",
         "cpu.max": "20000 100000", "cpuset.cpus": "1", "io.weight": "default 10",
         "memory.low": "junk"}
    p = props(sdprops.resource_properties({"unified": u}, unified=True, version=lambda: 252))
    assert p == {"MemoryHigh": 1048576, "MemoryMax": INF, "TasksMax": 10, "CPUWeight": 50,
                 "CPUQuotaPeriodUSec": 100000, "CPUQuotaPerSecUSec": 200000,
                 "AllowedCPUs": b"\x02"}
    assert sdprops.resource_properties({"unified": u}, unified=False, version=lambda: 252) == []


def test_resource_values_are_checked_with_their_json_path():
    with pytest.raises(RuntimeFailure, match=r"linux.resources.pids.limit: 'x' is not an int"):
        sdprops.resource_properties({"pids": {"limit": "x"}}, unified=True)
    with pytest.raises(RuntimeFailure, match=r"linux.resources.cpu.cpus: '1-0'"):
        sdprops.resource_properties({"cpu": {"cpus": "1-0"}}, unified=True, version=lambda: 252)


def test_range_to_bits():
    assert sdprops.range_to_bits("0", "f") == b"\x01"
    assert sdprops.range_to_bits("0-7,9", "f") == b"\xff\x02"
    assert sdprops.range_to_bits(" 3 , 1-2 ", "f") == b"\x0e"
    for bad in ("", "a", "2-1", "-1"):
        with pytest.raises(RuntimeFailure, match="^f: "):
            sdprops.range_to_bits(bad, "f")


def dev(rules):
    return props(sdprops.device_properties(devices.parse(rules)))


def test_device_properties_allow_list():
    from pyruntime.lifecycle.container import with_default_devices
    rules = with_default_devices({"devices": [{"allow": False, "access": "rwm"}]})["devices"]
    p = dev(rules)
    assert p["DevicePolicy"] == "strict"
    allow = dict(p["DeviceAllow"])
    assert allow["char-*"] == "m" and allow["block-*"] == "m"
    assert allow["/dev/char/1:3"] == "rwm" and allow["char-136"] == "rwm"
    assert allow["/dev/char/10:200"] == "rwm"
    assert "/dev/char/5:1" not in allow  # runc allows no /dev/console by default
    redefined = with_default_devices({}, {"/dev/null"})["devices"]
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} not in redefined
    assert len(redefined) == len(rules) - 2


def test_device_properties_allow_all_and_blacklists():
    assert dev([{"allow": True, "access": "rwm"}]) == {"DevicePolicy": "auto", "DeviceAllow": []}
    # systemd has no deny entries: deny-by-exception becomes a temporary deny-all.
    assert dev([{"allow": True, "access": "rwm"},
                {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]) == \
        {"DevicePolicy": "strict", "DeviceAllow": []}
    assert dev([]) == {"DevicePolicy": "strict", "DeviceAllow": []}


def test_device_properties_denies_take_access_away():
    p = dev([{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
             {"allow": True, "type": "c", "major": 4, "access": "rw"},
             {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"},
             {"allow": False, "type": "c", "major": 4, "minor": 1, "access": "rw"},
             {"allow": True, "type": "b", "minor": 5, "access": "r"}])   # "*:5": no spelling
    assert p["DeviceAllow"] == [("/dev/char/1:3", "rm")]


# ---------------------------------------------------------------- without systemd

needs_no_systemd_here = pytest.mark.skipif(
    os.path.exists(dbus.SYSTEM_BUS) or os.path.exists(dbus.PRIVATE_SOCKET)
    or bool(os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")),
    reason="this host has a system bus or systemd")


@needs_no_systemd_here
@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's error wording")
def test_create_without_systemd_is_a_clear_error_and_leaves_nothing(runtime, bundle):
    bundle.config["linux"]["cgroupsPath"] = "system.slice:pyrt:nosd"
    bundle.write()
    proc = runtime.run(bundle, None, check=False, global_args=["--systemd-cgroup"])
    assert proc.returncode != 0
    assert "systemd cgroup driver: cannot reach systemd (no /run/dbus/system_bus_socket or " \
           "/run/systemd/private)" in proc.stderr
    assert runtime("list", "-q").stdout.strip() == ""


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's error wording")
def test_create_with_a_cgroupfs_path_is_an_error_naming_the_field(runtime, bundle):
    bundle.config["linux"]["cgroupsPath"] = "/pyrt/x"
    bundle.write()
    proc = runtime.run(bundle, None, check=False, global_args=["--systemd-cgroup"])
    assert proc.returncode != 0
    assert "linux.cgroupsPath: '/pyrt/x' is not of the form slice:prefix:name" in proc.stderr


# ---------------------------------------------------------------- a real systemd

SYSTEMD = "/lib/systemd/systemd"
LAYOUT = cgroups.detect()
EXEC_CG = "pyrt-exec"  # where `pyruntime exec` puts its processes inside the systemd container


def launcher_parts() -> tuple[str, str, list[str]]:
    """(interpreter, package dir, site dirs) of /usr/local/bin/pyruntime (see launcher.py)."""
    with open(runtime_binary()) as f:
        text = f.read(4096)
    lines = text.splitlines()
    interp = os.path.realpath(lines[0][2:].split()[0])
    pkg, site = str(REPO), []
    for line in lines:
        if line.startswith("sys.path.insert(0, "):
            pkg = ast.literal_eval(line.split("(0, ", 1)[1][:-1])
        elif line.startswith("sys.path += "):
            site = ast.literal_eval(line.split("+= ", 1)[1])
    return interp, pkg, site


def launcher_paths() -> list[str]:
    """What /usr/local/bin/pyruntime needs besides /usr: its interpreter's prefix, the package
    dir it puts on sys.path and the site dirs it appends (jeepney is there)."""
    interp, pkg, site = launcher_parts()
    paths = [str(Path(interp).parents[1]), pkg, *site]
    return [p for p in dict.fromkeys(paths) if not p.startswith("/usr/")]


class SystemdContainer:
    """systemd as PID 1 of a container run by the runtime under test."""

    def __init__(self, runtime, tmp: Path, mode: str = "unified"):
        self.rt, self.tmp, self.mode = runtime, tmp, mode
        self.cid = runtime.new_id("sd")
        self.inner = tmp / "inner"
        self.inner.mkdir()
        self.bundle = tmp / "systemd"
        self.rootfs = self.bundle / "rootfs"
        # The host side of the container's cgroups (an absolute cgroupsPath: known in advance).
        self.host_dirs = cgroups.manager("/" + self.cid, self.cid, layout=LAYOUT).paths
        self.host_cg = self.host_dirs[""]
        self.pid = 0

    def build(self) -> None:
        r, mode = self.rootfs, self.mode
        for d in ("proc", "sys", "dev", "run", "tmp", "var", "root", "usr", "inner"):
            (r / d).mkdir(parents=True)
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            if os.path.islink("/" + name):
                os.symlink(os.readlink("/" + name), r / name)
            elif os.path.isdir("/" + name):
                (r / name).mkdir()
        try:
            shutil.copytree("/etc", r / "etc", symlinks=True)
        except shutil.Error:
            pass  # an unreadable file or socket in /etc: systemd does not need it
        # A machine id of its own, so that systemd does not take this for a first boot.
        (r / "etc" / "machine-id").write_text(uuid.uuid4().hex + "\n")
        # Boot to an empty target: no getty, no host services, up in well under a second.
        (r / "etc" / "systemd" / "system" / "pyruntime-test.target").write_text(
            "[Unit]\nDescription=pyruntime test\n")
        from pyruntime.linux import capabilities
        bnd = capabilities.bounding_set()
        caps = [n for i, n in enumerate(capabilities.NAMES) if bnd >> i & 1]
        cfg = default_config([SYSTEMD, "--unit=pyruntime-test.target", "--log-level=info"])
        cfg["process"].update(
            env=["container=pyruntime",
                 "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            capabilities={k: caps for k in ("bounding", "effective", "permitted")},
            noNewPrivileges=False, rlimits=[])

        def bind(dst, src, ro=True):
            return {"destination": dst, "type": "bind", "source": str(src),
                    "options": ["rbind"] + (["ro"] if ro else [])}

        def tmpfs(dst, mode):
            return {"destination": dst, "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", f"mode={mode}"]}
        binds = [bind("/" + n, "/" + n) for n in ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
                 if os.path.isdir("/" + n) and not os.path.islink("/" + n)]
        cfg["mounts"] = [
            bind("/usr", "/usr"), *binds,
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            # unified: its own cgroup2 dir, writable: systemd runs in unified mode.
            # hybrid: the runtime's cgroup mount (a tmpfs with the container's dir of each v1
            # hierarchy, name=systemd included): systemd runs in hybrid mode.
            bind("/sys/fs/cgroup", self.host_cg, ro=False) if mode == "unified" else
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["rw", "nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "mode=755"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "nodev", "mode=1777"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
            tmpfs("/run", "755"), tmpfs("/tmp", "1777"), tmpfs("/var", "755"),
            *(bind(p, p) for p in launcher_paths()),
            bind("/inner", self.inner, ro=False),
        ]
        cfg["linux"] = {
            "namespaces": [{"type": t} for t in
                           ("pid", "mount", "ipc", "uts", "network", "cgroup")],
            "cgroupsPath": "/" + self.cid,
            "resources": {"devices": [{"allow": True, "access": "rwm"}]},
        }
        (self.bundle / "config.json").write_text(json.dumps(cfg, indent=1))

    def start(self, timeout: float = 20.0) -> None:
        with open(self.tmp / "systemd.out", "w") as out:
            proc = subprocess.run(self.rt.cmd("create", "--bundle", self.bundle, self.cid),
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60)
        assert proc.returncode == 0, (self.tmp / "systemd.out").read_text()
        self.rt("start", self.cid)
        self.pid = self.rt.state(self.cid)["pid"]
        deadline = time.monotonic() + timeout
        while not self.path("/run/systemd/private").exists():
            assert time.monotonic() < deadline, "systemd did not come up"
            assert self.rt.state(self.cid)["status"] == "running", \
                f"systemd exited: {(self.tmp / 'systemd.out').read_text()}"
            time.sleep(0.05)
        if self.mode == "unified":
            # A leaf for exec'd processes: the container's root cgroup holds systemd's slices
            # and, once systemd enables controllers there, no process of its own. (In hybrid
            # mode the root is fine, as v1 has no such rule and systemd enables no controller
            # in cgroup2; a leaf would not last there: systemd prunes empty v1 cgroups below
            # its root slice whenever it realizes it.)
            for d in self.host_dirs.values():
                os.makedirs(os.path.join(d, EXEC_CG), exist_ok=True)
            cpuset = self.host_dirs.get("cpuset")
            if cpuset:
                for f in ("cpuset.cpus", "cpuset.mems"):
                    Path(cpuset, EXEC_CG, f).write_text(Path(cpuset, f).read_text())
        state = self.exec("systemctl", "is-system-running", "--wait", check=False,
                          timeout=timeout).stdout.strip()
        assert state in ("running", "degraded"), state

    def path(self, p: str) -> Path:
        return Path(f"/proc/{self.pid}/root{p}")

    def exec(self, *args, check=True, timeout=60):
        where = ["--cgroup", EXEC_CG] if self.mode == "unified" else []
        return self.rt("exec", *where, self.cid, *args, check=check, timeout=timeout)

    def sh(self, script: str):
        """A shell inside; nothing of it may hold our pipes (a container init inherits them)."""
        return self.exec("sh", "-c", script, check=False)

    def pyruntime(self, *args, systemd=False):
        """The runtime under test inside, as `create` or `run -d` need: stdio off, stderr kept."""
        flags = "--systemd-cgroup " if systemd else ""
        cmd = " ".join([runtime_binary(), flags + "--root /run/pyrt", *args])
        return self.sh(f"{cmd} </dev/null >/run/out 2>/run/err; rc=$?; cat /run/out; "
                       "cat /run/err >&2; exit $rc")

    def show(self, unit: str) -> dict:
        out = self.exec("systemctl", "show", "--no-pager", unit).stdout
        res: dict = {}
        for line in out.splitlines():
            k, _, v = line.partition("=")
            if k == "DeviceAllow":
                res.setdefault(k, []).append(v)
            else:
                res[k] = v
        return res

    def diagnose(self) -> str:
        if not self.pid:
            return ""
        j = self.exec("journalctl", "--no-pager", "-n", "60", check=False, timeout=20)
        s = self.exec("systemctl", "--no-pager", "--failed", check=False, timeout=20)
        return f"\n--- journal:\n{j.stdout}{j.stderr}\n--- failed units:\n{s.stdout}"


def inner_bundle(box: SystemdContainer, template, name: str, **linux) -> str:
    b = Bundle(box.inner / name, template)
    cfg = b.config
    cfg["process"]["args"] = ["sleep", "300"]
    cfg["root"]["path"] = f"/inner/{name}/rootfs"
    cfg["linux"].update(linux)
    b.write(cfg)
    return f"/inner/{name}"


def resources_for(box: SystemdContainer) -> tuple[dict, dict, dict]:
    """linux.resources to ask for, the unit properties systemd must then show, and the cgroup
    files (host side, "<hierarchy key>/<file>", "" = cgroup2) that must hold them, for the
    controllers this host gives the systemd container."""
    res, want_props, want_files = {}, {}, {}
    if box.mode == "unified":
        ctl = set(Path(box.host_cg, "cgroup.controllers").read_text().split())
        # A core cgroup2 file exists whatever controllers the host hands out: proof that the
        # cgroupfs code applied linux.resources to systemd's dir.
        res["unified"] = {"cgroup.max.descendants": "7"}
        want_files["/cgroup.max.descendants"] = "7"
        if "pids" in ctl:
            res["pids"] = {"limit": 64}
            want_props["TasksMax"] = want_files["/pids.max"] = "64"
        if "cpu" in ctl:
            res["cpu"] = {"shares": 2048}
            want_props["CPUWeight"] = want_files["/cpu.weight"] = "79"  # runc's mapping
        if "memory" in ctl:
            res["memory"] = {"limit": 256 << 20}
            want_props["MemoryMax"] = want_files["/memory.max"] = str(256 << 20)
        return res, want_props, want_files
    v1 = set(box.host_dirs) - {""}
    if "memory" in v1:
        res["memory"] = {"limit": 256 << 20}
        want_props["MemoryLimit"] = want_files["memory/memory.limit_in_bytes"] = str(256 << 20)
    if "pids" in v1:
        res["pids"] = {"limit": 64}
        want_props["TasksMax"] = want_files["pids/pids.max"] = "64"
    if "cpu" in v1:
        res["cpu"] = {"shares": 2048}
        want_props["CPUShares"] = want_files["cpu/cpu.shares"] = "2048"
    return res, want_props, want_files


def check_running_unit(box: SystemdContainer, template, name: str, slice_name: str) -> None:
    """Create, start, inspect, pause, update, delete one container through the driver."""
    unit = f"pyrt-{name}.scope"
    cg = names.unit_cgroup(slice_name, unit)
    extra, expect_props, expect_files = resources_for(box)
    resources = dict(default_config()["linux"]["resources"], **extra)
    path = inner_bundle(box, template, name, cgroupsPath=f"{slice_name}:pyrt:{name}",
                        resources=resources)
    p = box.pyruntime("create", "--bundle", path, name, systemd=True)
    assert p.returncode == 0, p.stderr
    p = box.pyruntime("start", name)
    assert p.returncode == 0, p.stderr
    st = json.loads(box.pyruntime("state", name).stdout)
    assert st["status"] == "running"
    inner_pid = st["pid"]  # in the systemd container's pid namespace

    # systemd's view (systemctl, not our D-Bus client)
    u = box.show(unit)
    assert u["ActiveState"] == "active" and u["LoadState"] == "loaded", u
    assert u["ControlGroup"] == cg and u["Slice"] == slice_name and u["Delegate"] == "yes"
    assert u["DevicePolicy"] == "strict"
    assert {"/dev/char/1:3 rwm", "char-136 rwm", "char-* m"} <= set(u["DeviceAllow"])
    for k, v in expect_props.items():
        assert u[k] == v, (k, u[k])

    # inside: the container's init sits in the scope, in every hierarchy; the scope holds it
    inside = box.exec("cat", f"/proc/{inner_pid}/cgroup").stdout
    assert f"0::{cg}\n" in inside
    v2_inside = "/sys/fs/cgroup" if box.mode == "unified" else "/sys/fs/cgroup/unified"
    assert str(inner_pid) in box.exec("cat", f"{v2_inside}{cg}/cgroup.procs").stdout.split()
    if box.mode == "hybrid":
        where = {c: line.split(":", 2)[2] for line in inside.splitlines()
                 for c in line.split(":", 2)[1].split(",")}
        for key in set(box.host_dirs) - {""}:
            assert where.get(key) == cg, (key, inside)

    # outside: the host's dirs of the systemd container hold the scope, with our init
    host_scope = {key: Path(d + cg) for key, d in box.host_dirs.items()
                  if box.mode == "hybrid" or key == ""}
    host_pids = host_scope[""].joinpath("cgroup.procs").read_text().split()
    assert len(host_pids) == 1
    nspid = [line for line in Path(f"/proc/{host_pids[0]}/status").read_text().splitlines()
             if line.startswith("NSpid:")][0].split()
    assert nspid[2] == str(inner_pid), nspid  # host pid, systemd container pid, inner pid 1
    for f, v in expect_files.items():
        key, _, fname = f.partition("/")
        assert host_scope[key].joinpath(fname).read_text().strip() == v, f
    if "devices" in host_scope:  # v1: the device rules were written after systemd's
        rules = host_scope["devices"].joinpath("devices.list").read_text().split("\n")
        assert "c 1:3 rwm" in rules and "a *:* rwm" not in rules, rules

    # the state names the unit, so every later command finds it
    saved = json.loads(box.path(f"/run/pyrt/{name}/pyruntime.json").read_text())
    assert saved["cgroup"]["extra"]["systemd"]["unit"] == unit
    assert saved["cgroup"]["dirs"][""] == f"{v2_inside}{cg}"
    assert "sleep 300" in box.pyruntime("ps", name).stdout
    assert box.pyruntime("pause", name).returncode == 0
    assert json.loads(box.pyruntime("state", name).stdout)["status"] == "paused"
    if "freezer" in host_scope:  # systemd has no v1 freezer: the driver made that dir
        assert host_scope["freezer"].joinpath("freezer.state").read_text().strip() == "FROZEN"
    else:  # unified, or a hybrid host whose v1 freezer went to cgroup2 (cgroup2-stage.sh)
        assert host_scope[""].joinpath("cgroup.freeze").read_text().strip() == "1"
    assert box.pyruntime("resume", name).returncode == 0
    pids_file = [f for f in expect_files if f.endswith("pids.max")]
    if pids_file:
        # update goes to systemd too (else a daemon-reload would bring the old value back)
        p = box.pyruntime("update", "--pids-limit", "32", name)
        assert p.returncode == 0, p.stderr
        assert box.show(unit)["TasksMax"] == "32"
        key, _, fname = pids_file[0].partition("/")
        assert host_scope[key].joinpath(fname).read_text().strip() == "32"

    # delete stops the unit; systemd removes its dirs, the driver the ones it made
    p = box.pyruntime("delete", "--force", name)
    assert p.returncode == 0, p.stderr
    u = box.show(unit)
    assert u["LoadState"] == "not-found" and u["ActiveState"] == "inactive", u
    assert [str(d) for d in host_scope.values() if d.exists()] == []
    assert not box.path(f"/run/pyrt/{name}").exists()


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's --systemd-cgroup")
@contextlib.contextmanager
def started_box(runtime, tmp_path, mode):
    """A booted SystemdContainer for the test's body: a failure carries its diagnosis, and it
    is removed afterwards, its host cgroup with it."""
    box = SystemdContainer(runtime, tmp_path, mode)
    box.build()
    try:
        box.start()
        yield box
    except AssertionError as e:
        raise AssertionError(f"{e}{box.diagnose()}") from None
    finally:
        runtime("delete", "--force", box.cid, check=False)
        shutil.rmtree(box.bundle, ignore_errors=True)
    assert not os.path.exists(box.host_cg)


@pytest.mark.skipif(not os.path.exists(SYSTEMD), reason="systemd is not installed "
                    "(tests/setup.sh installs it)")
@pytest.mark.skipif(LAYOUT.unified is None, reason="needs a cgroup2 hierarchy for systemd")
@pytest.mark.parametrize("mode", [
    "unified",
    pytest.param("hybrid", marks=pytest.mark.skipif(
        LAYOUT.mode != "hybrid", reason="the v1 hierarchies of a hybrid host")),
])
def test_real_systemd(runtime, rootfs_template, tmp_path, mode):
    """unified: systemd gets its own cgroup2 dir; hybrid: the runtime's cgroup mount (the
    container's dir in each v1 hierarchy; systemd mounts cgroup2 at /sys/fs/cgroup/unified),
    so the driver's v1 properties (MemoryLimit, CPUShares) and v1 dirs run for real too."""
    with started_box(runtime, tmp_path, mode) as box:
        assert not box.path(dbus.SYSTEM_BUS).exists()  # no bus daemon yet: the private socket
        # A nested slice ("pyrt-test.slice" lives at pyrt.slice/pyrt-test.slice).
        check_running_unit(box, rootfs_template, "viaprivate", "pyrt-test.slice")

        # A create that fails after the unit started leaves no unit (nor state) behind.
        path = inner_bundle(box, rootfs_template, "bad", cgroupsPath=":pyrt:bad")
        cfg = json.loads((box.inner / "bad" / "config.json").read_text())
        cfg["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}
        (box.inner / "bad" / "config.json").write_text(json.dumps(cfg))
        p = box.pyruntime("create", "--bundle", path, "bad", systemd=True)
        assert p.returncode != 0 and "hooks.createRuntime[0]" in p.stderr, p.stderr
        assert box.show("pyrt-bad.scope")["LoadState"] == "not-found"
        assert [d for d in box.host_dirs.values()
                if os.path.exists(d + "/system.slice/pyrt-bad.scope")] == []
        assert not box.path("/run/pyrt/bad").exists()

        # An existing unit of that name: the create fails and leaves the other unit alone.
        keep = inner_bundle(box, rootfs_template, "keep", cgroupsPath=":pyrt:dup")
        assert box.pyruntime("create", "--bundle", keep, "keep", systemd=True).returncode == 0
        p = box.pyruntime("create", "--bundle", keep, "dup", systemd=True)
        assert p.returncode != 0 and "UnitExists" in p.stderr, p.stderr
        assert box.show("pyrt-dup.scope")["ActiveState"] == "active"
        assert box.pyruntime("delete", "--force", "keep").returncode == 0
        assert box.show("pyrt-dup.scope")["LoadState"] == "not-found"

        # With a bus daemon, the driver goes through the system bus.
        if mode == "unified" and Path("/usr/bin/dbus-daemon").exists():
            box.exec("systemctl", "start", "dbus.service")
            # systemd joins the bus a moment after dbus-daemon is up; until then the driver
            # falls back to the private socket.
            interp, pkg, site = launcher_parts()
            probe = (f"import sys; sys.path.insert(0, {pkg!r}); sys.path += {site!r}; "
                     "from pyruntime.cgroups.systemd.dbus import Systemd; print(Systemd().via)")
            deadline = time.monotonic() + 10
            while (who := box.exec(interp, "-IS", "-c", probe).stdout.strip()) != "bus":
                assert time.monotonic() < deadline, f"the driver still uses {who!r}"
                time.sleep(0.1)
            check_running_unit(box, rootfs_template, "viabus", "system.slice")


# ---------------------------------------------------------------- rootless: the user's systemd

ROOTLESS_USER = "pyrt-rootless"  # tests/setup.sh creates it (tests/test_rootless.py)


def _rootless_user():
    import pwd
    try:
        return pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        return None


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's --systemd-cgroup")
@pytest.mark.skipif(not os.path.exists(SYSTEMD), reason="systemd is not installed "
                    "(tests/setup.sh installs it)")
@pytest.mark.skipif(LAYOUT.unified is None, reason="needs a cgroup2 hierarchy for systemd")
@pytest.mark.skipif(_rootless_user() is None, reason=f"no user {ROOTLESS_USER}: tests/setup.sh "
                    "creates it")
@pytest.mark.skipif(not Path("/usr/bin/dbus-daemon").exists(), reason="logind (for the user "
                    "manager) needs the system bus: package dbus")
@pytest.mark.parametrize("mode", [
    "unified",
    pytest.param("hybrid", marks=pytest.mark.skipif(
        LAYOUT.mode != "hybrid", reason="the v1 hierarchies of a hybrid host")),
])
def test_rootless_with_the_users_systemd(runtime, rootfs_template, tmp_path, mode):
    """A user of the systemd container runs pyruntime --rootless --systemd-cgroup: the scope is
    the user manager's (under user@UID.service, cgroup2 only, also in hybrid mode, where the
    v1 hierarchies stay root's), limits land in its dir, exec joins it, delete stops it and
    leaves nothing."""
    pw = _rootless_user()
    uid, gid = pw.pw_uid, pw.pw_gid

    def as_user(*args, userns=False, session_bus=False):
        env = f"env -i PATH=/usr/bin:/bin XDG_RUNTIME_DIR=/run/user/{uid}"
        if session_bus:
            env += f" DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus"
        if userns:  # as rootless podman runs it: root of a user namespace of the user's
            env += " unshare --user --map-root-user"
        cmd = (f"setpriv --reuid {uid} --regid {gid} --init-groups {env} {runtime_binary()} "
               f"--rootless auto --systemd-cgroup --root /run/user/{uid}/pyrt " + " ".join(args))
        return box.sh(f"{cmd} </dev/null >/run/out 2>/run/err; rc=$?; cat /run/out; "
                      "cat /run/err >&2; exit $rc")

    def user_unit(unit):
        out = box.sh(f"setpriv --reuid {uid} --regid {gid} --init-groups env -i "
                     f"XDG_RUNTIME_DIR=/run/user/{uid} systemctl --user show --no-pager "
                     f"-p LoadState -p ActiveState -p ControlGroup {unit}").stdout
        return dict(line.partition("=")[::2] for line in out.splitlines())

    with started_box(runtime, tmp_path, mode) as box:
        host_v2 = box.host_dirs[""]  # the systemd container's cgroup2 dir, from the host
        # logind needs the system bus; linger keeps the user manager without a login session
        box.exec("systemctl", "start", "dbus.service")
        box.exec("loginctl", "enable-linger", ROOTLESS_USER, timeout=30)
        box.exec("systemctl", "start", f"user@{uid}.service", timeout=30)
        manager_cg = f"/user.slice/user-{uid}.slice/user@{uid}.service"
        controllers = Path(host_v2 + manager_cg, "cgroup.controllers").read_text().split()

        b = Bundle(box.inner / "rl", rootfs_template)
        cfg = b.config
        cfg["process"]["args"] = ["sh", "-c", "cat /proc/self/cgroup > /cgroup; exec sleep 300"]
        cfg["root"]["path"] = "/inner/rl/rootfs"
        cfg["linux"]["namespaces"] = [{"type": t} for t in
                                      ("pid", "ipc", "uts", "mount", "user", "network")]
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
        for m in cfg["mounts"]:
            m["options"] = [o for o in m.get("options", []) if o != "gid=5"]
        limits = {"unified": {"cgroup.max.descendants": "7"}, "pids": {"limit": 64}}
        if "pids" not in controllers:
            # This hybrid host's pids controller is v1, which the user manager is not given:
            # the limit is refused in one line, and nothing is left.
            cfg["linux"]["resources"] = {"pids": {"limit": 64}}
            b.write(cfg)
            subprocess.run(["chown", "-R", f"{uid}:{gid}", str(box.inner / "rl")], check=True)
            p = as_user("create", "--bundle", "/inner/rl", "rl")
            assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
            assert "linux.resources.pids.limit: rootless --systemd-cgroup applies limits " \
                   "through cgroup v2 only" in p.stderr, p.stderr
            assert user_unit("pyruntime-rl.scope")["LoadState"] == "not-found"
            assert as_user("list", "-q").stdout.strip() == ""
            del limits["pids"]
        cfg["linux"]["resources"] = limits
        b.write(cfg)
        subprocess.run(["chown", "-R", f"{uid}:{gid}", str(box.inner / "rl")], check=True)

        p = as_user("create", "--bundle", "/inner/rl", "rl")
        assert p.returncode == 0, p.stderr
        assert as_user("start", "rl").returncode == 0
        unit = "pyruntime-rl.scope"  # no cgroupsPath: user.slice, as runc's rootless default
        scope = f"{manager_cg}/user.slice/{unit}"
        u = user_unit(unit)
        assert u["ActiveState"] == "active" and u["ControlGroup"] == scope, u
        deadline = time.monotonic() + 10
        seen = box.inner / "rl" / "rootfs" / "cgroup"
        while not seen.exists() or not seen.read_text().endswith("\n"):
            assert time.monotonic() < deadline, "the container did not write /cgroup"
            time.sleep(0.05)
        assert f"0::{scope}\n" in seen.read_text()  # what the container itself sees
        p = as_user("exec", "rl", "cat", "/proc/self/cgroup")
        assert p.returncode == 0 and f"0::{scope}\n" in p.stdout, p.stderr
        host_scope = Path(host_v2 + scope)
        assert host_scope.joinpath("cgroup.max.descendants").read_text().strip() == "7"
        if "pids" in limits:
            assert host_scope.joinpath("pids.max").read_text().strip() == "64"
        assert host_scope.stat().st_uid == uid  # delegated to the user
        assert "sleep 300" in as_user("ps", "rl").stdout
        assert as_user("pause", "rl").returncode == 0  # the scope's cgroup.freeze is the user's
        assert host_scope.joinpath("cgroup.freeze").read_text().strip() == "1"
        assert json.loads(as_user("state", "rl").stdout)["status"] == "paused"
        assert as_user("resume", "rl").returncode == 0
        assert host_scope.joinpath("cgroup.freeze").read_text().strip() == "0"

        p = as_user("delete", "--force", "rl")
        assert p.returncode == 0, p.stderr
        assert user_unit(unit)["LoadState"] == "not-found"
        assert not host_scope.exists()
        assert not box.path(f"/run/user/{uid}/pyrt/rl").exists()

        # Root of the user's own user namespace: the bus still sees the user (SO_PEERCRED),
        # so the client claims no uid of its own; and this time through the session bus
        # (dbus-daemon's side of that exchange), once the user manager has joined it.
        interp, pkg, site = launcher_parts()
        probe = (f"import sys; sys.path.insert(0, {pkg!r}); sys.path += {site!r}; "
                 "from pyruntime.cgroups.systemd.dbus import Systemd; "
                 "print(Systemd(user=True).via)")
        deadline = time.monotonic() + 10
        while True:
            p = box.sh(f"setpriv --reuid {uid} --regid {gid} --init-groups env -i "
                       f"XDG_RUNTIME_DIR=/run/user/{uid} "
                       f"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus "
                       f"unshare --user --map-root-user {interp} -IS -c \"{probe}\"")
            if p.stdout.strip() == "bus":
                break
            assert time.monotonic() < deadline, (p.stdout, p.stderr)
            time.sleep(0.1)
        for key in ("uidMappings", "gidMappings"):
            cfg["linux"][key] = [{"containerID": 0, "hostID": 0, "size": 1}]
        b.write(cfg)
        subprocess.run(["chown", "-R", f"{uid}:{gid}", str(box.inner / "rl")], check=True)
        p = as_user("run", "-d", "--bundle", "/inner/rl", "rl2", userns=True, session_bus=True)
        assert p.returncode == 0, p.stderr
        u = user_unit("pyruntime-rl2.scope")
        assert u["ActiveState"] == "active", u
        assert u["ControlGroup"] == f"{manager_cg}/user.slice/pyruntime-rl2.scope"
        p = as_user("delete", "--force", "rl2", userns=True, session_bus=True)
        assert p.returncode == 0, p.stderr
        assert user_unit("pyruntime-rl2.scope")["LoadState"] == "not-found"
        assert not box.path(f"/run/user/{uid}/pyrt/rl2").exists()
