"""The parent <-> child protocol (lifecycle/channel.py) over a real socketpair: no root, no
container. Runs with `python3 -m pytest --noconftest tests/unit` as any user."""
from __future__ import annotations

import errno
import socket

import pytest

from pyruntime.errors import PeerGone, ProtocolError, RuntimeFailure
from pyruntime.lifecycle import channel
from pyruntime.lifecycle.channel import Channel


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield Channel(a), Channel(b)
    a.close()
    b.close()


MESSAGES = [(channel.MOVED, {}), (channel.GO, {}), (channel.USERNS, {}), (channel.MAPPED, {}),
            (channel.PID, {"pid": 4242}), (channel.HOOKS, {}),
            (channel.HOOKS_DONE, {"state": {"id": "c1", "status": "created", "pid": 7}}),
            (channel.CREATED, {})]


@pytest.mark.parametrize("kind,fields", MESSAGES, ids=[k for k, _ in MESSAGES])
def test_each_message_round_trips(pair, kind, fields):
    parent, child = pair
    child.send(kind, **fields)
    assert parent.recv(kind) == {"type": kind, **fields}


def test_the_names_are_distinct():
    names = [channel.MOVED, channel.GO, channel.USERNS, channel.MAPPED, channel.PID, channel.HOOKS,
             channel.HOOKS_DONE, channel.CREATED, channel.ERROR]
    assert len(set(names)) == len(names)
    assert channel.FIFO_READY != channel.FIFO_ERROR and len(channel.FIFO_READY) == 1


def test_one_of_several_expected(pair):
    parent, child = pair
    child.send(channel.PID, pid=1)
    assert parent.recv(channel.USERNS, channel.PID)["type"] == channel.PID


def test_an_unexpected_message_names_both(pair):
    parent, child = pair
    child.send(channel.HOOKS)
    with pytest.raises(ProtocolError) as e:
        parent.recv(channel.PID)
    assert str(e.value) == "protocol error: expected 'pid', got 'hooks'"
    assert (e.value.expected, e.value.received) == ((channel.PID,), channel.HOOKS)
    child.send(channel.CREATED)
    with pytest.raises(ProtocolError, match="expected 'userns' or 'pid', got 'created'"):
        parent.recv(channel.USERNS, channel.PID)


def test_a_message_where_eof_is_due(pair):
    parent, child = pair
    child.send(channel.PID, pid=3)
    with pytest.raises(ProtocolError, match="expected nothing, got 'pid'"):
        parent.recv_or_eof()


def test_a_closed_peer(pair):
    parent, child = pair
    child.sock.close()
    with pytest.raises(PeerGone) as e:
        parent.recv(channel.PID)
    assert str(e.value) == "the container init exited during setup"
    assert parent.recv_or_eof() is None


@pytest.mark.parametrize("recv", ["recv", "recv_fds", "recv_or_eof"])
def test_a_peer_that_died_with_messages_unread(pair, recv):
    """Its socket resets ours: ECONNRESET comes first, then what it sent before it went (a
    preparer's ERROR, say), then EOF. Its last message is read, never an OSError that the
    server would take for its client's (an OOM-killed init did that), nor lost."""
    parent, child = pair
    parent.send(channel.JOIN)
    child.fail(RuntimeFailure("mounts[0]: must be mounted on ordinary directory", errno=20))
    child.sock.close()
    with pytest.raises(RuntimeFailure, match="ordinary directory") as e:
        getattr(parent, recv)(channel.JOINED)
    assert e.value.errno == 20
    if recv == "recv_or_eof":
        assert parent.recv_or_eof() is None
        return
    with pytest.raises(PeerGone, match="the container init exited during setup"):
        getattr(parent, recv)(channel.JOINED)


def test_an_error_is_raised_with_its_attributes(pair):
    parent, child = pair
    try:
        try:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        except OSError as cause:
            raise RuntimeFailure("mounts[3]: /x: no such file or directory",
                                 path="mounts[3].source", step="rootfs") from cause
    except RuntimeFailure as sent:
        child.fail(sent)
    with pytest.raises(RuntimeFailure) as e:
        parent.recv(channel.HOOKS)  # an error wins over what was expected
    assert str(e.value) == "mounts[3]: /x: no such file or directory"
    assert (e.value.errno, e.value.path, e.value.step) == (errno.ENOENT, "mounts[3].source",
                                                             "rootfs")
    assert not isinstance(e.value, ProtocolError)


def test_an_error_where_eof_is_due(pair):
    parent, child = pair
    child.sock.send(channel.error_message(RuntimeFailure('exec: "x": permission denied',
                                                         errno=errno.EACCES, step="exec")))
    with pytest.raises(RuntimeFailure) as e:
        parent.recv_or_eof()
    assert (str(e.value), e.value.errno, e.value.step) == \
        ('exec: "x": permission denied', errno.EACCES, "exec")


def test_fifo_bytes_round_trip():
    channel.check_fifo(channel.FIFO_READY)
    with pytest.raises(RuntimeFailure) as e:
        channel.check_fifo(channel.FIFO_READY + channel.fifo_error(
            RuntimeFailure('exec: "E": no such file', errno=errno.ENOENT, step="exec")))
    assert (str(e.value), e.value.errno, e.value.step) == \
        ('exec: "E": no such file', errno.ENOENT, "exec")
    with pytest.raises(RuntimeFailure, match="exited before it could start the process"):
        channel.check_fifo(b"")


def test_an_older_inits_bare_fifo_message():
    with pytest.raises(RuntimeFailure) as e:
        channel.check_fifo(b'0Eexec: "x": exec format error')
    assert str(e.value) == 'exec: "x": exec format error' and e.value.errno is None


def _start_side(fifo_path, ready):
    """Fork an init that runs _wait_for_start(ready) on a real fifo; be `start`: open the fifo
    (which lets the init go on), read to EOF. (what the init wrote, its exit code)."""
    import os
    from pyruntime.setup import init
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            a.close()
            path_fd = os.open(fifo_path, os.O_PATH | os.O_CLOEXEC)
            out, got = init._wait_for_start(Channel(b), path_fd, False, ready=ready)
            # the write end took the number ready() was told to report on, and is ours alone
            if out == path_fd and got == "shim" and os.get_inheritable(out) is False:
                os.write(out, b"!")
                code = 0
        finally:
            os._exit(code)
    b.close()
    assert Channel(a).recv(channel.CREATED) == {"type": channel.CREATED}
    fd = os.open(fifo_path, os.O_RDONLY)
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    os.close(fd)
    a.close()
    _, status = os.waitpid(pid, 0)
    return data, os.waitstatus_to_exitcode(status)


def test_the_init_readies_its_exec_before_start_and_reports_on_the_fifo(tmp_path):
    import os
    os.mkfifo(tmp_path / "exec.fifo")
    data, code = _start_side(tmp_path / "exec.fifo", lambda: "shim")
    assert (data, code) == (channel.FIFO_READY + b"!", 0)


def test_a_failure_before_start_is_starts_to_report(tmp_path):
    """ready() runs after CREATED: the create has returned, so `start` gets its error."""
    import os
    os.mkfifo(tmp_path / "exec.fifo")

    def ready():
        raise OSError(errno.EPERM, "PR_CAPBSET_DROP: Operation not permitted")
    data, code = _start_side(tmp_path / "exec.fifo", ready)
    assert code == 1
    with pytest.raises(RuntimeFailure) as e:
        channel.check_fifo(data)
    assert "PR_CAPBSET_DROP" in str(e.value) and e.value.errno == errno.EPERM
    assert e.value.step == "exec"


# ---------------------------------------------------------------- `start` on exec.fifo

@pytest.fixture
def init_side(tmp_path):
    """fork(child) as a stand-in init: child(fifo path) runs in it; `start`'s read of the
    fifo is bounded by an alarm, so a hang fails the test instead of stalling the suite."""
    import os
    import signal
    fifo = str(tmp_path / "exec.fifo")
    os.mkfifo(fifo)
    pids = []

    def fork(child) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                child(fifo)
            finally:
                os._exit(0)
        pids.append(pid)
        return pid

    def alarm(*_):
        raise TimeoutError("start's read of exec.fifo hung")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(20)
    yield fifo, fork
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def _sleep(seconds):
    return lambda fifo: __import__("time").sleep(seconds)


def test_start_does_not_wait_for_an_init_that_died_before_the_fifo(init_side):
    from pyruntime.lifecycle import execfifo
    fifo, fork = init_side
    pid = fork(_sleep(0.2))  # never opens it
    assert execfifo.read(fifo, pid) == b""
    with pytest.raises(PeerGone, match="exited before it could start"):
        channel.check_fifo(b"")


def test_start_reads_until_the_inits_execve(init_side):
    """EOF at the execve (the write end is close-on-exec), while the process still runs."""
    import os
    from pyruntime.lifecycle import execfifo
    fifo, fork = init_side

    def init(path):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        os.write(fd, channel.FIFO_READY)
        os.execv("/bin/sleep", ["sleep", "30"])
    pid = fork(init)
    assert execfifo.read(fifo, pid) == channel.FIFO_READY
    assert os.waitpid(pid, os.WNOHANG) == (0, 0)


def test_start_gets_what_an_init_wrote_before_it_exited(init_side):
    import os
    from pyruntime.lifecycle import execfifo
    fifo, fork = init_side
    failure = channel.fifo_error(RuntimeFailure("exec: no such file", errno=errno.ENOENT))

    def init(path):
        fd = os.open(path, os.O_WRONLY)
        os.write(fd, channel.FIFO_READY + failure)
    pid = fork(init)
    assert execfifo.read(fifo, pid) == channel.FIFO_READY + failure


def test_start_does_not_wait_for_a_recycled_pid(init_side):
    from pyruntime.lifecycle import execfifo
    fifo, fork = init_side
    pid = fork(_sleep(30))
    assert execfifo.read(fifo, pid, ours=lambda: False) == b""
