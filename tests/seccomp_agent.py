"""A seccomp agent for the tests: the notify fd's ioctls (linux/seccomp.h), and a sender for
processes that can still reach listenerPath. The runtime only hands the fd over (notify.py)."""
from __future__ import annotations

import fcntl
import struct

from pyruntime.seccomp import compile as seccomp, kernel, notify

# seccomp user notification ioctls (linux/seccomp.h, _IOWR('!', nr, type))
_IOCTL_NOTIF_RECV = 0xC0502100      # struct seccomp_notif (80 bytes)
_IOCTL_NOTIF_SEND = 0xC0182101      # struct seccomp_notif_resp (24 bytes)
_IOCTL_NOTIF_ID_VALID = 0x40082102  # __u64
USER_NOTIF_FLAG_CONTINUE = 1


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
    flags = USER_NOTIF_FLAG_CONTINUE if continue_syscall else 0
    resp = bytearray(struct.pack("=QqiI", notif_id, val, -error if error else 0, flags))
    try:
        fcntl.ioctl(fd, _IOCTL_NOTIF_SEND, resp, True)
    except FileNotFoundError:
        raise ProcessLookupError(f"seccomp notification {notif_id} is no longer valid") from None


def notify_id_valid(fd: int, notif_id: int) -> bool:
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


def send_to_listener(listener_path: str, notify_fd: int, state: dict, metadata: str = "",
                     pid: int | None = None, timeout: float | None = 30.0) -> None:
    """connect_listener + send_state, for a process that can still reach listenerPath."""
    notify.send_state(notify.connect_listener(listener_path, timeout), notify_fd, state, metadata, pid)


def load(profile: dict) -> int | None:
    """compile() and install() in the calling process, which still sees the host's files; the
    notify fd or None."""
    return kernel.install(seccomp.compile(profile))
