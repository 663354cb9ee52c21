"""SCMP_ACT_NOTIFY: the notify fd's ioctls (the agent's side), and the runtime-spec
ContainerProcessState sent with that fd to the seccomp agent at listenerPath."""
from __future__ import annotations

import struct

from pyruntime.lean import socket as _socket
from pyruntime.lean import jsonio
from pyruntime.errors import RuntimeFailure

# seccomp user notification ioctls (linux/seccomp.h, _IOWR('!', nr, type))
_IOCTL_NOTIF_RECV = 0xC0502100      # struct seccomp_notif (80 bytes)
_IOCTL_NOTIF_SEND = 0xC0182101      # struct seccomp_notif_resp (24 bytes)
_IOCTL_NOTIF_ID_VALID = 0x40082102  # __u64
USER_NOTIF_FLAG_CONTINUE = 1

SECCOMP_FD_NAME = "seccompFd"


class Notification:
    """struct seccomp_notif: a syscall waiting for the agent's answer."""

    __slots__ = ("id", "pid", "flags", "nr", "arch", "ip", "args")

    def __init__(self, raw: bytes):
        (self.id, self.pid, self.flags, self.nr, self.arch, self.ip,
         *args) = struct.unpack("=QIIiIQ6Q", raw[:80])
        self.args = tuple(args)

    def __repr__(self) -> str:
        return f"<seccomp.Notification id={self.id} pid={self.pid} nr={self.nr} args={self.args}>"


def notify_receive(fd: int) -> Notification:
    """Block until a notified syscall arrives on a notify fd (SECCOMP_IOCTL_NOTIF_RECV)."""
    import fcntl

    buf = bytearray(80)  # must be zeroed
    while True:
        try:
            fcntl.ioctl(fd, _IOCTL_NOTIF_RECV, buf, True)
            return Notification(bytes(buf))
        except InterruptedError:
            continue


def notify_respond(fd: int, notif_id: int, *, val: int = 0, error: int = 0,
                   continue_syscall: bool = False) -> None:
    """Answer a notification: the syscall returns val, or fails with errno `error` (positive),
    or (continue_syscall) really runs. Raises ProcessLookupError (ENOENT) if the caller is gone."""
    import fcntl
    flags = USER_NOTIF_FLAG_CONTINUE if continue_syscall else 0
    resp = bytearray(struct.pack("=QqiI", notif_id, val, -error if error else 0, flags))
    try:
        fcntl.ioctl(fd, _IOCTL_NOTIF_SEND, resp, True)
    except FileNotFoundError:
        raise ProcessLookupError(f"seccomp notification {notif_id} is no longer valid") from None


def notify_id_valid(fd: int, notif_id: int) -> bool:
    import fcntl
    try:
        fcntl.ioctl(fd, _IOCTL_NOTIF_ID_VALID, struct.pack("=Q", notif_id))
        return True
    except FileNotFoundError:
        return False


def notify_answer(fd: int, *, val: int = 0, error: int = 0,
                  continue_syscall: bool = False) -> Notification:
    """Receive one notification and answer it; returns what was received (test/agent helper)."""
    n = notify_receive(fd)
    notify_respond(fd, n.id, val=val, error=error, continue_syscall=continue_syscall)
    return n


def process_state(state: dict, metadata: str = "", pid: int | None = None) -> dict:
    """The runtime-spec ContainerProcessState sent to a seccomp agent (as runc builds it)."""
    from pyruntime import SPEC_VERSION

    msg = {
        "ociVersion": SPEC_VERSION,
        "fds": [SECCOMP_FD_NAME],
        "pid": state.get("pid") if pid is None else pid,
    }
    if metadata:
        msg["metadata"] = metadata
    msg["state"] = state
    return msg


def connect_listener(listener_path: str, timeout: float | None = 30.0):
    """Connect to the agent at listenerPath (done by the runtime before the fork: the
    container's process can no longer reach host paths when its filter is loaded)."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        s.connect(listener_path)
    except OSError as e:
        s.close()
        raise RuntimeFailure(f"seccomp: failed to connect with seccomp agent at listenerPath "
                             f"{listener_path}: {e.strerror or e}") from None
    return s


def send_state(sock, notify_fd: int, state: dict, metadata: str = "",
               pid: int | None = None) -> None:
    """Send the container process state JSON with the notify fd (SCM_RIGHTS, on the first
    sendmsg) over a connected listener socket, then close it: one message per connection.
    It runs in the container's process after pivot_root, where no module can be imported any
    more: it uses only modules loaded before (see the imports at the top)."""
    data = jsonio.dumps(process_state(state, metadata, pid)).encode()
    try:
        try:
            fds = struct.pack("i", notify_fd)
            sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
            if sent < len(data):
                sock.sendall(data[sent:])
        finally:
            sock.close()
    except OSError as e:
        raise RuntimeFailure(f"seccomp: sending the notify fd to the listener: "
                             f"{e.strerror or e}") from None


def send_to_listener(listener_path: str, notify_fd: int, state: dict, metadata: str = "",
                     pid: int | None = None, timeout: float | None = 30.0) -> None:
    """connect_listener + send_state, for a process that can still reach listenerPath."""
    send_state(connect_listener(listener_path, timeout), notify_fd, state, metadata, pid)
