"""`start`'s side of exec.fifo: builtin modules only, for the lean path (cli/fast.py) too.

A plain blocking open of the fifo waits for a writer forever: if the init dies after it told
its parent it was created but before it opened the fifo's write end, `start` would hang
(runc's start polls the init every 100 ms for this). So the fifo is opened without blocking
and read while a pidfd watches the init: whichever comes first, the init's EOF (its execve
closed the write end) or its exit.
"""
import posix
import select


def read(path: str, pid: int, ours=lambda: True) -> bytes:
    """All the init writes to exec.fifo until its execve closes it; b"" if it exited without
    ever opening it. ours() says, once the pidfd is open, that pid still is the init (not a
    recycled pid). OSError if the fifo cannot be opened."""
    fd = posix.open(path, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
    try:
        try:
            pidfd = posix.pidfd_open(pid)
        except ProcessLookupError:
            return _drain(fd)  # gone already: whatever it wrote before it went
        try:
            if not ours():
                return _drain(fd)
            return _await(fd, pidfd)
        finally:
            posix.close(pidfd)
    finally:
        posix.close(fd)


def _await(fd: int, pidfd: int) -> bytes:
    # A reader that opened a fifo before any writer did sees no POLLHUP until a writer has
    # come and gone: the poll below sleeps until the init opens the fifo, writes, or exits.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    data = b""
    while True:
        for which, _events in poller.poll():
            if which == pidfd:
                return data + _drain(fd)  # its fds are closed: the fifo holds all it wrote
            try:
                chunk = posix.read(fd, 4096)
            except BlockingIOError:
                continue
            if not chunk:
                return data  # EOF: the write end closed at its execve (or its exit)
            data += chunk


def _drain(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = posix.read(fd, 4096)
        except BlockingIOError:  # a writer (a child it forked?) still holds the fifo open
            return data
        if not chunk:
            return data
        data += chunk
