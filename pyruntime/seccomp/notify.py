"""SCMP_ACT_NOTIFY: the runtime-spec ContainerProcessState sent with the notify fd to the
seccomp agent at listenerPath (the agent's side, the fd's ioctls, is the agent's business:
tests/seccomp_agent.py has one)."""
from __future__ import annotations

import struct

from pyruntime.lean import socket as _socket
from pyruntime.lean import jsonio
from pyruntime.errors import RuntimeFailure

SECCOMP_FD_NAME = "seccompFd"


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
                             f"{listener_path}: {e.strerror or e}", errno=e.errno) from None
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
                             f"{e.strerror or e}", errno=e.errno) from None
