"""The process attributes that go through the syscall layer, against its recording fake."""
from __future__ import annotations

import errno

import pytest

from pyruntime.errors import RuntimeFailure
from pyruntime.oci import config
from pyruntime.setup import process

from .fakes import RecordingSys


def proc(**fields):
    return config.parse_process(config.Reader({"args": ["true"], **fields}, "process"))


def test_personality():
    fake = RecordingSys()
    process.set_personality(None, fake)
    process.set_personality({"domain": "LINUX32"}, fake)
    assert fake.calls == [("personality", (0x0008,))]
    with pytest.raises(RuntimeFailure, match=r"^linux.personality.domain: 'LINUX64' is not"):
        process.set_personality({"domain": "LINUX64"}, fake)


def test_io_priority():
    fake = RecordingSys()
    process.set_scheduling(proc(ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 4}), fake)
    assert fake.calls == [("ioprio_set", (1, 0, 2 << 13 | 4))]  # IOPRIO_WHO_PROCESS, self
    with pytest.raises(RuntimeFailure, match="^process.ioPriority.class: 'BE' is not an I/O"):
        process.set_scheduling(proc(ioPriority={"class": "BE"}), fake)


def test_refusals_name_the_field():
    fake = RecordingSys()
    fake.fail("ioprio_set", errno.EPERM)
    with pytest.raises(RuntimeFailure, match=r"^process.ioPriority: ioprio_set\(.*\): Operation "
                                             "not permitted$"):
        process.set_scheduling(proc(ioPriority={"class": "IOPRIO_CLASS_RT"}), fake)
    fake.fail("personality", errno.EINVAL)
    with pytest.raises(RuntimeFailure, match=r"^linux.personality.domain: LINUX32: personality\(8\)"
                                             ": Invalid argument$"):
        process.set_personality({"domain": "LINUX32"}, fake)


def test_the_fifo_owner_is_the_process_users_host_id():
    from pyruntime.lifecycle.container import _host_id
    maps = [{"containerID": 0, "hostID": 100000, "size": 1000},
            {"containerID": 1000, "hostID": 5000, "size": 10}]
    assert _host_id([], 1000) == 1000  # no user namespace: itself
    assert [_host_id(maps, i) for i in (0, 999, 1000, 1009)] == [100000, 100999, 5000, 5009]
    assert _host_id(maps, 1010) == 0  # unmapped: the user switch fails later, saying so
