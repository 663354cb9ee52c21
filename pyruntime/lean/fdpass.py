"""One datagram with file descriptors (SCM_RIGHTS), for SOCK_SEQPACKET sockets: builtin
modules only, since the warm server's client uses it before anything imports `os`."""
from pyruntime.lean import socket

MAX_FDS = 16
_INT = 4  # sizeof(int): the fds travel as native ints


def send(sock, data: bytes, fds=()) -> None:
    if not fds:
        sock.send(data)
        return
    raw = b"".join(int(fd).to_bytes(_INT, "little", signed=True) for fd in fds)
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, raw)])


def recv(sock, size: int) -> tuple[bytes, list[int]]:
    """The datagram and the fds that came with it (close-on-exec, as MSG_CMSG_CLOEXEC makes
    them); b"" is EOF. A datagram cut short (MSG_TRUNC, MSG_CTRUNC) is refused. A peer that
    exited with our messages unread resets the socket: that error comes first, then what
    it sent before it went (its last words, often an ERROR), then EOF; so read on."""
    while True:
        try:
            data, anc, flags, _ = sock.recvmsg(size, socket.CMSG_SPACE(MAX_FDS * _INT),
                                               socket.MSG_CMSG_CLOEXEC)
            break
        except ConnectionResetError:
            continue
    fds = []
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            n = len(raw) - len(raw) % _INT
            fds += [int.from_bytes(raw[i:i + _INT], "little", signed=True)
                    for i in range(0, n, _INT)]
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        import posix
        for fd in fds:
            posix.close(fd)
        raise ValueError("a message larger than the protocol allows")
    return data, fds
