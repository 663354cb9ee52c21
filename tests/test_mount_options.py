"""Mount options beyond mount(2)'s flags, checked from inside a real container: the recursive
`r*` attributes (mount_setattr with AT_RECURSIVE) reach the submounts of an rbind, tmpcopyup
fills a fresh tmpfs with what it covers, and an unknown option is an error with its JSON path."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import is_pyruntime
from corehelp import assert_failed, mount_at, mountinfo, run_sh


@pytest.fixture
def tree(tmp_path):
    """A host dir holding a file and a tmpfs submount `sub` (itself holding a file)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "top").write_text("top")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0777", "pyrt-sub", str(src / "sub")],
                   check=True)
    try:
        (src / "sub" / "inner").write_text("inner\n")
        yield src
    finally:
        subprocess.run(["umount", "-l", str(src / "sub")], check=True)


def _bind(bundle, src, *options):
    bundle.config["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(src),
                                    "options": ["rbind", *options]})


def test_rro_reaches_the_submount(runtime, bundle, tree):
    _bind(bundle, tree, "rro")
    out = run_sh(runtime, bundle, "cat /mnt/sub/inner; "
                 "touch /mnt/new 2>/dev/null && echo top-writable; "
                 "touch /mnt/sub/new 2>/dev/null && echo sub-writable; echo done")
    assert out.split() == ["inner", "done"]


def test_plain_ro_covers_only_the_top(runtime, bundle, tree):
    """What the issue was about: `ro` on an rbind leaves the submount writable."""
    _bind(bundle, tree, "ro")
    out = run_sh(runtime, bundle, "touch /mnt/new 2>/dev/null && echo top-writable; "
                 "touch /mnt/sub/new 2>/dev/null && echo sub-writable; echo done")
    assert out.split() == ["sub-writable", "done"]


def test_recursive_flags_in_mountinfo(runtime, bundle, tree):
    _bind(bundle, tree, "rnosuid", "rnodev", "rnoexec", "rnosymfollow", "rnoatime",
          "rnodiratime")
    infos = mountinfo(run_sh(runtime, bundle, "cat /proc/self/mountinfo"))
    for target in ("/mnt", "/mnt/sub"):
        opts = mount_at(infos, target)["opts"]
        for flag in ("nosuid", "nodev", "noexec", "nosymfollow", "noatime", "nodiratime"):
            assert flag in opts, (target, opts)


def test_recursive_clearing_flags(runtime, bundle, tree):
    # per-mount flags (bind): a plain remount,ro would make the superblock itself read-only
    subprocess.run(["mount", "-o", "remount,bind,ro,nosuid,nodev,noexec,nosymfollow",
                    str(tree / "sub")], check=True)
    _bind(bundle, tree, "rrw", "rsuid", "rdev", "rexec", "rsymfollow", "rstrictatime")
    out = run_sh(runtime, bundle, "touch /mnt/sub/new 2>&1 && echo ok; cat /proc/self/mountinfo")
    assert out.startswith("ok\n")
    opts = mount_at(mountinfo(out.split("\n", 1)[1]), "/mnt/sub")["opts"]
    assert "rw" in opts and not {"ro", "nosuid", "nodev", "noexec", "nosymfollow",
                                 "relatime", "noatime"} & set(opts), opts
    # the host's own submount is untouched: the attributes went on the container's copy
    host = open("/proc/self/mountinfo").read()
    assert "ro" in mount_at(mountinfo(host), str(tree / "sub"))["opts"]


def test_recursive_on_a_new_filesystem(runtime, bundle):
    bundle.config["mounts"].append({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["rro", "rnoexec"]})
    out = run_sh(runtime, bundle, "touch /mnt/x 2>/dev/null || echo refused; "
                 "grep ' /mnt ' /proc/self/mountinfo")
    assert out.startswith("refused\n")
    assert {"ro", "noexec"} <= set(mountinfo(out.split("\n", 1)[1])[0]["opts"])


def test_tmpcopyup(runtime, bundle):
    etc = bundle.rootfs / "etc"
    (etc / "sub").mkdir(exist_ok=True)
    (etc / "sub" / "deep").write_text("deep\n")
    os.chmod(etc / "sub" / "deep", 0o640)
    os.chown(etc / "sub" / "deep", 0, 34)  # root: the default caps lack DAC_OVERRIDE
    os.symlink("sub/deep", etc / "link")
    bundle.config["mounts"].append({"destination": "/etc", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["tmpcopyup", "nosuid"]})
    out = run_sh(runtime, bundle, "grep -c root /etc/passwd; cat /etc/link; "
                 "stat -c '%a %u %g' /etc/sub/deep; readlink /etc/link; "
                 "echo new > /etc/sub/deep && cat /etc/sub/deep; "
                 "grep ' /etc ' /proc/self/mountinfo | grep -c tmpfs")
    lines = out.splitlines()
    assert int(lines[0]) >= 1
    assert lines[1:] == ["deep", "640 0 34", "sub/deep", "new", "1"]
    assert (etc / "sub" / "deep").read_text() == "deep\n"  # the copy took the write


def test_tmpcopyup_read_only(runtime, bundle):
    bundle.config["mounts"].append({"destination": "/etc", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["tmpcopyup", "ro", "mode=755"]})
    out = run_sh(runtime, bundle, "grep -c root /etc/passwd; touch /etc/x 2>/dev/null || "
                 "echo read-only; stat -c %a /etc")
    assert out.split()[1:] == ["read-only", "755"] and int(out.split()[0]) >= 1


def test_tmpfs_without_tmpcopyup_is_empty(runtime, bundle):
    bundle.config["mounts"].append({"destination": "/etc", "type": "tmpfs", "source": "tmpfs"})
    assert run_sh(runtime, bundle, "ls -A /etc | wc -l").strip() == "0"


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's error wording")
@pytest.mark.parametrize("options,problem", [
    (["rbind", "rrox"], '"rrox" is not a mount option'),
    (["rbind", "tmpcopyup"], '"tmpcopyup" needs a tmpfs mount'),
])
def test_bad_option_names_its_path(runtime, bundle, tmp_path, options, problem):
    _bind(bundle, tmp_path, *options[1:])
    bundle.write()
    n = len(bundle.config["mounts"]) - 1
    cid = runtime.new_id()
    r = runtime("create", "--bundle", bundle.path, cid, check=False, stdin=subprocess.DEVNULL)
    assert_failed(r, f"config.json: mounts[{n}].options[1]: {problem}")
    assert r.returncode == 1
    assert not (runtime.root / cid).exists()


def test_unknown_data_option_of_a_filesystem_fails(runtime, bundle):
    """Options of a new filesystem go to it as data: the kernel refuses what it does not know."""
    bundle.config["mounts"].append({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["rrox"]})
    bundle.config["process"]["args"] = ["true"]
    bundle.write()
    r = runtime.run(bundle, None, check=False)
    n = len(bundle.config["mounts"]) - 1
    assert_failed(r, f"mounts[{n}].options: 'rrox': tmpfs refused these options")


def test_filesystem_data_on_a_bind_is_ignored_with_a_warning(runtime, bundle, tmp_path):
    """runtime-tools' `mounts` program puts "mode=755" on a bind: the kernel reads no data for a
    bind and runc lets it through, so pyruntime runs it too, saying what it ignored."""
    _bind(bundle, tmp_path, "mode=755")
    bundle.config["process"]["args"] = ["sh", "-c", "grep -c ' /mnt ' /proc/self/mountinfo"]
    bundle.write()
    n = len(bundle.config["mounts"]) - 1
    r = runtime.run(bundle)
    assert r.stdout.strip() == "1"
    if is_pyruntime():
        assert f"config.json: mounts[{n}].options[1]: 'mode=755' ignored: a bind mount takes " \
               "no filesystem data" in r.stderr
