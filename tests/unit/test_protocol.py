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
