"""The container's terminal: a pty from its own devpts, handed to --console-socket."""
from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
import termios

from . import syscalls as sc

TIOCGPTPEER = 0x5441
TIOCSPTLCK = 0x40045431
TIOCSCTTY = 0x540E


def open_pty() -> tuple[int, int]:
    """A master/peer pair from the container's /dev/ptmx (call after pivot_root)."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    peer = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    return master, peer


def set_size(fd: int, height: int, width: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def bind_console(peer: int) -> None:
    """Bind the pty peer on /dev/console (which must exist as a plain file first)."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        from .rootfs import fdpath, make_path
        fd = make_path(root, "/dev/console", is_dir=False)
        try:
            sc.mount(fdpath(peer), fdpath(fd), None, sc.MS_BIND)
        finally:
            os.close(fd)
    finally:
        os.close(root)


def make_controlling(peer: int) -> None:
    os.setsid()
    fcntl.ioctl(peer, TIOCSCTTY, 0)
    for i in range(3):
        os.dup2(peer, i)


def send_master(sock: socket.socket, master: int) -> None:
    """One message: the pty's name as payload, the master as the only SCM_RIGHTS fd."""
    name = os.readlink(f"/proc/self/fd/{master}").encode()
    fds = array.array("i", [master])
    sock.sendmsg([name], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s
