"""create and run a container"""
import array
import os
import select
import signal
import socket
import sys

from .. import syscalls as sc
from ..container import create, delete, start
from .create import add_create_flags

# Signals `run` passes on to the container's init, as runc's signal proxy does.
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT, signal.SIGTSTP)


def configure(p):
    add_create_flags(p)
    p.add_argument("--detach", "-d", action="store_true", help="detach from the container's process")
    p.add_argument("--keep", action="store_true", help="do not delete the container after it exits")


def main(opts, ctx):
    # The init is orphaned when `create`'s bootstrap child exits; as a subreaper we inherit it.
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    ours = theirs = None
    if not opts.console_socket and not opts.detach and _wants_terminal(opts.bundle):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    c = create(ctx.root, opts.container_id, opts.bundle, pid_file=opts.pid_file,
               console_socket=opts.console_socket, console=theirs, no_pivot=opts.no_pivot,
               no_new_keyring=opts.no_new_keyring, preserve_fds=opts.preserve_fds,
               systemd_cgroup=ctx.systemd_cgroup)
    if theirs is not None:
        theirs.close()
    pid = c.state.pid
    try:
        if opts.detach:
            start(ctx.root, opts.container_id)
            return 0
        for sig in FORWARDED:
            signal.signal(sig, lambda s, _f: _forward(pid, s))
        master = _receive_master(ours) if ours is not None else None
        start(ctx.root, opts.container_id)
        status = _wait(pid, master)
    except BaseException:
        delete(ctx.root, opts.container_id, force=True)
        raise
    if not opts.keep:
        delete(ctx.root, opts.container_id, force=True)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _wants_terminal(bundle):
    import json
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            return bool(json.load(f).get("process", {}).get("terminal"))
    except (OSError, ValueError, AttributeError):
        return False


def _forward(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _receive_master(sock):
    fds = array.array("i")
    _, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
    sock.close()
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:fds.itemsize])
    return fds[0] if fds else None


def _wait(pid, master):
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
        tty.setraw(0)
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
        os.close(pidfd)
        os.close(master)
        sys.stdout.flush()
