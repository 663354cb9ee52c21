"""cgroups/placement.py: how the bootstrap child gets into its cgroups (it moves itself into
each v1 hierarchy, is born into the cgroup2 dir, the parent moves it where neither applies),
against the fake cgroup of fakes_cgroups.py, with real forks. No root: clone3 into a dir that
is no cgroup is refused, which is the fallback's case."""
from __future__ import annotations

import errno
import os
import threading

import pytest

from pyruntime.cgroups.placement import Placement
from pyruntime.errors import RuntimeFailure
from pyruntime.lifecycle import channel
from pyruntime.linux import syscalls
from pyruntime.setup import bootstrap as boot

from .fakes_cgroups import FakeCgroup


@pytest.fixture
def hybrid(tmp_path, monkeypatch):
    """A fake v1 cgroup plus a cgroup2 dir, as on a hybrid host."""
    fake = FakeCgroup(tmp_path, "v1", monkeypatch)
    v2 = tmp_path / "unified" / "ctr"
    v2.mkdir(parents=True)
    (v2 / "cgroup.procs").touch()
    fake.dirs[""] = fake._key[str(v2)] = str(v2)
    fake._key[str(v2)] = ""
    return fake


def _reap(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_the_child_moves_itself_into_each_v1_hierarchy_once(hybrid):
    dirs = dict(hybrid.dirs, cpuacct=hybrid.dirs["cpu"])  # co-mounted: one dir, one write
    Placement(dirs).child()
    assert hybrid.writes == [(k, "tasks", "0") for k in hybrid.dirs if k]


def test_the_parent_moves_it_into_cgroup2_unless_it_was_born_there(hybrid):
    p = Placement(hybrid.dirs)
    p.parent(4242)
    assert hybrid.writes == [("", "cgroup.procs", "4242")]
    hybrid.writes.clear()
    p.born_in_v2 = True
    p.parent(4242)
    assert hybrid.writes == []


def test_without_self_move_the_parent_does_it_all(hybrid, monkeypatch):
    def no_clone3(fd):
        raise AssertionError("clone3 tried")
    monkeypatch.setattr(syscalls, "fork_into_cgroup", no_clone3)
    moved = []
    p = Placement(hybrid.dirs, self_move=False, move=moved.append)
    pid = p.fork()
    if pid == 0:
        os._exit(0)
    assert _reap(pid) == 0
    p.child()
    p.parent(7)
    assert hybrid.writes == [] and moved == [7]


def test_managers_move_by_themselves_only_as_root(hybrid, monkeypatch, tmp_path):
    from pyruntime.cgroups.rootless import restrict
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert hybrid.manager.placement().self_move
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert not hybrid.manager.placement().self_move
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    mgr = restrict(hybrid.manager, {})  # rootless: cgroup.procs is what it checked
    assert mgr.dirs and not mgr.placement().self_move


def test_a_refused_clone3_falls_back_to_fork_and_the_parent_s_move(hybrid):
    p = Placement(hybrid.dirs)
    pid = p.fork()  # the "cgroup2 dir" is a plain dir: clone3 says EBADF
    if pid == 0:
        os._exit(0 if not p.born_in_v2 else 3)
    assert _reap(pid) == 0
    assert not p.born_in_v2
    p.parent(pid)
    assert hybrid.writes == [("", "cgroup.procs", str(pid))]


def test_fork_into_cgroup_refuses_a_process_with_threads(tmp_path):
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        with pytest.raises(OSError) as e:
            syscalls.fork_into_cgroup(fd)
        assert e.value.errno == errno.EBUSY and " threads" in str(e.value)
    finally:
        stop.set()
        t.join()
        os.close(fd)


def test_the_child_reports_moved_or_why_not(hybrid):
    """The protocol: MOVED before the parent's part; a failed self-move is the child's ERROR,
    at step "cgroups", and the parent moves nothing."""
    p = Placement(hybrid.dirs)
    pid, chan = boot.spawn("test", lambda c: (c.recv(channel.GO), os._exit(0)), cgroup=p)
    try:
        boot.in_cgroup(chan, pid, p)
        chan.send(channel.GO)
        assert _reap(pid) == 0
    finally:
        chan.sock.close()
    for k, d in hybrid.dirs.items():  # written by the child, in its own process
        assert open(os.path.join(d, "tasks" if k else "cgroup.procs")).read() == \
            ("0" if k else str(pid))
    hybrid.writes.clear()
    os.unlink(os.path.join(hybrid.dirs["memory"], "tasks"))
    pid, chan = boot.spawn("test", lambda c: os._exit(0), cgroup=p)
    try:
        with pytest.raises(RuntimeFailure) as e:
            boot.in_cgroup(chan, pid, p)
        assert e.value.step == "cgroups" and e.value.errno == errno.ENOENT
        assert str(e.value) == (f"cgroups: cannot add self to {hybrid.dirs['memory']}: "
                                "No such file or directory")
        assert _reap(pid) == 1
        assert hybrid.writes == []
    finally:
        chan.sock.close()
