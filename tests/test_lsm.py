"""AppArmor and SELinux labels: applied where the host has the LSM, runc's behaviour where not."""
from __future__ import annotations

import subprocess

import pytest

from conftest import is_pyruntime
from corehelp import assert_failed
from pyruntime.linux import lsm


def fake_proc(tmp_path, apparmor_dir: bool):
    attr = tmp_path / "proc" / "thread-self" / "attr"
    (attr / "apparmor").mkdir(parents=True) if apparmor_dir else attr.mkdir(parents=True)
    for f in ([attr / "apparmor" / "exec"] if apparmor_dir else []) + [attr / "exec"]:
        f.write_text("")
    return tmp_path / "proc", attr


@pytest.mark.parametrize("apparmor_dir", [True, False])
def test_apparmor_profile_is_written_for_the_next_execve(tmp_path, apparmor_dir):
    proc, attr = fake_proc(tmp_path, apparmor_dir)
    lsm.set_exec_labels("docker-default", "", proc=str(proc))
    target = attr / "apparmor" / "exec" if apparmor_dir else attr / "exec"
    assert target.read_text() == "exec docker-default"


def test_selinux_label_written_only_where_selinux_is_on(tmp_path, monkeypatch):
    proc, attr = fake_proc(tmp_path, False)
    monkeypatch.setattr(lsm, "selinux_enabled", lambda: False)
    lsm.set_exec_labels("", "system_u:system_r:container_t:s0", proc=str(proc))
    assert (attr / "exec").read_text() == ""
    assert lsm.mount_context("system_u:object_r:container_file_t:s0") is None
    monkeypatch.setattr(lsm, "selinux_enabled", lambda: True)
    lsm.set_exec_labels("", "system_u:system_r:container_t:s0", proc=str(proc))
    assert (attr / "exec").read_text() == "system_u:system_r:container_t:s0"
    assert lsm.mount_context("l") == 'context="l"'


def test_no_procfs_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="process.apparmorProfile.*is /proc mounted"):
        lsm.set_exec_labels("p", "", proc=str(tmp_path / "none"))


@pytest.mark.skipif(lsm.apparmor_enabled(), reason="this host has AppArmor")
def test_apparmor_profile_without_apparmor_fails_at_create(runtime, bundle):
    bundle.config["process"]["apparmorProfile"] = "docker-default"
    bundle.write()
    proc = runtime("create", "--bundle", bundle.path, runtime.new_id(), check=False,
                   stdin=subprocess.DEVNULL)
    assert_failed(proc, "apparmor", "AppArmor")


@pytest.mark.skipif(lsm.selinux_enabled(), reason="this host has SELinux")
def test_selinux_labels_without_selinux_are_ignored(runtime, bundle):
    bundle.config["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0:c1,c2"
    bundle.config["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0:c1,c2"
    bundle.config["process"]["args"] = ["sh", "-c", "echo ran; grep -c context= /proc/self/mountinfo"]
    bundle.write()
    proc = runtime.run(bundle, check=False)
    if is_pyruntime():
        assert proc.returncode == 1 and proc.stdout.split() == ["ran", "0"], proc.stderr
    else:  # runc 1.1.5 passes context= to mount and fails (see shared validation notes)
        assert proc.returncode != 0


@pytest.mark.skipif(lsm.apparmor_enabled(), reason="this host has AppArmor")
def test_exec_apparmor_without_apparmor_fails(runtime, bundle):
    bundle.config["process"]["args"] = ["sleep", "60"]
    bundle.write()
    cid = runtime.create(bundle)
    proc = runtime("exec", "--apparmor", "docker-default", cid, "true", check=False,
                   stdin=subprocess.DEVNULL)
    assert_failed(proc, "AppArmor", "apparmor")
