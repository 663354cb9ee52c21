"""RuntimeFailure's errno, path and step (errors.py): no root, no container."""
from __future__ import annotations

import errno
import os

import pytest

from pyruntime.errors import ConfigError, RuntimeFailure, step


def test_attributes_default_to_none():
    e = RuntimeFailure("container not running")
    assert (str(e), e.errno, e.path, e.step) == ("container not running", None, None, None)


def test_errno_comes_from_the_cause():
    with pytest.raises(RuntimeFailure) as e:
        try:
            os.open("/nonexistent/x", os.O_RDONLY)
        except OSError as cause:
            raise RuntimeFailure("x: gone", path="mounts[0].source") from cause
    assert e.value.errno == errno.ENOENT and isinstance(e.value.__cause__, FileNotFoundError)
    assert str(e.value) == "x: gone"
    given = RuntimeFailure("y", errno=errno.EACCES)
    given.__cause__ = FileNotFoundError(errno.ENOENT, "No such file or directory")
    assert given.errno == errno.EACCES  # what was said outright wins


def test_config_error_keeps_its_message_and_names_its_path():
    e = ConfigError("mounts[3].options[1]", "rrox", "is not a mount option")
    assert str(e) == 'config.json: mounts[3].options[1]: "rrox" is not a mount option'
    assert e.path == "mounts[3].options[1]" and isinstance(e, RuntimeFailure)


def test_step_names_a_failure_that_has_none():
    with pytest.raises(RuntimeFailure) as e:
        with step("cgroups"):
            raise RuntimeFailure("cgroups: cannot add pid 1")
    assert e.value.step == "cgroups"
    with pytest.raises(RuntimeFailure) as e:
        with step("cgroups"):
            raise RuntimeFailure("x", step="rootfs")
    assert e.value.step == "rootfs"
    with pytest.raises(KeyError):
        with step("cgroups"):
            raise KeyError("not ours")


def test_a_cgroup_write_carries_errno_and_path():
    from pyruntime.cgroups.common import write
    if not os.access("/dev/full", os.W_OK):
        pytest.skip("/dev/full is not writable here")
    with pytest.raises(RuntimeFailure) as e:
        write("/dev", "full", 5, "linux.resources.pids.limit")
    assert str(e.value) == ("linux.resources.pids.limit: writing '5' to /dev/full: "
                            "No space left on device")
    assert (e.value.errno, e.value.path) == (errno.ENOSPC, "linux.resources.pids.limit")


def test_an_affinity_failure_names_its_field_and_errno():
    from types import SimpleNamespace
    from pyruntime.lifecycle.exec import _set_affinity
    before = os.sched_getaffinity(0)
    with pytest.raises(RuntimeFailure) as e:
        _set_affinity(0, SimpleNamespace(exec_cpu_affinity={"final": [4095]}), "final")
    assert os.sched_getaffinity(0) == before
    assert str(e.value).startswith("process.execCPUAffinity.final: Invalid argument (CPUs [4095]")
    assert (e.value.errno, e.value.path) == (errno.EINVAL, "process.execCPUAffinity.final")


def test_a_record_round_trips():
    e = RuntimeFailure("linux.netDevices.eth9: cannot set it up in the container: File exists",
                       errno=errno.EEXIST, path="linux.netDevices.eth9", step="network")
    back = RuntimeFailure.from_record(e.record())
    assert (str(back), back.errno, back.path, back.step) == (str(e), e.errno, e.path, e.step)
    assert RuntimeFailure.from_record({"msg": "x"}).record() == \
        {"msg": "x", "errno": None, "path": None, "step": None}
