"""The container init: namespaces, mounts, /dev, rootfs, process attributes. Each test runs a real
container and checks the effect from inside it (busybox sh), and from outside where it matters."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import Bundle, is_pyruntime
from corehelp import (NsHolder, assert_failed, cap_mask, mount_at, mountinfo, ns_link,
                      parse_status, proc_status, run_sh, set_sh, wait_file, wait_for)

def set_namespaces(bundle, *types, **paths):
    ns = [{"type": t} for t in types]
    for t, p in paths.items():
        ns.append({"type": t, "path": p})
    bundle.config["linux"]["namespaces"] = ns


def inside_ns_links(runtime, bundle) -> dict:
    script = "; ".join(f"echo {k}=$(readlink /proc/self/ns/{k})"
                       for k in ("pid", "net", "ipc", "uts", "mnt", "user", "cgroup"))
    out = run_sh(runtime, bundle, script)
    return dict(line.split("=", 1) for line in out.split())


@pytest.fixture
def userns_bundle(rootfs_template):
    """A bundle the root of a user namespace (host uid 100000) can reach: the pytest tmp dirs
    are 0700, so it lives in a traversable dir under /var/tmp, its rootfs owned by 100000."""
    d = Path(tempfile.mkdtemp(prefix="pyrt-userns-", dir="/var/tmp"))
    os.chmod(d, 0o711)
    b = Bundle(d / "bundle", rootfs_template)
    os.chown(b.rootfs, 100000, 100000)
    yield b
    shutil.rmtree(d, ignore_errors=True)


# ================================================================ namespaces

def test_new_namespaces_differ_from_host(runtime, bundle):
    set_namespaces(bundle, "pid", "network", "ipc", "uts", "mount", "cgroup")
    links = inside_ns_links(runtime, bundle)
    for kind in ("pid", "net", "ipc", "uts", "mnt", "cgroup"):
        assert links[kind] != ns_link(kind), kind
    assert links["user"] == ns_link("user")


def test_omitted_namespaces_are_shared_with_host(runtime, bundle):
    set_namespaces(bundle, "pid", "mount")
    bundle.config.pop("hostname", None)
    links = inside_ns_links(runtime, bundle)
    for kind in ("net", "ipc", "uts", "cgroup", "user"):
        assert links[kind] == ns_link(kind), kind
    assert links["pid"] != ns_link("pid")


def test_pid_namespace_process_is_pid_1(runtime, bundle):
    out = run_sh(runtime, bundle, "echo $$; ls /proc | grep -c '^[0-9]*$'")
    pid, nprocs = out.split()
    assert pid == "1"
    # only this sh and the ls/grep it forked are visible
    assert int(nprocs) <= 4


def test_network_namespace_has_only_loopback_and_it_is_up(runtime, bundle):
    out = run_sh(runtime, bundle, "ls /sys/class/net; cat /sys/class/net/lo/flags")
    *devs, flags = out.split()
    assert devs == ["lo"]
    assert int(flags, 16) & 0x1, f"lo is not UP: flags={flags}"


def test_uts_hostname_and_domainname(runtime, bundle):
    bundle.config["hostname"] = "box-one"
    bundle.config["domainname"] = "example.test"
    out = run_sh(runtime, bundle, "hostname; cat /proc/sys/kernel/domainname")
    if is_pyruntime():
        assert out.split() == ["box-one", "example.test"]
    else:
        assert out.split() == ["box-one", "(none)"]  # runc 1.1 ignores domainname
    assert os.uname().nodename != "box-one"


def test_user_namespace_with_mappings(runtime, userns_bundle):
    bundle = userns_bundle
    set_namespaces(bundle, "pid", "network", "ipc", "uts", "mount", "user")
    bundle.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    out = run_sh(runtime, bundle,
                 "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; readlink /proc/self/ns/user")
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["0", "100000", "65536"]
    assert lines[1] == ["0", "100000", "65536"]
    assert lines[2] == ["0"] and lines[3] == ["0"]
    assert lines[4][0] != ns_link("user")


def test_user_namespace_seen_from_outside(runtime, userns_bundle):
    bundle = userns_bundle
    set_namespaces(bundle, "pid", "ipc", "uts", "mount", "network", "user")
    bundle.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 1000}]
    bundle.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 1000}]
    set_sh(bundle, "sleep 30")
    cid = runtime.create(bundle)
    pid = runtime.state(cid)["pid"]
    assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", "100000", "1000"]
    assert Path(f"/proc/{pid}/gid_map").read_text().split() == ["0", "100000", "1000"]
    assert proc_status(pid)["Uid"].split()[0] == "100000"
    runtime("delete", "--force", cid)


def test_user_namespace_non_root_process_waits_as_its_own_user(runtime, userns_bundle):
    """In a user namespace, exec.fifo belongs to the process user's host id (1000 -> 101000),
    write-only: the created init waits as the exec shim under that id, and `start` runs it."""
    bundle = userns_bundle
    set_namespaces(bundle, "pid", "ipc", "uts", "mount", "network", "user")
    bundle.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.config["process"]["capabilities"] = {}
    out = bundle.rootfs / "o"
    out.mkdir()
    os.chown(out, 101000, 101000)
    set_sh(bundle, "id -u > /o/id; exec sleep 30")
    cid = runtime.create(bundle)
    pid = runtime.state(cid)["pid"]
    fifo = os.stat(runtime.root / cid / "exec.fifo")
    assert (fifo.st_uid, fifo.st_gid, fifo.st_mode & 0o777) == (101000, 101000, 0o200)
    wait_for(lambda: Path(f"/proc/{pid}/comm").read_text() == "pyruntime:INIT\n")
    assert proc_status(pid)["Uid"].split() == ["101000"] * 4
    runtime("start", cid)
    assert wait_file(out / "id") == "1000\n"
    runtime("delete", "--force", cid)


@pytest.mark.parametrize("option", ["bind", "rbind"])
def test_user_namespace_with_bind_sources_only_host_root_reaches(runtime, userns_bundle,
                                                                   tmp_path, option):
    """Bind sources under a dir only the host's root may enter (runc's userns.bats): the
    runtime takes them before the init enters the user namespace, so they still mount; and
    an exec sees them too."""
    bundle = userns_bundle
    set_namespaces(bundle, "pid", "network", "ipc", "uts", "mount", "user")
    bundle.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    for n in (1, 2):
        src = tmp_path / f"private-{n}" / "dir"
        src.mkdir(parents=True)
        (src / "foo.txt").write_text(f"secret {n}\n")
        (tmp_path / f"private-{n}").chmod(0o700)
        bundle.config["mounts"].append({"source": str(src), "destination": f"/tmp/mount-{n}",
                                        "options": [option]})
    set_sh(bundle, "cat /tmp/mount-1/foo.txt /tmp/mount-2/foo.txt; sleep 30")
    cid = runtime.create(bundle)
    runtime("start", cid)
    out = runtime("exec", cid, "cat", "/tmp/mount-1/foo.txt", "/tmp/mount-2/foo.txt",
                  stdin=subprocess.DEVNULL).stdout
    assert out == "secret 1\nsecret 2\n"
    runtime("delete", "--force", cid)


def test_user_namespace_bind_keeps_its_read_only_flag(runtime, userns_bundle, tmp_path):
    """A bind taken before the user namespace (open_tree) still gets its options' remount."""
    bundle = userns_bundle
    set_namespaces(bundle, "pid", "network", "ipc", "uts", "mount", "user")
    bundle.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    src = tmp_path / "shared"
    src.mkdir()
    os.chown(src, 100000, 100000)
    tmp_path.chmod(0o755)
    bundle.config["mounts"].append({"source": str(src), "destination": "/mnt/ro",
                                    "options": ["bind", "ro", "nosuid"]})
    out = run_sh(bundle=bundle, runtime=runtime,
                 script="touch /mnt/ro/x 2>/dev/null && echo writable || echo read-only; "
                        "grep ' /mnt/ro ' /proc/self/mountinfo | cut -d' ' -f6")
    state, opts = out.split()
    assert state == "read-only" and "ro" in opts.split(",") and "nosuid" in opts.split(",")
    assert not (src / "x").exists()


def test_cgroup_namespace_hides_the_cgroup_path(runtime, bundle):
    cid = runtime.new_id()
    bundle.config["linux"]["cgroupsPath"] = f"/pyrt-test/{cid}"
    set_namespaces(bundle, "pid", "network", "ipc", "uts", "mount", "cgroup")
    set_sh(bundle, "cat /proc/self/cgroup")
    out = runtime.run(bundle, cid).stdout
    lines = [line for line in out.splitlines() if line.split(":")[1] in ("memory", "pids", "devices")]
    assert lines, out
    for line in lines:
        assert line.split(":", 2)[2] == "/", out


def test_without_cgroup_namespace_the_cgroup_path_shows(runtime, bundle):
    cid = runtime.new_id()
    bundle.config["linux"]["cgroupsPath"] = f"/pyrt-test/{cid}"
    set_sh(bundle, "cat /proc/self/cgroup")
    out = runtime.run(bundle, cid).stdout
    mem = [line for line in out.splitlines() if line.split(":")[1] == "memory"]
    assert mem and mem[0].split(":", 2)[2] == f"/pyrt-test/{cid}", out


def test_time_namespace_with_offsets(runtime, bundle):
    set_namespaces(bundle, "pid", "network", "ipc", "uts", "mount", "time")
    bundle.config["linux"]["timeOffsets"] = {"monotonic": {"secs": 86400 * 1000, "nanosecs": 0},
                                             "boottime": {"secs": 86400 * 2000, "nanosecs": 0}}
    set_sh(bundle, "readlink /proc/self/ns/time; cat /proc/self/timens_offsets; cat /proc/uptime")
    if not is_pyruntime():
        # runc 1.1 does not know the time namespace
        assert_failed(runtime.run(bundle, check=False))
        return
    out = runtime.run(bundle).stdout.splitlines()
    assert out[0] != ns_link("time")
    offsets = {line.split()[0]: int(line.split()[1]) for line in out[1:3]}
    assert offsets == {"monotonic": 86400 * 1000, "boottime": 86400 * 2000}
    assert float(out[3].split()[0]) > 86400 * 2000


def test_join_namespaces_by_path(runtime, bundle):
    with NsHolder("--net", "--uts", "--ipc", setup="hostname helperhost") as h:
        bundle.config.pop("hostname", None)
        set_namespaces(bundle, "pid", "mount",
                       network=h.path("net"), uts=h.path("uts"), ipc=h.path("ipc"))
        out = run_sh(runtime, bundle,
                     "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; "
                     "readlink /proc/self/ns/uts")
        host, net, ipc, uts = out.split()
        assert host == "helperhost"
        assert net == os.readlink(h.path("net"))
        assert ipc == os.readlink(h.path("ipc"))
        assert uts == os.readlink(h.path("uts"))
        assert net != ns_link("net")


def test_join_namespace_path_of_wrong_type_fails(runtime, bundle):
    with NsHolder("--uts") as h:
        set_namespaces(bundle, "pid", "mount", "ipc", "uts", network=h.path("uts"))
        bundle.write()
        cid = runtime.new_id()
        proc = runtime("create", "--bundle", bundle.path, cid, check=False, stdin=subprocess.DEVNULL)
        assert_failed(proc)
        assert not (runtime.root / cid).exists()


def test_join_namespace_path_missing_fails(runtime, bundle):
    set_namespaces(bundle, "pid", "mount", "ipc", "uts", network="/proc/999999999/ns/net")
    bundle.write()
    cid = runtime.new_id()
    proc = runtime("create", "--bundle", bundle.path, cid, check=False, stdin=subprocess.DEVNULL)
    assert_failed(proc)
    assert not (runtime.root / cid).exists()


# ================================================================ mounts

def test_bind_mount_ro_and_rw(runtime, bundle, tmp_path):
    ro, rw = tmp_path / "ro-src", tmp_path / "rw-src"
    ro.mkdir()
    rw.mkdir()
    (ro / "hello").write_text("from-host\n")
    bundle.config["mounts"] += [
        {"destination": "/data/ro", "type": "bind", "source": str(ro), "options": ["bind", "ro"]},
        {"destination": "/data/rw", "type": "bind", "source": str(rw), "options": ["bind", "rw"]},
    ]
    out = run_sh(runtime, bundle,
                 "cat /data/ro/hello; touch /data/ro/x 2>/dev/null && echo ro-writable; "
                 "echo written > /data/rw/out; grep -E ' /data/(ro|rw) ' /proc/self/mountinfo")
    lines = out.splitlines()
    assert lines[0] == "from-host"
    assert "ro-writable" not in out
    infos = mountinfo("\n".join(lines[1:]))
    assert "ro" in mount_at(infos, "/data/ro")["opts"]
    assert "rw" in mount_at(infos, "/data/rw")["opts"]
    assert (rw / "out").read_text() == "written\n"
    assert not (ro / "x").exists()


def test_bind_vs_rbind_submounts(runtime, bundle, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(src / "sub")], check=True)
    try:
        (src / "sub" / "marker").write_text("submount\n")
        bundle.config["mounts"] += [
            {"destination": "/b", "type": "bind", "source": str(src), "options": ["bind"]},
            {"destination": "/rb", "type": "bind", "source": str(src), "options": ["rbind"]},
        ]
        out = run_sh(runtime, bundle, "cat /b/sub/marker 2>/dev/null || echo none; cat /rb/sub/marker")
        assert out.split() == ["none", "submount"]
    finally:
        subprocess.run(["umount", "-l", str(src / "sub")], check=True)


def test_mounts_apply_in_config_order(runtime, bundle, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("bound\n")
    bundle.config["mounts"] += [
        {"destination": "/stack", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/stack/inner", "type": "bind", "source": str(src), "options": ["rbind"]},
        {"destination": "/stack/inner", "type": "tmpfs", "source": "tmpfs", "options": ["size=2m"]},
    ]
    out = run_sh(runtime, bundle,
                 "ls /stack/inner | wc -l; grep ' /stack' /proc/self/mountinfo")
    first, rest = out.split("\n", 1)
    assert first.strip() == "0"  # the last tmpfs hides the bind
    infos = [m for m in mountinfo(rest) if m["target"].startswith("/stack")]
    assert [(m["target"], m["fstype"]) for m in infos] == [
        ("/stack", "tmpfs"), ("/stack/inner", infos[1]["fstype"]), ("/stack/inner", "tmpfs")]
    assert infos[1]["fstype"] != "tmpfs"
    assert infos[1]["parent"] == infos[0]["id"] and infos[2]["parent"] == infos[1]["id"]


def test_tmpfs_options(runtime, bundle):
    bundle.config["mounts"].append(
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["size=1m", "mode=710", "nosuid", "nodev", "noexec"]})
    out = run_sh(runtime, bundle, "stat -c %a /scratch; grep ' /scratch ' /proc/self/mountinfo")
    mode, line = out.split("\n", 1)
    assert mode == "710"
    m = mount_at(mountinfo(line), "/scratch")
    assert m["fstype"] == "tmpfs"
    assert "size=1024k" in m["super"]
    assert {"nosuid", "nodev", "noexec"} <= set(m["opts"])


@pytest.mark.parametrize("prop,expect", [("shared", "shared:"), ("private", None), ("rshared", "shared:")])
def test_mount_propagation_option(runtime, bundle, tmp_path, prop, expect):
    src = tmp_path / "src"
    src.mkdir()
    bundle.config["mounts"].append(
        {"destination": "/p", "type": "bind", "source": str(src), "options": ["rbind", prop]})
    out = run_sh(runtime, bundle, "grep ' /p ' /proc/self/mountinfo")
    optional = " ".join(mount_at(mountinfo(out), "/p")["optional"])
    if expect:
        assert expect in optional
    else:
        assert "shared:" not in optional and "master:" not in optional


def test_mount_target_symlink_stays_inside_rootfs(runtime, bundle, tmp_path):
    outside = tmp_path / "outside"       # a real host dir the symlinks point at
    outside.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "marker").write_text("inside\n")
    os.symlink(str(outside), bundle.rootfs / "abs-link")
    os.symlink("../../../../../../../../.." + str(outside), bundle.rootfs / "rel-link")
    bundle.config["mounts"] += [
        {"destination": "/abs-link", "type": "bind", "source": str(src), "options": ["rbind"]},
        {"destination": "/rel-link/x", "type": "tmpfs", "source": "tmpfs", "options": ["size=64k"]},
    ]
    out = run_sh(runtime, bundle, f"cat {outside}/marker; grep -c ' {outside}/x ' /proc/self/mountinfo")
    assert out.split() == ["inside", "1"]
    assert list(outside.iterdir()) == []           # nothing created or mounted on the host side
    assert (bundle.rootfs / str(outside).lstrip("/")).is_dir()


# ================================================================ /dev

def test_default_dev_nodes_and_symlinks(runtime, bundle):
    nodes = "null zero full random urandom tty"
    out = run_sh(runtime, bundle,
                 f"for n in {nodes}; do stat -c '%n %F %t:%T %a' /dev/$n; done; "
                 "for l in fd stdin stdout stderr ptmx; do echo /dev/$l $(readlink /dev/$l); done; "
                 "grep -E ' /dev/(shm|pts|mqueue) ' /proc/self/mountinfo; "
                 "echo x > /dev/null && head -c 5 /dev/zero | wc -c && head -c 7 /dev/urandom | wc -c")
    lines = out.splitlines()
    expect = {"null": "1:3", "zero": "1:5", "full": "1:7", "random": "1:8", "urandom": "1:9", "tty": "5:0"}
    for line, (name, majmin) in zip(lines[:6], expect.items()):
        parts = line.split()
        assert parts[0] == f"/dev/{name}"
        assert "character special" in line, line
        mm = parts[-2]
        assert tuple(int(x, 16) for x in mm.split(":")) == tuple(int(x) for x in majmin.split(":")), line
        assert parts[-1] == "666", line
    links = dict(line.split() for line in lines[6:11])
    assert links == {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
                     "/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2",
                     "/dev/ptmx": "pts/ptmx"}
    infos = mountinfo("\n".join(lines[11:-2]))
    assert mount_at(infos, "/dev/shm")["fstype"] == "tmpfs"
    assert mount_at(infos, "/dev/pts")["fstype"] == "devpts"
    assert mount_at(infos, "/dev/mqueue")["fstype"] == "mqueue"
    assert lines[-2:] == ["5", "7"]


def test_readonly_dev_still_gets_its_submounts(runtime, bundle):
    """/dev with "ro": its submounts and nodes go in first, then it is made read-only."""
    for m in bundle.config["mounts"]:
        if m["destination"] == "/dev":
            m["options"].append("ro")
    out = run_sh(runtime, bundle, "grep -E '^[a-z]+ /dev(/pts|/shm)? ' /proc/mounts; "
                 "touch /dev/new 2>&1 || echo ro-dev; echo x > /dev/shm/x && echo shm-rw; "
                 "echo x > /dev/null && test -c /dev/zero && echo nodes")
    mounts = {line.split()[1]: line.split()[3].split(",") for line in out.splitlines()
              if line.startswith(("tmpfs ", "devpts ", "shm "))}
    assert "ro" in mounts["/dev"] and "nosuid" in mounts["/dev"], out
    assert "rw" in mounts["/dev/pts"] and "rw" in mounts["/dev/shm"], out
    assert "Read-only file system" in out and "ro-dev" in out
    assert "shm-rw" in out and "nodes" in out


def test_linux_devices_node_stays_denied_by_the_device_cgroup(runtime, bundle):
    """linux.devices makes the node; access is what linux.resources.devices allows. A node
    the config denies stays denied, also after an `update` (which rewrites the cgroup)."""
    bundle.config["linux"]["devices"] = [{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]
    bundle.config["linux"]["cgroupsPath"] = f"/pyrt-test/{runtime.new_id()}"
    set_sh(bundle, "sleep 60")
    cid = runtime.create(bundle)
    runtime("start", cid)
    probe = ("test -c /dev/kmsg && echo node; head -c1 /dev/kmsg >/dev/zero 2>&1 || echo r-denied; "
             "(echo x >/dev/kmsg) 2>/dev/zero || echo w-denied")
    for when in ("created", "updated"):
        out = runtime("exec", cid, "sh", "-c", probe, stdin=subprocess.DEVNULL).stdout.split()
        assert out == ["node", "r-denied", "w-denied"], (when, out)
        runtime("update", "--pids-limit", "42", cid)
    runtime("delete", "--force", cid)


@pytest.mark.parametrize("allow", [False, True])
def test_console_char_5_1_is_not_a_default_device(runtime, bundle, allow):
    """runc's default device rules leave out /dev/console (5:1): a node of it stays denied
    unless linux.resources.devices allows it."""
    bundle.config["linux"]["devices"] = [{"path": "/dev/xconsole", "type": "c", "major": 5, "minor": 1}]
    if allow:
        bundle.config["linux"]["resources"]["devices"].append(
            {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "r"})
    # a subshell: the container's session leader must not make the host console its tty
    out = run_sh(runtime, bundle, "(: </dev/xconsole) 2>&1 && echo opened; true")
    assert ("opened" in out) == allow, out
    if not allow:
        assert "not permitted" in out, out


def test_linux_devices_path_drops_its_default_rule(runtime, bundle):
    """As with runc: linux.devices naming a standard node (/dev/full) replaces it, default
    allow rule included, so it is as reachable as linux.resources.devices says; the other
    defaults stay."""
    bundle.config["linux"]["devices"] = [{"path": "/dev/full", "type": "c", "major": 1, "minor": 7}]
    out = run_sh(runtime, bundle, "(echo x >/dev/full) 2>&1; echo x >/dev/null && echo null-ok")
    assert "not permitted" in out and "null-ok" in out, out


def test_linux_devices(runtime, bundle):
    bundle.config["linux"]["devices"] = [
        {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 1000, "gid": 1001},
        {"path": "/dev/myloop", "type": "b", "major": 7, "minor": 200, "fileMode": 0o600, "uid": 0, "gid": 0},
        {"path": "/dev/sub/myfifo", "type": "p", "fileMode": 0o620},
    ]
    bundle.config["linux"]["resources"]["devices"].append(
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
    out = run_sh(runtime, bundle,
                 "for d in /dev/mynull /dev/myloop /dev/sub/myfifo; do "
                 "stat -c '%n|%F|%t:%T|%a|%u|%g' $d; done; echo hi > /dev/mynull && echo wrote",
                 user={"uid": 1000, "gid": 1001})
    rows = [line.split("|") for line in out.splitlines()[:3]]
    assert rows[0] == ["/dev/mynull", "character special file", "1:3", "640", "1000", "1001"]
    assert rows[1][:4] == ["/dev/myloop", "block special file", "7:c8", "600"]
    assert rows[2][1] == "fifo" and rows[2][3] == "620"
    assert out.splitlines()[3] == "wrote"


def test_dev_is_fresh_tmpfs(runtime, bundle):
    out = run_sh(runtime, bundle, "ls /dev")
    names = set(out.split())
    assert "vda" not in names and "kmsg" not in names and "mem" not in names
    assert {"null", "zero", "shm", "pts"} <= names


# ================================================================ rootfs

def test_no_pivot(runtime, bundle):
    out = run_sh(runtime, bundle, "cat /etc/group | head -1; hostname; ls /", "--no-pivot")
    lines = out.split()
    assert lines[0] == "root:x:0:" and lines[1] == "pyruntime"
    assert "bin" in lines and "pytest-of-root" not in out


@pytest.mark.parametrize("flag", [["--no-pivot"], []])
def test_no_pivot_leaves_no_bare_proc_to_mount_from(runtime, bundle, flag):
    """The kernel allows a new procfs only where a full, uncovered one is visible: under
    --no-pivot's chroot the host's /proc stays in the mount namespace, and a container that
    makes itself a user namespace (and so CAP_SYS_ADMIN) must still not mount an unmasked
    procfs from it, nor see host mounts."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETFCAP"]
    bundle.config["process"]["capabilities"] = {k: caps for k in ("bounding", "effective",
                                                                  "permitted")}
    out = run_sh(runtime, bundle, "unshare -mrpf sh -c 'mount -t proc none /proc && "
                 "echo MOUNTED' 2>&1; echo rc=$?", *flag)
    assert "MOUNTED" not in out and "rc=1" in out, out
    assert "permission denied" in out.lower(), out


def test_pivot_root_hides_host(runtime, bundle):
    out = run_sh(runtime, bundle, "cat /proc/self/mountinfo")
    targets = [m["target"] for m in mountinfo(out)]
    assert "/" in targets
    assert not any("pytest" in t for t in targets), targets


def test_root_readonly(runtime, bundle):
    bundle.config["root"]["readonly"] = True
    out = run_sh(runtime, bundle,
                 "touch /newfile 2>&1 || echo ro-ok; echo x > /dev/shm/f && echo shm-rw; "
                 "awk '$5 == \"/\"' /proc/self/mountinfo")
    assert "ro-ok" in out and "shm-rw" in out
    assert "Read-only file system" in out
    assert "ro" in mountinfo(out.splitlines()[-1])[0]["opts"]
    assert not (bundle.rootfs / "newfile").exists()


@pytest.mark.parametrize("prop", ["shared", "private", "slave"])
def test_rootfs_propagation(runtime, bundle, prop):
    bundle.config["linux"]["rootfsPropagation"] = prop
    out = run_sh(runtime, bundle, "awk '$5 == \"/\"' /proc/self/mountinfo")
    optional = mountinfo(out)[0]["optional"]
    if prop == "shared" and not is_pyruntime():
        assert optional == [], out  # runc 1.1 leaves "/" private after pivot_root
    elif prop == "shared":
        assert any(o.startswith("shared:") for o in optional), out
    elif prop == "private":
        assert optional == [], out
    else:
        assert not any(o.startswith("shared:") for o in optional), out


def test_masked_paths(runtime, bundle):
    (bundle.rootfs / "secret-dir").mkdir()
    (bundle.rootfs / "secret-dir" / "a").write_text("hidden")
    (bundle.rootfs / "etc" / "secret").write_text("hidden")
    bundle.config["linux"]["maskedPaths"] += ["/secret-dir", "/etc/secret", "/does/not/exist"]
    out = run_sh(runtime, bundle,
                 "wc -c < /proc/timer_list; wc -c < /proc/keys; ls -A /sys/firmware | wc -l; "
                 "ls -A /secret-dir | wc -l; wc -c < /etc/secret; "
                 "touch /secret-dir/b 2>/dev/null && echo writable; true")
    assert out.split() == ["0", "0", "0", "0", "0"]
    assert (bundle.rootfs / "etc" / "secret").read_text() == "hidden"


def test_readonly_paths(runtime, bundle):
    (bundle.rootfs / "rodir").mkdir()
    bundle.config["linux"]["readonlyPaths"] += ["/rodir"]
    out = run_sh(runtime, bundle,
                 "touch /rodir/x 2>/dev/null && echo rodir-writable; "
                 "echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo procsys-writable; "
                 "touch /tmp/x && echo tmp-writable; grep -E ' /(rodir|proc/sys) ' /proc/self/mountinfo")
    lines = out.splitlines()
    assert lines[0] == "tmp-writable"
    infos = mountinfo("\n".join(lines[1:]))
    assert "ro" in mount_at(infos, "/rodir")["opts"]
    assert "ro" in mount_at(infos, "/proc/sys")["opts"]


# ================================================================ kernel settings

def test_sysctl(runtime, bundle):
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1",
                                        "net.ipv4.ping_group_range": "0 2147483647"}
    out = run_sh(runtime, bundle, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced "
                                  "/proc/sys/net/ipv4/ping_group_range")
    assert out.split() == ["1", "1", "0", "2147483647"]


def test_sysctl_outside_a_namespace_is_refused(runtime, bundle):
    before = Path("/proc/sys/vm/swappiness").read_text()
    bundle.config["linux"]["sysctl"] = {"vm.swappiness": "7"}
    bundle.write()
    cid = runtime.new_id()
    proc = runtime("create", "--bundle", bundle.path, cid, check=False, stdin=subprocess.DEVNULL)
    assert_failed(proc, "vm.swappiness")
    assert Path("/proc/sys/vm/swappiness").read_text() == before


def test_rlimits(runtime, bundle):
    bundle.config["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654},
        {"type": "RLIMIT_NPROC", "soft": 500, "hard": 600},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 4096},
        {"type": "RLIMIT_FSIZE", "soft": 2**64 - 1, "hard": 2**64 - 1},  # RLIM_INFINITY
    ]
    out = run_sh(runtime, bundle, "cat /proc/self/limits")
    limits = {}
    for line in out.splitlines()[1:]:
        m = re.match(r"(.+?)\s{2,}(\S+)\s+(\S+)", line)
        limits[m.group(1)] = (m.group(2), m.group(3))
    assert limits["Max open files"] == ("321", "654")
    assert limits["Max processes"] == ("500", "600")
    assert limits["Max core file size"] == ("0", "4096")
    assert limits["Max file size"] == ("unlimited", "unlimited")


def test_an_rlimit_above_the_runtimes_own_hard_limit_fails_clearly(runtime, bundle):
    """Raising a hard limit needs CAP_SYS_RESOURCE, which this machine's bounding set lacks:
    the failure names the limit and the reason, as one line."""
    bounding = next(ln for ln in open("/proc/self/status") if ln.startswith("CapBnd:"))
    if int(bounding.split()[1], 16) >> 24 & 1:  # CAP_SYS_RESOURCE
        pytest.skip("the runtime holds CAP_SYS_RESOURCE here: any hard limit can be raised")
    hard = int(open("/proc/self/limits").read().split("Max processes")[1].split()[1])
    bundle.config["process"]["rlimits"] = [{"type": "RLIMIT_NPROC", "soft": 10, "hard": hard + 1}]
    bundle.write()
    proc = runtime("run", "--bundle", bundle.path, runtime.new_id(), check=False,
                   stdin=subprocess.DEVNULL)
    assert_failed(proc)
    if is_pyruntime():
        assert f"process.rlimits: RLIMIT_NPROC soft=10 hard={hard + 1}: cannot set: " \
               "Operation not permitted" in proc.stderr, proc.stderr


def test_oom_score_adj(runtime, bundle):
    bundle.config["process"]["oomScoreAdj"] = 432
    assert run_sh(runtime, bundle, "cat /proc/self/oom_score_adj").strip() == "432"


def test_personality(runtime, bundle):
    bundle.config["linux"]["personality"] = {"domain": "LINUX32"}
    out = run_sh(runtime, bundle, "uname -m").strip()
    if is_pyruntime():
        assert out in ("i686", "i386")
    else:
        assert out == os.uname().machine  # runc 1.1 ignores linux.personality


def test_new_session_keyring(runtime, bundle):
    set_sh(bundle, "sleep 30")
    cid = runtime.create(bundle)
    keys = Path("/proc/keys").read_text()
    # runc names the session keyring after the container id (_ses.<id>)
    assert re.search(rf"keyring\s+\S*{re.escape(cid)}\b", keys), keys
    runtime("delete", "--force", cid)


def test_no_new_keyring(runtime, bundle):
    set_sh(bundle, "sleep 30")
    cid = runtime.create(bundle, None, "--no-new-keyring")
    assert cid not in Path("/proc/keys").read_text()
    runtime("delete", "--force", cid)


# ================================================================ process

def test_user_groups_umask(runtime, bundle):
    out = run_sh(runtime, bundle,
                 "grep -E '^(Uid|Gid|Groups):' /proc/self/status; umask; "
                 "touch /tmp/made && stat -c '%a %u %g' /tmp/made",
                 user={"uid": 1000, "gid": 1001, "additionalGids": [10, 20], "umask": 0o027})
    lines = out.splitlines()
    st = parse_status("\n".join(lines[:3]))
    assert st["Uid"].split() == ["1000"] * 4
    assert st["Gid"].split() == ["1001"] * 4
    assert sorted(st["Groups"].split()) == ["10", "20"]
    assert lines[3] == "0027"
    assert lines[4] == "640 1000 1001"


def test_root_user_has_no_supplementary_groups(runtime, bundle):
    out = run_sh(runtime, bundle, "grep -E '^(Uid|Gid|Groups):' /proc/self/status")
    st = parse_status(out)
    assert st["Uid"].split() == ["0"] * 4
    assert st["Groups"] == ""


def _caps_inside(runtime, bundle, **process) -> dict:
    out = run_sh(runtime, bundle, "grep -E '^(Cap|NoNewPrivs)' /proc/self/status", **process)
    st = parse_status(out)
    return {k: int(v, 16) if k.startswith("Cap") else v for k, v in st.items()}


def test_capabilities_root(runtime, bundle):
    names = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    caps = _caps_inside(runtime, bundle, capabilities={
        "bounding": names, "effective": names, "permitted": names})
    m = cap_mask(names)
    assert caps["CapBnd"] == m
    assert caps["CapEff"] == m
    assert caps["CapPrm"] == m
    assert caps["CapInh"] == 0   # CVE-2022-29162: nothing inheritable unless asked
    assert caps["CapAmb"] == 0


def test_capabilities_ambient_for_non_root(runtime, bundle):
    names = ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
    caps = _caps_inside(runtime, bundle, user={"uid": 1000, "gid": 1000}, capabilities={
        k: names for k in ("bounding", "effective", "permitted", "inheritable", "ambient")})
    m = cap_mask(names)
    for k in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert caps[k] == m, (k, hex(caps[k]))


def test_capabilities_non_root_without_ambient(runtime, bundle):
    names = ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
    caps = _caps_inside(runtime, bundle, user={"uid": 1000, "gid": 1000}, capabilities={
        k: names for k in ("bounding", "effective", "permitted")})
    assert caps["CapBnd"] == cap_mask(names)
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapInh"] == caps["CapAmb"] == 0


@pytest.mark.parametrize("nnp", [True, False])
def test_no_new_privileges(runtime, bundle, nnp):
    caps = _caps_inside(runtime, bundle, noNewPrivileges=nnp)
    assert caps["NoNewPrivs"] == ("1" if nnp else "0")


def test_cwd_env_and_path_lookup(runtime, bundle):
    (bundle.rootfs / "work").mkdir()
    (bundle.rootfs / "opt" / "tools").mkdir(parents=True)
    tool = bundle.rootfs / "opt" / "tools" / "only-in-rootfs"
    tool.write_text("#!/bin/sh\necho tool-ran \"$@\"\n")
    tool.chmod(0o755)
    bundle.config["process"]["cwd"] = "/work"
    bundle.config["process"]["env"] = ["PATH=/opt/tools:/bin", "FOO=bar baz", "EMPTY="]
    bundle.config["process"]["args"] = ["only-in-rootfs", "arg one"]
    bundle.write()
    assert runtime.run(bundle).stdout == "tool-ran arg one\n"
    out = run_sh(runtime, bundle, "pwd; readlink /proc/self/cwd; echo \"$FOO\"; env | grep -c '^EMPTY=$'")
    assert out.splitlines() == ["/work", "/work", "bar baz", "1"]


def test_env_does_not_leak_from_runtime(runtime, bundle):
    set_sh(bundle, "env")
    env = dict(os.environ, PYRT_SHOULD_NOT_LEAK="1")
    out = runtime.run(bundle, env=env).stdout
    assert "PYRT_SHOULD_NOT_LEAK" not in out
    assert "TERM=xterm" in out


def test_only_stdio_fds_reach_the_process(runtime, bundle, tmp_path):
    # give the runtime stray fds: they must all be closed in the container
    r, w = os.pipe()
    f = open(tmp_path / "stray", "w")
    try:
        set_sh(bundle, "ls /proc/$$/fd; readlink /proc/$$/cwd")
        out = runtime.run(bundle, pass_fds=(r, w, f.fileno())).stdout
    finally:
        os.close(r)
        os.close(w)
        f.close()
    *fds, cwd = out.split()
    assert sorted(fds) == ["0", "1", "2"], out
    assert cwd == "/"


def test_defaults_umask_home_and_missing_cwd_created(runtime, bundle):
    # runc's behaviour: umask 0022 unless set, HOME from /etc/passwd when env lacks it, and a
    # missing cwd is created inside the rootfs
    out = run_sh(runtime, bundle, "umask; echo HOME=$HOME; pwd", cwd="/new/dir")
    assert out.splitlines() == ["0022", "HOME=/root", "/new/dir"]
    assert (bundle.rootfs / "new" / "dir").is_dir()


def test_stdio_on_the_hosts_dev_null_is_reopened_inside(runtime, bundle):
    """As runc: fds 0-2 on the host's /dev/null become the container's /dev/null (a file on a
    host mount pins the process to it; CRIU cannot dump that), and stay usable both ways."""
    bundle.config["process"]["args"] = [
        "sh", "-c", "grep mnt_id /proc/self/fdinfo/0 | tr -dc 0-9; echo;"
        " awk '$5 == \"/dev\" {print $1}' /proc/self/mountinfo; echo x >&2; read -r line; echo rc=$?"]
    bundle.write()
    with open(os.devnull, "r+") as null:
        proc = runtime.run(bundle, stdin=null, stdout=subprocess.PIPE, stderr=null,
                           capture_output=False)
    fd0_mount, dev_mount, rc = proc.stdout.split()
    assert fd0_mount == dev_mount  # the container's /dev, not the host's devtmpfs
    assert rc == "rc=1"  # still reads EOF: /dev/null
