"""The syscall layer's numbers: one table per architecture, and a clear error elsewhere. Unit tests."""
from __future__ import annotations

import errno
import os

import pytest

from pyruntime.linux import syscalls


def test_numbers_follow_the_machine():
    assert syscalls.MACHINE == os.uname().machine
    assert syscalls.nr("pivot_root", "x86_64") == 155
    assert syscalls.nr("pivot_root", "aarch64") == 41
    assert syscalls.nr("seccomp", "aarch64") == 277 and syscalls.nr("seccomp", "x86_64") == 317


def test_every_architecture_knows_every_syscall_the_package_names():
    names = set().union(*syscalls.SYSCALL_NUMBERS.values())
    for machine, table in syscalls.SYSCALL_NUMBERS.items():
        assert set(table) == names, machine


def test_an_unknown_architecture_is_a_clear_error_not_a_wrong_syscall():
    with pytest.raises(OSError) as e:
        syscalls.nr("openat2", "mips64")
    assert e.value.errno == errno.ENOSYS
    assert "openat2: syscall number unknown on architecture 'mips64'" in str(e.value)


def test_one_libc_handle():
    from pyruntime.seccomp import kernel as seccomp
    from pyruntime.cgroups import bpf  # noqa: F401  (loads no libc of its own)
    assert seccomp._libc() is syscalls.libc()
