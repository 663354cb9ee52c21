"""The container's terminal: a pty from its own devpts, handed to --console-socket."""
from __future__ import annotations

import errno
import fcntl
import os
import select
import stat
import struct
import sys

from pyruntime.lean import signal, socket
from pyruntime.linux import syscalls as sc
from pyruntime.errors import RuntimeFailure

TIOCGPTPEER = 0x5441
TIOCSPTLCK = 0x40045431
TIOCSCTTY = 0x540E


def open_pty() -> tuple[int, int]:
    """A master/peer pair from the container's /dev/ptmx (call after pivot_root)."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    peer = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    return master, peer


def give_to(peer: int, uid: int) -> None:
    """The pty belongs to the process's user, or it could not use its own terminal (as with
    runc: the uid only; the group is devpts's gid= option, the tty group)."""
    if not uid:
        return
    try:
        os.fchown(peer, uid, -1)
    except OSError as e:
        # the uid is not mapped in the container's user namespace (EINVAL), or the pty's
        # owner is not (EPERM): the process then gets the pty as it is, as runc leaves it
        if e.errno not in (errno.EINVAL, errno.EPERM):
            raise


# asm-generic/ioctls.h, as on x86_64, aarch64 and riscv64: the init sets the size after it has
# entered the container's root, where `termios` could no longer be imported (and loading it
# in every init for one number would cost more than the ioctl)
TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414


def set_size(fd: int, height: int, width: int) -> None:
    fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def bind_console(peer: int, proc_mounted: bool = True) -> None:
    """Bind the pty peer on /dev/console (which must exist as a plain file first). A symlink
    the rootfs put there is replaced, never followed (CVE-2025-52565: it would take the bind
    elsewhere, e.g. over /proc/sys/kernel/core_pattern). Without a proc at /proc, by fds."""
    from pyruntime.setup.rootfs import attach, fdpath, make_path
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dev = make_path(root, "/dev")
    finally:
        os.close(root)
    try:
        try:
            if stat.S_ISLNK(os.stat("console", dir_fd=dev, follow_symlinks=False).st_mode):
                os.unlink("console", dir_fd=dev)
        except FileNotFoundError:
            pass
        try:
            os.close(os.open("console", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW |
                             os.O_CLOEXEC, 0o600, dir_fd=dev))
        except FileExistsError:
            pass
        fd = sc.openat2(dev, "console", os.O_PATH | os.O_CLOEXEC,
                        sc.RESOLVE_NO_SYMLINKS | sc.RESOLVE_BENEATH)
        try:
            mode = os.fstat(fd).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
                raise RuntimeFailure("/dev/console in the container is not a file or a device")
            if proc_mounted:
                sc.mount(fdpath(peer), fdpath(fd), None, sc.MS_BIND)
            else:
                attach(sc.open_tree(peer, "", sc.OPEN_TREE_CLONE | sc.AT_EMPTY_PATH), fd)
        finally:
            os.close(fd)
    finally:
        os.close(dev)


def make_controlling(peer: int) -> None:
    """Our controlling terminal and stdio: we lead a session of our own already (the init's
    `become` and exec's `_finish` start one first)."""
    fcntl.ioctl(peer, TIOCSCTTY, 0)
    for i in range(3):
        os.dup2(peer, i)


def send_master(sock: socket.socket, master: int) -> None:
    """One message: the pty's name as payload, the master as the only SCM_RIGHTS fd."""
    try:
        name = os.readlink(f"/proc/self/fd/{master}").encode()
    except OSError:  # no proc in the container: the name it was opened at, as runc sends
        name = b"/dev/ptmx"
    # (struct, not array: array imports collections, paid by each exec and run)
    sock.sendmsg([name], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", master))])


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


# ---------------------------------------------------------------- foreground `run` and `exec`

# Signals a foreground `run`/`exec` passes on to the container process, as runc's proxy does.
# Not SIGWINCH: as runc, we resize the pty instead (follow_size) and the kernel signals its
# foreground group; a process without a terminal has no window to hear about.
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGCONT, signal.SIGTSTP)


def forward_signals(pid: int) -> None:
    for sig in FORWARDED:
        signal.signal(sig, lambda s, _f: _forward(pid, s))


def _forward(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def caller_size() -> tuple[int, int] | None:
    """The rows and columns of the terminal on our stdin; None if it is none or has no size."""
    if not os.isatty(0):
        return None
    try:
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(0, TIOCGWINSZ, bytes(8)))[:2]
    except OSError:  # it went away (a hangup can race a SIGWINCH)
        return None
    return (rows, cols) if rows or cols else None


def follow_size(master) -> None:
    """As runc: when our stdin is a terminal, the container's pty takes its size now and at
    each SIGWINCH. A size-less (0x0) terminal leaves the pty as it is (process.consoleSize)."""
    if not os.isatty(0):
        return

    def copy(_sig=None, _frame=None):
        size = caller_size()
        if size:
            try:
                set_size(master, *size)
            except OSError:
                pass
    copy()
    signal.signal(signal.SIGWINCH, copy)


def receive_master(sock):
    size = struct.calcsize("i")
    _, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(size))
    sock.close()
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and len(data) >= size:
            return struct.unpack("i", data[:size])[0]
    return None


def exit_code(status):
    """runc's convention: the exit status, or 128+n for a death by signal n."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def wait_proxying(pid, master):
    """Wait for the init; with a terminal, copy stdin -> pty and pty -> stdout meanwhile."""
    if master is None:
        while True:
            try:
                wpid, status = os.waitpid(pid, 0)
            except InterruptedError:
                continue
            if wpid == pid:
                return status
    import termios
    import tty
    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0, termios.TCSANOW)  # as runc: a flush would drop what was typed ahead
    follow_size(master)
    pidfd = os.pidfd_open(pid)
    watch = [pidfd, master, 0]
    try:
        while True:
            ready, _, _ = select.select(watch, [], [])
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if data:
                    os.write(1, data)
                else:
                    watch.remove(master)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    watch.remove(0)
            if pidfd in ready:
                break
        while True:  # drain what the process wrote before it exited
            r, _, _ = select.select([master], [], [], 0.05)
            if not r:
                break
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            os.write(1, data)
        return os.waitpid(pid, 0)[1]
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, signal.SIG_DFL)  # before its fd number can be reused
        os.close(pidfd)
        os.close(master)
        sys.stdout.flush()
