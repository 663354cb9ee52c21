"""The mounts the rootfs code would make for a typical config, and its errors, checked against
a recording fake of the syscall layer: no root, no rootfs, nothing mounted."""
from __future__ import annotations

import errno
import os
import stat

import pytest

from pyruntime.errors import ConfigError, RuntimeFailure
from pyruntime.linux import syscalls as sc
from pyruntime.oci import config
from pyruntime.oci.defaults import default_spec
from pyruntime.setup import rootfs

from .fakes import RecordingSys

NULL = (stat.S_IFCHR | 0o666, os.makedev(1, 3))
CGROUP = "/sys/fs/cgroup/unified/pyrt"
BIND = {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"]}


@pytest.fixture
def cfg(tmp_path):
    """`pyruntime spec`'s config (masked and read-only paths included) plus a read-only bind."""
    (tmp_path / "rootfs").mkdir()
    raw = default_spec(args=["true"], terminal=False)
    raw["mounts"].append(dict(BIND))
    return config.parse(raw, str(tmp_path))


@pytest.fixture
def fake(cfg):
    return RecordingSys({"/dev/null": NULL, cfg.root_path + "/dev/null": NULL,
                         "/proc/kcore": stat.S_IFREG | 0o400})


def set_up(cfg, sys, bundle="/bundle") -> None:
    """The rootfs steps of `create` and the init, in setup/init.py's order (without the hooks,
    terminal, hostname and sysctls that come between them)."""
    sources = rootfs.open_bind_sources(cfg, bundle, sys)  # `create`, before the fork
    rootfs.set_root_propagation(cfg.linux.rootfs_propagation, sys)
    rootfs.bind_rootfs(cfg.root_path, sys)
    root_fd = sys.open(cfg.root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    rootfs.mount_all(cfg, bundle, root_fd, {"": CGROUP}, "v2", sources, sys)
    for fd in sources.values():
        sys.close(fd)
    rootfs.create_devices(cfg, root_fd, False, sys)
    sys.close(root_fd)
    rootfs.pivot(cfg.root_path, sys)
    rootfs.reopen_dev_null(sys)
    rootfs.set_rootfs_propagation(cfg.linux.rootfs_propagation, sys)
    rootfs.readonly_dev(cfg, sys)
    if cfg.root_readonly:
        rootfs.readonly_root(sys)
    rootfs.readonly_paths(cfg.linux.readonly_paths, sys)
    rootfs.mask_paths(cfg.linux.masked_paths, sys)


def assert_message(e, start: str, strerror: str) -> None:
    """What the user reads: the config's JSON path first, the errno's text last (between them
    the failed call, as syscalls.py words it)."""
    assert str(e.value).startswith(start) and str(e.value).endswith(f": {strerror}"), e.value


def index(calls, name, pred=lambda args: True) -> int:
    return next(i for i, (n, args) in enumerate(calls) if n == name and pred(args))


def test_the_mount_plan_of_a_typical_config(cfg, fake):
    set_up(cfg, fake)
    root = cfg.root_path
    remount_bind = sc.MS_BIND | sc.MS_REMOUNT
    assert fake.mounts()[:9] == [
        (None, "/", None, sc.MS_SLAVE | sc.MS_REC, None),  # nothing goes back to the host
        (root, root, None, sc.MS_BIND | sc.MS_REC, None),
        ("proc", root + "/proc", "proc", 0, None),
        ("tmpfs", root + "/dev", "tmpfs", sc.MS_NOSUID | sc.MS_STRICTATIME, "mode=755,size=65536k"),
        ("devpts", root + "/dev/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
         "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ("shm", root + "/dev/shm", "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV,
         "mode=1777,size=65536k"),
        ("mqueue", root + "/dev/mqueue", "mqueue", sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV, None),
        ("sysfs", root + "/sys", "sysfs", sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV | sc.MS_RDONLY,
         None),
        ("cgroup2", root + "/sys/fs/cgroup", "cgroup2",
         sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV | sc.MS_RELATIME | sc.MS_RDONLY, None),
    ]
    calls = fake.calls
    # the bind: its source was taken (open_tree) before anything else, moved into place, and
    # only then made read-only, by a remount of the new mount (a bind ignores "ro")
    assert calls[0] == ("open_tree", (-100, "/srv/data", sc.OPEN_TREE_CLONE | sc.AT_RECURSIVE))
    moved = index(calls, "move_mount")
    assert fake.paths[calls[moved][1][2]] == root + "/data"
    ro = index(calls, "mount", lambda a: fake.where(a[1]) == root + "/data")
    assert moved < ro and calls[ro][1][3] == remount_bind | sc.MS_RDONLY
    # the root switch comes after every mount of config.mounts and the devices
    pivot = index(calls, "pivot_root")
    assert ro < pivot and index(calls, "mknod") < pivot
    assert [name for name, _ in calls[pivot + 1:pivot + 5]] == ["fchdir", "mount", "umount2",
                                                                 "chdir"]
    assert calls[pivot + 3] == ("umount2", (".", sc.MNT_DETACH))  # the old root, detached
    # after it: the read-only root, then read-only and masked paths, resolved in the new root
    after = fake.mounts(since=pivot)
    assert after[:3] == [(None, ".", None, sc.MS_SLAVE | sc.MS_REC, None),
                         (None, "/", None, remount_bind | sc.MS_RDONLY, None),
                         ("/proc/bus", "/proc/bus", None, sc.MS_BIND | sc.MS_REC, None)]
    assert (None, "/proc/sys", None, remount_bind | sc.MS_RDONLY | sc.MS_REC, None) in after
    masked = after[-len(cfg.linux.masked_paths):]
    assert [m[1] for m in masked] == cfg.linux.masked_paths
    assert ("/dev/null", "/proc/kcore", None, sc.MS_BIND, None) in masked  # a file
    assert ("tmpfs", "/proc/acpi", "tmpfs", sc.MS_RDONLY, None) in masked  # a directory
    assert [a[0] for _, a in fake.named("mknod")] == ["null", "zero", "full", "random",
                                                       "urandom", "tty"]
    assert fake.open_fds() == set()  # every fd the plan opened, it closed


def test_a_failed_mount_names_the_mount_and_the_errno(cfg, fake):
    fake.fail("mount", errno.EPERM, when=lambda src, tgt, fstype, *_: fstype == "mqueue")
    with pytest.raises(RuntimeFailure) as e:
        set_up(cfg, fake)
    assert_message(e, "mounts[4] (destination '/dev/mqueue'): mount failed: mount('mqueue', ",
                   "Operation not permitted")
    assert e.value.errno == errno.EPERM  # an attribute, not only words in the message
    assert not fake.named("pivot_root")


def test_a_filesystem_refusing_its_options(cfg, fake):
    fake.fail("mount", errno.EINVAL, when=lambda src, tgt, fstype, *_: src == "shm")
    with pytest.raises(RuntimeFailure) as e:
        set_up(cfg, fake)
    assert str(e.value) == ("mounts[3].options: 'mode=1777,size=65536k': tmpfs refused these "
                            "options (Invalid argument)")
    assert e.value.errno == errno.EINVAL


def test_a_missing_bind_source(cfg, fake):
    fake.fail("open_tree", errno.ENOENT)
    with pytest.raises(RuntimeFailure) as e:
        set_up(cfg, fake)
    assert_message(e, "mounts[7].source: '/srv/data': open_tree(", "no such file or directory")
    assert e.value.errno == errno.ENOENT
    assert fake.calls == [("open_tree", fake.calls[0][1])]  # nothing else was tried


def test_sysfs_without_the_network_namespace_binds_the_hosts(cfg, fake):
    fake.fail("mount", errno.EPERM, when=lambda src, tgt, fstype, *_: fstype == "sysfs")
    set_up(cfg, fake)
    sys_mounts = [m for m in fake.mounts() if m[1] == cfg.root_path + "/sys"]
    assert sys_mounts[1:] == [
        ("/sys", cfg.root_path + "/sys", None, sc.MS_BIND | sc.MS_REC, None),
        # the remount keeps the config's nosuid,noexec,nodev: the kernel locks them on the host's
        (None, cfg.root_path + "/sys", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
         | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, None)]


def test_a_failed_masked_path_names_the_field_and_the_errno(cfg, fake):
    fake.fail("mount", errno.EACCES, when=lambda src, tgt, *_: fake.where(tgt) == "/proc/kcore")
    with pytest.raises(RuntimeFailure) as e:
        set_up(cfg, fake)
    assert_message(e, "linux.maskedPaths: /proc/kcore: mount(", "Permission denied")


def test_a_masked_path_missing_in_the_rootfs_is_skipped(cfg, fake):
    fake.fail("openat2", errno.ENOENT, when=lambda fd, path, *_: path == "proc/scsi")
    set_up(cfg, fake)
    assert "/proc/scsi" not in [m[1] for m in fake.mounts()]
    assert "/proc/timer_list" in [m[1] for m in fake.mounts()]


def test_without_proc_masks_and_read_only_paths_go_by_fds(fake):
    """A config that mounts no proc at /proc: no mount(2) through /proc/self/fd (what the
    rootfs has there must never be followed). A masked file gets a clone of /dev/null, a
    masked dir a detached read-only tmpfs, a read-only path a clone of itself (with its
    submounts) made read-only; each is moved onto the O_PATH fd of its target."""
    fake.files["/secret"] = stat.S_IFREG | 0o600
    fake.answer("fsmount", lambda fd, attrs: 900)
    rootfs.readonly_paths(["/ro"], fake, proc=False)
    rootfs.mask_paths(["/secret", "/hidden"], fake, proc=False)
    assert not fake.named("mount")
    trees = fake.named("open_tree")
    assert [(fake.paths[a[0]], a[2]) for _, a in trees] == [
        ("/ro", sc.OPEN_TREE_CLONE | sc.AT_RECURSIVE | sc.AT_EMPTY_PATH),
        ("/dev/null", sc.OPEN_TREE_CLONE | sc.AT_EMPTY_PATH)]
    assert fake.named("mount_setattr")[0][1][2:4] == (sc.AT_EMPTY_PATH, sc.MOUNT_ATTR_RDONLY)
    assert fake.named("fsopen") == [("fsopen", ("tmpfs",))]
    assert fake.named("fsmount") == [("fsmount", (fake.named("fsconfig")[0][1][0],
                                                  sc.MOUNT_ATTR_RDONLY))]
    moves = [(a[0], fake.paths[a[2]]) for _, a in fake.named("move_mount")]
    assert [target for _, target in moves] == ["/ro", "/secret", "/hidden"]
    assert moves[2][0] == 900 and {tree for tree, _ in moves} <= fake.closed
    assert not fake.open_fds()


def test_a_dev_null_that_is_not_the_null_device(cfg, fake):
    fake.files["/dev/null"] = stat.S_IFREG | 0o666  # the rootfs's own file
    with pytest.raises(RuntimeFailure, match="^linux.maskedPaths: /dev/null in the container is "
                                             "not the null device$"):
        set_up(cfg, fake)
    assert not [m for m in fake.mounts() if m[1] in cfg.linux.masked_paths]


def test_proc_on_a_symlink_is_refused(cfg, fake):
    fake.files[cfg.root_path + "/proc"] = stat.S_IFLNK | 0o777
    with pytest.raises(ConfigError) as e:
        set_up(cfg, fake)
    assert str(e.value).startswith("config.json: mounts[0].destination: \"/proc\" is a symlink "
                                   "in the rootfs")
    assert not [m for m in fake.mounts() if m[2] == "proc"]


def test_a_dangling_symlink_is_followed_inside_the_rootfs(cfg, fake):
    """make_path: /data -> /host/dir creates <rootfs>/host/dir, never the host's."""
    root = cfg.root_path
    missing = {"data", "host", "host/dir"}
    fake.fail("openat2", errno.ENOENT, when=lambda fd, path, *_: path in missing)
    fake.answer("mkdir", lambda name, mode, dir_fd: missing.discard(
        os.path.relpath(f"{fake.paths[dir_fd]}/{name}", root)))

    def readlink(name, dir_fd):
        if name != "data":
            raise OSError(errno.EINVAL, "not a symlink")
        return "/host/dir"
    fake.answer("readlink", readlink)
    root_fd = fake.open(root, os.O_PATH)
    rootfs.make_path(root_fd, "/data", sys=fake)
    mkdirs = [(fake.paths[a[2]["dir_fd"]], a[0]) for _, a in fake.named("mkdir")]
    assert mkdirs == [(root, "host"), (root + "/host", "dir")]


def test_proc_from_a_context_made_in_the_inits_pid_namespace(cfg, fake):
    """A preparer outside the container's pid namespace (the warm server's, forked before the
    init) mounts /proc from the init's fsopen context: data options as fsconfig keys, flags
    as mount attributes, moved onto the target; both fds closed. Other mounts as before."""
    proc = next(m for m in cfg.mounts if m.type == "proc")
    proc.options = ["nosuid", "noexec", "nodev", "hidepid=invisible", "subset=pid"]
    fake.answer("fsmount", lambda fd, attrs: 901)
    root_fd = fake.open(cfg.root_path, os.O_PATH)
    rootfs.mount_all(cfg, "/bundle", root_fd, {}, "", sys=fake, proc_context=lambda: 900)
    assert fake.named("fsconfig") == [
        ("fsconfig", (900, sc.FSCONFIG_SET_STRING, "source", "proc")),
        ("fsconfig", (900, sc.FSCONFIG_SET_STRING, "hidepid", "invisible")),
        ("fsconfig", (900, sc.FSCONFIG_SET_STRING, "subset", "pid")),
        ("fsconfig", (900, sc.FSCONFIG_CMD_CREATE))]
    assert fake.named("fsmount") == [
        ("fsmount", (900, sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NOEXEC | sc.MOUNT_ATTR_NODEV))]
    moves = [c for c in fake.named("move_mount") if c[1][0] == 901]
    assert len(moves) == 1 and fake.paths[moves[0][1][2]] == cfg.root_path + "/proc"
    assert {900, 901} <= fake.closed
    assert not [c for c in fake.named("mount") if c[1][2] == "proc"]  # no mount(2) of proc
    assert [c for c in fake.named("mount") if c[1][2] == "sysfs"]  # the others: as before


def test_a_context_option_proc_refuses_is_named(cfg, fake):
    proc = next(m for m in cfg.mounts if m.type == "proc")
    proc.options = ["hidepid=nonsense"]
    fake.fail("fsconfig", errno.EINVAL, when=lambda fd, cmd, key=None, *a: key == "hidepid")
    root_fd = fake.open(cfg.root_path, os.O_PATH)
    with pytest.raises(RuntimeFailure, match="hidepid=nonsense.*proc refused these options"):
        rootfs.mount_all(cfg, "/bundle", root_fd, {}, "", sys=fake, proc_context=lambda: 900)
    assert 900 in fake.closed


# ---------------------------------------------------------------- exec.fifo, reopened

def _file(ino: int):
    from types import SimpleNamespace
    return SimpleNamespace(st_dev=7, st_ino=ino, st_mode=stat.S_IFIFO | 0o622, st_rdev=0)


def test_the_fifo_is_reopened_through_proc_when_the_link_names_it(fake):
    fake.answer("fstat", lambda fd: _file(42))
    fake.answer("stat", lambda path: _file(42))
    assert rootfs.magic_link(5, sys=fake) == (-1, "/proc/self/fd/5")
    assert not fake.named("fsopen", "fsmount")


@pytest.mark.parametrize("proc", ["missing", "the rootfs's own files"])
def test_without_proc_the_fifo_is_reopened_through_a_proc_of_its_own(fake, proc):
    """No proc at /proc: /proc/self/fd/5 is missing, or names some file of the rootfs's
    (never that file: a FIFO there would block the init): a proc instance made and
    mounted nowhere, whose fd the caller opens self/fd/5 at, and then closes."""
    fake.answer("fstat", lambda fd: _file(42))
    if proc == "missing":
        fake.fail("stat", errno.ENOENT)
    else:
        fake.answer("stat", lambda path: _file(43))
    fake.answer("fsopen", lambda fstype: 900)
    fake.answer("fsmount", lambda fd, attrs: 901)
    assert rootfs.magic_link(5, sys=fake) == (901, "self/fd/5")
    assert fake.named("fsopen") == [("fsopen", ("proc",))]
    assert fake.named("fsmount") == [
        ("fsmount", (900, sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV | sc.MOUNT_ATTR_NOEXEC))]
    assert not fake.named("move_mount", "mount")  # attached nowhere
    assert 900 in fake.closed and 901 not in fake.closed


def test_no_proc_of_its_own_is_a_named_failure(fake):
    fake.answer("fstat", lambda fd: _file(42))
    fake.fail("stat", errno.ENOENT)
    fake.answer("fsopen", lambda fstype: 900)
    fake.fail("fsmount", errno.EPERM)
    with pytest.raises(RuntimeFailure, match="no proc is mounted at /proc.*not permitted") as e:
        rootfs.magic_link(5, sys=fake)
    assert e.value.errno == errno.EPERM
    assert 900 in fake.closed


def test_proc_mounted_is_a_proc_at_slash_proc(cfg, tmp_path):
    assert rootfs.proc_mounted(cfg.mounts)
    raw = default_spec(args=["true"], terminal=False)
    raw["mounts"] = [m for m in raw["mounts"] if m["destination"] != "/proc"]
    assert not rootfs.proc_mounted(config.parse(raw, str(tmp_path)).mounts)
    raw["mounts"].append({"destination": "/proc/", "type": "proc", "source": "proc"})
    assert rootfs.proc_mounted(config.parse(raw, str(tmp_path)).mounts)
    raw["mounts"][-1] = {"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}
    assert not rootfs.proc_mounted(config.parse(raw, str(tmp_path)).mounts)
