"""`features`: the runtime-spec features document, valid and true of this build and host."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import is_pyruntime, runtime_binary
from corehelp import CAPS

pytestmark = pytest.mark.skipif(not is_pyruntime(), reason="checks pyruntime's own features")


@pytest.fixture(scope="module")
def features() -> dict:
    proc = subprocess.run([runtime_binary(), "features"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_valid_against_schema(features):
    from pyruntime.oci.validate import validate_features
    assert validate_features(features) == []


def test_versions(features):
    assert features["ociVersionMin"] == "1.0.0"
    assert features["ociVersionMax"] == "1.3.0"


def test_hooks(features):
    assert features["hooks"] == ["prestart", "createRuntime", "createContainer",
                                 "startContainer", "poststart", "poststop"]


def test_namespaces_are_the_kernels(features):
    names = {"cgroup": "cgroup", "ipc": "ipc", "mount": "mnt", "network": "net", "pid": "pid",
             "user": "user", "uts": "uts", "time": "time"}
    want = sorted(t for t, n in names.items() if os.path.exists(f"/proc/self/ns/{n}"))
    assert features["linux"]["namespaces"] == want
    assert {"cgroup", "ipc", "mount", "network", "pid", "user", "uts"} <= set(want)


def test_capabilities_match_cap_last_cap(features):
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    caps = features["linux"]["capabilities"]
    assert len(caps) == last + 1
    assert len(set(caps)) == len(caps)
    for name, n in CAPS.items():
        assert caps[n] == name
    assert "CAP_SYS_RESOURCE" in caps  # the kernel's list, not this host's bounding set


def test_mount_options_only_what_works(features):
    opts = set(features["mountOptions"])
    assert {"ro", "rw", "nosuid", "nodev", "noexec", "bind", "rbind", "rprivate", "rslave",
            "strictatime", "relatime", "nosymfollow", "remount"} <= opts
    from pyruntime.oci import mounts
    for opt in opts:
        flags, prop, data = mounts.parse_options([opt])
        assert data == [], f"{opt} would be passed to mount(2) as data"
        assert flags or prop or opt in mounts.RECURSIVE or opt in mounts.SPECIAL or opt in (
            "defaults", "rw", "suid", "dev", "exec", "async", "nomand", "atime", "diratime",
            "norelatime", "nostrictatime", "nolazytime", "symfollow", "loud", "noiversion"), opt


def test_seccomp(features):
    sec = features["linux"]["seccomp"]
    assert sec["enabled"] is True
    assert set(sec["actions"]) == {
        "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY"}
    assert set(sec["operators"]) == {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
                                     "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"}
    assert "SCMP_ARCH_X86_64" in sec["archs"] and "SCMP_ARCH_X86" in sec["archs"]
    assert set(sec["supportedFlags"]) <= set(sec["knownFlags"])
    # every kernel this runs on (>= 4.17) has these
    assert {"SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"} <= set(sec["supportedFlags"])
    kernel_actions = open("/proc/sys/kernel/seccomp/actions_avail").read().split()
    if "user_notif" in kernel_actions:
        assert "SCMP_ACT_NOTIFY" in sec["actions"]


def test_unavailable_lsms_and_extensions(features):
    linux = features["linux"]
    assert linux["apparmor"] == {"enabled": False}
    assert linux["selinux"] == {"enabled": False}
    assert linux["intelRdt"]["enabled"] is False
    assert linux["cgroup"]["systemd"] is True and linux["cgroup"]["systemdUser"] is False
    assert linux["cgroup"]["v1"] is True and linux["cgroup"]["v2"] is True


def test_annotations(features):
    import pyruntime
    ann = features["annotations"]
    assert ann["io.github.pyruntime.version"] == pyruntime.__version__
    assert all(isinstance(v, str) and k for k, v in ann.items())


def test_fast_and_no_jsonschema():
    """dockerd calls it at start-up; it must not pay for jsonschema."""
    code = ("import sys, io, contextlib; from pyruntime.cli.commands import features as f; "
            "f.main(None, None); assert 'jsonschema' not in sys.modules, 'jsonschema imported'")
    proc = subprocess.run(["python3", "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    t = time.monotonic()
    subprocess.run([runtime_binary(), "features"], capture_output=True, check=True, timeout=30)
    assert time.monotonic() - t < 2.0
