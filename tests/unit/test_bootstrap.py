"""setup/bootstrap.py, the steps create's and exec's children share, through real forks: a
child's failure reaches the parent with its errno, config path and step; the held process
speaks only after PID. No root, no container."""
from __future__ import annotations

import errno
import os

import pytest

from pyruntime.errors import RuntimeFailure
from pyruntime.lifecycle import channel
from pyruntime.linux import syscalls
from pyruntime.setup import bootstrap as boot


def _fails_at_rootfs(chan, exc):
    boot.enter(chan, [])
    boot.at("rootfs")
    raise exc


@pytest.mark.parametrize("exc,want", [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x"),
     ("container init: [Errno 2] No such file or directory: '/x'", errno.ENOENT, None, "rootfs")),
    (RuntimeFailure("linux.sysctl.x: '1': Permission denied", errno=errno.EACCES,
                    path="linux.sysctl.x"),
     ("linux.sysctl.x: '1': Permission denied", errno.EACCES, "linux.sysctl.x", "rootfs")),
    (ZeroDivisionError("boom"),
     ("container init: internal error: ZeroDivisionError: boom", None, None, "rootfs")),
])
def test_a_childs_failure_reaches_the_parent_typed(exc, want):
    pid, chan = boot.spawn("container init", _fails_at_rootfs, exc)
    try:
        boot.in_cgroup(chan, pid, None)  # MOVED: no cgroup to enter
        chan.send(channel.GO)
        with pytest.raises(RuntimeFailure) as e:
            chan.recv(channel.PID)
        assert (str(e.value), e.value.errno, e.value.path, e.value.step) == want
        assert os.waitpid(pid, 0)[1] != 0
    finally:
        chan.sock.close()
        boot.kill_and_reap(pid)


def _held(chan, host_pid):
    chan.send(channel.CREATED, host_pid=host_pid)
    boot.at("exec")
    raise RuntimeFailure('exec: "x": permission denied', errno=errno.EACCES)


def test_the_held_process_speaks_after_pid_and_knows_its_pid():
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)  # the held process is orphaned: we reap it
    pid, chan = boot.spawn("exec", lambda c: (boot.enter(c, []), boot.fork_held(c, "exec", _held)))
    try:
        boot.in_cgroup(chan, pid, None)  # MOVED: no cgroup to enter
        chan.send(channel.GO)
        held = chan.recv(channel.PID)["pid"]
        assert chan.recv(channel.CREATED)["host_pid"] == held
        with pytest.raises(RuntimeFailure) as e:
            chan.recv_or_eof()
        assert (e.value.errno, e.value.step) == (errno.EACCES, "exec")
        assert os.waitpid(pid, 0)[1] == 0
        assert os.waitpid(held, 0)[1] != 0
    finally:
        chan.sock.close()
        boot.kill_and_reap(pid)
