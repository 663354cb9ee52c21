"""Rootless mode: real containers run by an unprivileged user, and the decisions behind them.

The container tests run the CLI as `pyrt-rootless` (tests/setup.sh creates it, with ranges in
/etc/subuid and /etc/subgid, and installs newuidmap). That user may not read root's files, so
the CLI runs from a copy of this checkout's package in a dir it can read;
each test gets a bundle it owns and an XDG_RUNTIME_DIR of its own, and checks that nothing is
left there, nor any process of the user.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import CGROUP_ROOT, default_config, is_pyruntime, reap_zombies, runtime_binary
from pyruntime.linux import idmap
from pyruntime.lifecycle import rootless
from pyruntime.cgroups import rootless as cgroup_rootless
from pyruntime.errors import RuntimeFailure

USER = "pyrt-rootless"
REPO = Path(__file__).resolve().parents[1]
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"  # util-linux


def _user():
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        return None


def _subid_start(path: str) -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            name, start, _count = line.split(":")
            if name == USER:
                return int(start)
    except (OSError, ValueError):
        pass
    return None


PW = _user()
needs_user = pytest.mark.skipif(PW is None, reason=f"no user {USER}: tests/setup.sh creates it")


# ---------------------------------------------------------------- the decisions (no containers)

def test_auto_is_rootless_for_a_non_root_euid(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert rootless.resolve("auto") is True
    assert rootless.resolve("false") is False
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(rootless, "in_foreign_userns", lambda: False)
    assert rootless.resolve("auto") is False
    assert rootless.resolve("true") is True
    monkeypatch.setattr(rootless, "in_foreign_userns", lambda: True)
    assert rootless.resolve("auto") is True
    with pytest.raises(RuntimeFailure, match="invalid --rootless value 'maybe'"):
        rootless.resolve("maybe")


def test_foreign_user_namespace_detection(tmp_path):
    m = tmp_path / "uid_map"
    m.write_text("         0          0 4294967295\n")
    assert not rootless.in_foreign_userns(str(m))
    m.write_text("         0       1001          1\n")
    assert rootless.in_foreign_userns(str(m))
    m.write_text("0 0 4294967295\n1 1 1\n")
    assert rootless.in_foreign_userns(str(m))
    assert not rootless.in_foreign_userns(str(tmp_path / "missing"))


def test_default_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert rootless.default_root({"XDG_RUNTIME_DIR": "/run/user/1000"}) == \
        "/run/user/1000/pyruntime"
    assert rootless.default_root({}) == "/run/pyruntime"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(rootless, "in_foreign_userns", lambda: False)
    assert rootless.default_root({"XDG_RUNTIME_DIR": "/run/user/0"}) == "/run/pyruntime"
    monkeypatch.setattr(rootless, "in_foreign_userns", lambda: True)
    assert rootless.default_root({"XDG_RUNTIME_DIR": "/x", "USER": "me"}) == "/x/pyruntime"
    assert rootless.default_root({"XDG_RUNTIME_DIR": "/x", "USER": "root"}) == "/run/pyruntime"


def test_direct_write_only_for_ones_own_single_id():
    own = [{"containerID": 0, "hostID": 1000, "size": 1}]
    assert idmap.can_write_directly(own, 1000)
    assert not idmap.can_write_directly(own, 1001)
    assert not idmap.can_write_directly([dict(own[0], size=2)], 1000)
    assert not idmap.can_write_directly(
        own + [{"containerID": 1, "hostID": 100000, "size": 65536}], 1000)


def test_helper_arguments():
    maps = [{"containerID": 0, "hostID": 1000, "size": 1},
            {"containerID": 1, "hostID": 100000, "size": 65536}]
    assert idmap.helper_args("/usr/bin/newuidmap", 42, maps) == \
        ["/usr/bin/newuidmap", "42", "0", "1000", "1", "1", "100000", "65536"]


def test_find_helper(tmp_path):
    exe = tmp_path / "newuidmap"
    exe.write_text("#!/bin/sh\n")
    assert idmap.find_helper("newuidmap", f"/nonexistent:{tmp_path}") is None
    exe.chmod(0o755)
    assert idmap.find_helper("newuidmap", f"/nonexistent:{tmp_path}") == str(exe)


def test_unset_resources_ask_for_no_cgroup():
    docker_like = {"devices": [{"allow": False, "access": "rwm"}], "memory": {},
                   "cpu": {"shares": 0}, "blockIO": {"weight": 0},
                   "memory_": {"disableOOMKiller": False}}
    assert rootless.without_unset(docker_like) == {}
    assert rootless.without_unset(None) == {}
    # entries of a list stay whole: minor 0 is a device, not an unset value
    r = {"pids": {"limit": 10}, "blockIO": {"weightDevice": [{"major": 8, "minor": 0,
                                                               "weight": 10}]}}
    assert rootless.without_unset(r) == r


def test_writable_cgroup_names_the_nearest_existing_dir(tmp_path):
    assert cgroup_rootless.writable_cgroup(str(tmp_path / "a" / "b")) is None  # root may write it
    (tmp_path / "c").mkdir()
    # an existing cgroup is usable only through its cgroup.procs
    assert cgroup_rootless.writable_cgroup(str(tmp_path / "c")) == str(tmp_path / "c")
    (tmp_path / "c" / "cgroup.procs").write_text("")
    assert cgroup_rootless.writable_cgroup(str(tmp_path / "c")) is None


def test_pid_namespace_members(tmp_path):
    proc = tmp_path / "proc"
    for pid, ns in (("self", "pid:[1]"), ("10", "pid:[2]"), ("11", "pid:[2]"), ("12", "pid:[1]")):
        (proc / pid / "ns").mkdir(parents=True)
        os.symlink(ns, proc / pid / "ns" / "pid")
    (proc / "meminfo").write_text("")
    assert rootless.pid_namespace_members(10, str(proc)) == [10, 11]
    assert rootless.pid_namespace_members(12, str(proc)) == [12]  # the host's: just the init
    assert rootless.pid_namespace_members(99, str(proc)) == [99]


# ---------------------------------------------------------------- real containers as the user

@pytest.fixture(scope="session")
def user_launcher():
    """A launcher the user can run: a copy of this checkout's package in a dir the user can
    read (the installed launcher's paths may sit under /root), started by
    the interpreter of the launcher under test."""
    if PW is None:
        pytest.skip(f"no user {USER}: tests/setup.sh creates it")
    if not is_pyruntime():
        pytest.skip("runs pyruntime's own package as the user")
    interpreter = Path(runtime_binary()).read_text().split("\n", 1)[0][2:].split()[0]
    if subprocess.run(_as_user([interpreter, "-IS", "-c", "pass"]),
                      capture_output=True).returncode != 0:
        # e.g. a version manager's interpreter under /root: the distribution's build of the
        # same version runs the same package as well
        distro = "/usr/bin/python%d.%d" % sys.version_info[:2]
        if subprocess.run(_as_user([distro, "-IS", "-c", "pass"]),
                          capture_output=True).returncode != 0:
            pytest.skip(f"{USER} can run neither {interpreter} nor {distro}")
        interpreter = distro
    d = Path(tempfile.mkdtemp(prefix="pyrt-rootless-launcher-", dir="/tmp"))
    try:
        shutil.copytree(REPO / "pyruntime", d / "pyruntime",
                        ignore=shutil.ignore_patterns("__pycache__"))
        try:
            import jeepney  # --systemd-cgroup's D-Bus client
            shutil.copytree(Path(jeepney.__file__).parent, d / "jeepney",
                            ignore=shutil.ignore_patterns("__pycache__", "tests"))
        except ImportError:
            pass
        launcher = d / "pyruntime-rootless"
        launcher.write_text(f"#!{interpreter} -IS\nimport sys\nsys.path.insert(0, {str(d)!r})\n"
                            "from pyruntime.cli.fast import run\nrun()\n")
        subprocess.run(["chmod", "-R", "a+rX", str(d)], check=True)
        launcher.chmod(0o755)
        yield str(launcher)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _as_user(cmd: list[str]) -> list[str]:
    return [SETPRIV, "--reuid", USER, "--regid", USER, "--init-groups", "--", *cmd]


def _user_pids() -> list[int]:
    """The user's processes that descend from this test process (the user may run others
    meanwhile: the e2e stage's rootless podman keeps a pause process)."""
    parents, owners = {}, {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                st = Path(f"/proc/{name}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":\t", 1) for line in st.splitlines() if ":\t" in line)
            parents[int(name)] = int(fields.get("PPid", "0"))
            owners[int(name)] = int(fields.get("Uid", "0").split()[0])
    me, out = os.getpid(), []
    for pid, uid in owners.items():
        if uid != PW.pw_uid or pid == me:
            continue
        p = parents.get(pid, 0)
        while p > 1 and p != me:
            p = parents.get(p, 0)
        if p == me:
            out.append(pid)
    return out


class UserRuntime:
    """The CLI run as the user, with its own XDG_RUNTIME_DIR and a bundle it owns."""

    def __init__(self, launcher: str, base: Path, rootfs_template: Path):
        self.launcher, self.base = launcher, base
        self.xdg = base / "xdg"
        self.xdg.mkdir(mode=0o700)
        self.bundle = base / "bundle"
        self.bundle.mkdir()
        shutil.copytree(rootfs_template, self.bundle / "rootfs", symlinks=True)
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(base)], check=True)
        self.ids: list[str] = []
        self.config = rootless_config(["true"])
        self.path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        self.launcher_prefix: list[str] = []  # run as the user, before the launcher
        self.root_prefix: list[str] = []  # run as root, before setpriv

    @property
    def state_dir(self) -> Path:
        return self.xdg / "pyruntime"

    def write(self, config: dict) -> None:
        self.config = config
        p = self.bundle / "config.json"
        p.write_text(json.dumps(config, indent=1))
        os.chown(p, PW.pw_uid, PW.pw_gid)

    def __call__(self, *args, check=True, global_args=(), timeout=60, **kw):
        env = {"PATH": self.path, "HOME": PW.pw_dir, "USER": USER,
               "XDG_RUNTIME_DIR": str(self.xdg)}
        kw.setdefault("capture_output", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.run([*self.root_prefix, *_as_user([*self.launcher_prefix,
                                                             self.launcher, *global_args,
                                                             *map(str, args)])],
                              cwd=self.bundle, env=env, text=True, timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args[0]} failed rc={proc.returncode}\nstdout: {proc.stdout}\n"
                                 f"stderr: {proc.stderr}")
        return proc

    def new_id(self) -> str:
        cid = f"rl-{os.urandom(4).hex()}"
        self.ids.append(cid)
        return cid

    def detached(self, cid: str) -> None:
        """`run -d`, its stdio on /dev/null (the init would hold a pipe open)."""
        self("run", "-d", cid, capture_output=False, stdout=subprocess.DEVNULL,
             stderr=subprocess.DEVNULL)

    def state(self, cid: str) -> dict:
        return json.loads(self("state", cid).stdout)

    def leftovers(self) -> list[str]:
        problems = []
        if self.state_dir.exists():
            left = [p.name for p in self.state_dir.iterdir() if p.name != ".cache"]
            if left:
                problems.append(f"state dirs left in {self.state_dir}: {left}")
        deadline = time.monotonic() + 5
        while (pids := _user_pids()) and time.monotonic() < deadline:
            reap_zombies()
            time.sleep(0.02)
        if pids:
            problems.append(f"processes of {USER} left: {pids}")
        return problems


def rootless_config(args: list[str], *, netns: bool = True) -> dict:
    """runc spec --rootless's shape: a user namespace mapping the user's own ids."""
    cfg = default_config(args)
    kinds = ["pid", "ipc", "uts", "mount", "user"] + (["network"] if netns else [])
    cfg["linux"]["namespaces"] = [{"type": t} for t in kinds]
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": PW.pw_uid, "size": 1}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": PW.pw_gid, "size": 1}]
    # kept on purpose: rootless mode applies no device rules, and must not fail on them
    cfg["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    for m in cfg["mounts"]:  # no gid 5 in the namespace (runc spec --rootless drops it too)
        m["options"] = [o for o in m.get("options", []) if o != "gid=5"]
    return cfg


@pytest.fixture
def user_rt(user_launcher, rootfs_template):
    base = Path(tempfile.mkdtemp(prefix="pyrt-rootless-", dir="/tmp"))
    base.chmod(0o755)
    rt = UserRuntime(user_launcher, base, rootfs_template)
    try:
        yield rt
        problems = rt.leftovers()
        assert not problems, "; ".join(problems)
    finally:
        rt.path = "/usr/bin:/bin"  # a test may have taken PATH away
        for cid in rt.ids:
            try:
                rt("delete", "--force", cid, check=False)
            except (OSError, subprocess.SubprocessError):
                pass
        for pid in _user_pids():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        reap_zombies()
        subprocess.run(["umount", "-R", "-l", str(base / "bundle" / "rootfs")],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@needs_user
def test_run_as_user_maps_its_own_id(user_rt):
    user_rt.write(rootless_config(["sh", "-c",
                                   "cat /proc/self/uid_map /proc/self/gid_map; id -u; hostname; "
                                   "echo x > /dev/null && head -c 4 /dev/zero | wc -c; exit 3"]))
    cid = user_rt.new_id()
    p = user_rt("run", cid, check=False)
    assert p.returncode == 3, p.stderr
    lines = [" ".join(ln.split()) for ln in p.stdout.splitlines()]
    assert lines == [f"0 {PW.pw_uid} 1", f"0 {PW.pw_gid} 1", "0", "pyruntime", "4"], p.stdout
    assert user_rt.state_dir.is_dir()  # the default --root: $XDG_RUNTIME_DIR/pyruntime
    assert user_rt.state_dir.stat().st_uid == PW.pw_uid


@needs_user
def test_several_ranges_go_through_newuidmap(user_rt):
    sub_u, sub_g = _subid_start("/etc/subuid"), _subid_start("/etc/subgid")
    assert sub_u is not None and sub_g is not None, f"{USER} has no /etc/subuid range"
    cfg = rootless_config(["sh", "-c", "cat /proc/self/uid_map; id -u; id -G; touch /tmp/f"])
    cfg["linux"]["uidMappings"].append({"containerID": 1, "hostID": sub_u, "size": 65536})
    cfg["linux"]["gidMappings"].append({"containerID": 1, "hostID": sub_g, "size": 65536})
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5]}
    user_rt.write(cfg)
    p = user_rt("run", user_rt.new_id())
    lines = [" ".join(ln.split()) for ln in p.stdout.splitlines()]
    assert lines == [f"0 {PW.pw_uid} 1", f"1 {sub_u} 65536", "1000", "1000 5"], p.stdout
    st = (user_rt.bundle / "rootfs" / "tmp" / "f").stat()
    assert (st.st_uid, st.st_gid) == (sub_u + 999, sub_g + 999)


@needs_user
def test_sysfs_is_bound_from_the_host_without_a_netns(user_rt):
    user_rt.write(rootless_config(["sh", "-c", "grep ' /sys ' /proc/mounts; ls /sys/class/net"],
                                  netns=False))
    p = user_rt("run", user_rt.new_id())
    assert p.stdout.startswith("sysfs /sys sysfs ro,"), p.stdout
    assert "lo" in p.stdout.split()


@needs_user
def test_lifecycle_as_user(user_rt):
    user_rt.write(rootless_config(["sleep", "60"]))
    cid = user_rt.new_id()
    user_rt("create", cid, capture_output=False, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
    assert user_rt.state(cid)["status"] == "created"
    user_rt("start", cid)
    st = user_rt.state(cid)
    assert st["status"] == "running"
    assert st["owner"] == USER
    assert cid in user_rt("list", "-q").stdout.split()
    p = user_rt("exec", cid, "sh", "-c", "hostname; exit 5", check=False)
    assert (p.returncode, p.stdout) == (5, "pyruntime\n")
    p = user_rt("exec", "--tty", cid, "sh", "-c", "tty; exit 6", check=False)
    assert p.returncode == 6 and p.stdout.startswith("/dev/pts/"), p.stdout
    user_rt("exec", "--detach", cid, "sleep", "60", capture_output=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids = json.loads(user_rt("ps", "--format", "json", cid).stdout)
    assert st["pid"] in pids and len(pids) == 2, pids
    p = user_rt("pause", cid, check=False)  # no freezer was delegated here
    assert p.returncode == 1 and "has no cgroup" in p.stderr
    user_rt("kill", cid, "KILL")
    deadline = time.monotonic() + 10
    while user_rt.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
        reap_zombies()
        time.sleep(0.02)
    user_rt("delete", cid)
    assert not (user_rt.state_dir / cid).exists()


@pytest.fixture
def delegated():
    """A pids and a freezer v1 cgroup chowned to the user, as an admin delegates them."""
    name = f"pyrt-rl-{os.urandom(3).hex()}"
    dirs = [CGROUP_ROOT / c / name for c in ("pids", "freezer")]
    if not all(d.parent.is_dir() and (d.parent / "tasks").exists() for d in dirs):
        pytest.skip("needs v1 pids and freezer hierarchies (this host's layout)")
    for d in dirs:
        d.mkdir()
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(d)], check=True)
    try:
        yield name, dirs
    finally:
        for d in dirs:
            for sub in sorted((p for p in d.iterdir() if p.is_dir()), reverse=True):
                sub.rmdir()
            d.rmdir()


@needs_user
def test_delegated_cgroup_gets_limits_and_pauses(user_rt, delegated):
    name, (pids_dir, freezer_dir) = delegated
    cid = user_rt.new_id()
    cfg = rootless_config(["sleep", "60"])
    cfg["linux"]["cgroupsPath"] = f"/{name}/{cid}"
    cfg["linux"]["resources"]["pids"] = {"limit": 37}
    user_rt.write(cfg)
    user_rt.detached(cid)
    assert (pids_dir / cid / "pids.max").read_text().strip() == "37"
    init = user_rt.state(cid)["pid"]
    cg = Path(f"/proc/{init}/cgroup").read_text()
    assert f"pids:/{name}/{cid}\n" in cg and f"freezer:/{name}/{cid}\n" in cg, cg
    cg = user_rt("exec", cid, "cat", "/proc/self/cgroup").stdout  # exec joins it too
    assert f"pids:/{name}/{cid}\n" in cg, cg
    user_rt("update", "--pids-limit", "41", cid)
    assert (pids_dir / cid / "pids.max").read_text().strip() == "41"
    user_rt("pause", cid)
    assert user_rt.state(cid)["status"] == "paused"
    assert (freezer_dir / cid / "freezer.state").read_text().strip() == "FROZEN"
    user_rt("resume", cid)
    assert user_rt.state(cid)["status"] == "running"
    user_rt("delete", "--force", cid)
    assert not (pids_dir / cid).exists() and not (freezer_dir / cid).exists()


def _fails_cleanly(user_rt, p, *fragments) -> None:
    assert p.returncode == 1, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr


@needs_user
def test_limit_without_a_delegated_cgroup_names_the_dir(user_rt):
    cfg = rootless_config(["true"])
    cfg["linux"]["resources"]["memory"] = {"limit": 64 << 20}
    user_rt.write(cfg)
    p = user_rt("run", user_rt.new_id(), check=False)
    _fails_cleanly(user_rt, p, "linux.resources.memory", f"{CGROUP_ROOT}/memory",
                   "not writable", f"chown -R {PW.pw_uid}")


@needs_user
def test_mapping_not_in_subuid(user_rt):
    cfg = rootless_config(["true"])
    cfg["linux"]["uidMappings"].append({"containerID": 1, "hostID": 3_000_000, "size": 10})
    user_rt.write(cfg)
    p = user_rt("run", user_rt.new_id(), check=False)
    _fails_cleanly(user_rt, p, "linux.uidMappings", "newuidmap refused", "/etc/subuid")


@needs_user
def test_missing_newuidmap(user_rt):
    cfg = rootless_config(["true"])
    cfg["linux"]["uidMappings"].append({"containerID": 1, "hostID": 100000, "size": 10})
    user_rt.write(cfg)
    user_rt.path = "/nonexistent"
    p = user_rt("run", user_rt.new_id(), check=False)
    _fails_cleanly(user_rt, p, "linux.uidMappings", "newuidmap, which is not on PATH",
                   "package uidmap")


@needs_user
def test_root_the_user_cannot_write(user_rt):
    user_rt.write(rootless_config(["true"]))
    root = tempfile.mkdtemp(prefix="pyrt-rootless-notmine-", dir="/tmp")
    try:
        os.chmod(root, 0o755)
        p = user_rt("run", user_rt.new_id(), check=False, global_args=("--root", root))
        _fails_cleanly(user_rt, p, root, "Permission denied")
        assert os.listdir(root) == []
    finally:
        os.rmdir(root)


@needs_user
@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/unified") and
                    not os.path.exists("/sys/fs/cgroup/cgroup.controllers"),
                    reason="no cgroup2 hierarchy: refused before the bus is looked for")
def test_systemd_cgroup_without_a_user_manager_fails_cleanly(user_rt):
    """This host runs no systemd: the user's manager is looked for, not found, and named.
    (tests/test_cgroups_systemd.py runs a real one.)"""
    pytest.importorskip("jeepney")
    user_rt.write(rootless_config(["true"]))
    p = user_rt("run", user_rt.new_id(), check=False, global_args=("--systemd-cgroup",))
    _fails_cleanly(user_rt, p, "systemd cgroup driver: cannot reach the user's systemd",
                   f"{user_rt.xdg}/systemd/private: No such file or directory")


@needs_user
def test_root_of_a_user_namespace_is_rootless_too(user_rt):
    """As podman runs the runtime: euid 0 inside a user namespace the user made, with no user
    namespace in the config. auto must see rootless mode (devices bound, not mknod'ed; the
    default --root under $XDG_RUNTIME_DIR)."""
    cfg = rootless_config(["sh", "-c", "id -u; echo x > /dev/null && head -c 3 /dev/zero | wc -c"])
    cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"] if ns["type"] != "user"]
    del cfg["linux"]["uidMappings"], cfg["linux"]["gidMappings"]
    user_rt.write(cfg)
    user_rt.launcher_prefix = ["unshare", "--user", "--map-root-user", "--"]
    p = user_rt("run", user_rt.new_id())
    assert p.stdout.split() == ["0", "3"], p.stdout
    assert user_rt.state_dir.is_dir()


@needs_user
def test_additional_gids_need_a_gid_map_through_newgidmap(user_rt):
    cfg = rootless_config(["true"])
    cfg["process"]["user"]["additionalGids"] = [5]
    user_rt.write(cfg)
    p = user_rt("run", user_rt.new_id(), check=False)
    _fails_cleanly(user_rt, p, "process.user.additionalGids: [5] cannot be set", "newgidmap")


@needs_user
def test_idmapped_mount_is_refused(user_rt):
    cfg = rootless_config(["true"])
    cfg["mounts"].append({"destination": "/mnt", "type": "bind", "source": "rootfs/etc",
                          "options": ["bind", "idmap"]})
    user_rt.write(cfg)
    p = user_rt("run", user_rt.new_id(), check=False)
    _fails_cleanly(user_rt, p, 'mounts[6]: "/mnt" is an idmapped mount', "host's root")


@needs_user
def test_delegated_cgroup2_subtree(user_rt):
    """A cgroup2 subtree owned by the user (here the hybrid host's cgroup2 mount). The kernel
    lets a process move between cgroup2 cgroups only with write access to their common
    ancestor, so the caller sits inside the subtree, as a systemd user session does."""
    unified = CGROUP_ROOT / "unified"
    if not (unified / "cgroup.procs").exists():
        unified = CGROUP_ROOT
    if not (unified / "cgroup.subtree_control").exists():
        pytest.skip("no cgroup2 mount on this host")
    name = f"pyrt-rl-{os.urandom(3).hex()}"
    top = unified / name
    top.mkdir()
    session = top / "session"
    try:
        session.mkdir()
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(top)], check=True)
        cid = user_rt.new_id()
        cfg = rootless_config(["true"])
        cfg["linux"]["cgroupsPath"] = f"/{name}/{cid}"
        user_rt.write(cfg)
        p = user_rt("run", cid, check=False)  # from outside the subtree: the kernel says no
        _fails_cleanly(user_rt, p, "cannot add pid", f"{top}/{cid}: Permission denied",
                       "run from inside the delegated subtree")
        assert not (top / cid).exists()
        user_rt.root_prefix = ["sh", "-c", f'echo 0 > {session}/cgroup.procs && exec "$@"', "sh"]
        cid = user_rt.new_id()
        cfg = rootless_config(["sh", "-c", "grep ^0:: /proc/self/cgroup"])
        cfg["linux"]["cgroupsPath"] = f"/{name}/{cid}"
        user_rt.write(cfg)
        p = user_rt("run", cid)
        assert p.stdout == f"0::/{name}/{cid}\n", p.stdout
        assert not (top / cid).exists()  # delete removed it
    finally:
        for d in sorted((p for p in top.iterdir() if p.is_dir()), reverse=True):
            d.rmdir()
        top.rmdir()


@needs_user
def test_no_user_namespace_is_refused(user_rt):
    cfg = rootless_config(["true"])
    cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"] if ns["type"] != "user"]
    del cfg["linux"]["uidMappings"], cfg["linux"]["gidMappings"]
    user_rt.write(cfg)
    p = user_rt("run", user_rt.new_id(), check=False)
    _fails_cleanly(user_rt, p, "linux.namespaces", "a rootless container needs one")


@needs_user
def test_spec_rootless_then_run(user_rt):
    """The issue's first try: `spec --rootless`, then `run` with the default --root."""
    (user_rt.bundle / "config.json").unlink(missing_ok=True)
    user_rt("spec", "--rootless")
    cfg = json.loads((user_rt.bundle / "config.json").read_text())
    cfg["process"].update(terminal=False, args=["sh", "-c", "id -u; cat /proc/self/uid_map"])
    user_rt.write(cfg)
    p = user_rt("run", user_rt.new_id())
    assert [" ".join(ln.split()) for ln in p.stdout.splitlines()] == ["0", f"0 {PW.pw_uid} 1"]
