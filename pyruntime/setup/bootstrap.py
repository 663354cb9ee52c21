"""What `create` and `exec` share around their children, on both sides of the fork.

The parent connects the console socket, forks a bootstrap child (spawn) and, should it fail
after that, kills and reaps it. The bootstrap child enters the container's cgroups where it can
itself (cgroups/placement.py), waits until the parent has put it into the rest (in_cgroup),
joins namespaces (enter), then forks the process that goes on, held until
the parent has its pid (fork_held): the init for `create`, the new process for `exec`. That
one may set a terminal up (setup_terminal). Whichever fails reports it over the channel
(fail) and exits: it never returns into the caller's code. The messages are in
lifecycle/channel.py.
"""
from __future__ import annotations

import errno
import os

from pyruntime import log
from pyruntime.errors import RuntimeFailure
from pyruntime.lean import signal, socket
from pyruntime.lifecycle.channel import GO, MOVED, PID, TRACE, Channel
from pyruntime.linux import namespaces, syscalls

# The lifecycle step a child is at: a failure that names none is reported as this one's.
_step: str | None = None


def at(step: str) -> None:
    global _step
    _step = step


# ---------------------------------------------------------------- the parent

def console_socket(terminal: bool, path: str | None,
                   given: socket.socket | None) -> socket.socket | None:
    """The socket the terminal's master goes to: a copy of `given` (the API's), else a
    connection to --console-socket; None without a terminal."""
    if not terminal:
        return None
    if given is not None:
        return socket.socket(fileno=os.dup(given.fileno()))
    if not path:
        raise RuntimeFailure("process.terminal is true: --console-socket is required")
    try:
        from pyruntime.linux import console
        return console.connect(path)
    except OSError as e:
        raise RuntimeFailure(f"--console-socket {path}: {e.strerror}", errno=e.errno) from None


def spawn(who: str, main, *args, cgroup: Placement | None = None,
          pid_ns: int = -1) -> tuple[int, Channel]:
    """Fork the bootstrap child, which enters what it can of `cgroup` itself, reports MOVED,
    then runs main(chan, *args) and never returns; `who` names it in failures that are not a
    RuntimeFailure. Returns its pid and the parent's end; the parent goes on with in_cgroup.
    pid_ns: an fd (a pidfd will do) of the pid namespace to fork it into."""
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        with _forking_into(pid_ns):
            pid = cgroup.fork() if cgroup is not None else os.fork()
    except BaseException:
        parent_sock.close()
        child_sock.close()
        raise
    if pid == 0:
        parent_sock.close()
        chan = Channel(child_sock)
        try:
            at("cgroups")
            if cgroup is not None:
                cgroup.child()
            chan.send(MOVED)
            main(chan, *args)
        except BaseException as e:
            fail(chan, e, who)
        os._exit(1)  # main ends in execve or os._exit
    child_sock.close()
    return pid, Channel(parent_sock)


class _forking_into:
    """setns(CLONE_NEWPID) sets where this thread's next children are born, not this thread's
    own namespace (and concerns no other thread of the process): set it for one fork, then
    back. A thread whose children would go on being born there is not left behind: failing
    that, the process ends."""

    def __init__(self, pid_ns: int):
        self.pid_ns, self.own, self.parent = pid_ns, -1, os.getpid()

    def __enter__(self):
        if self.pid_ns >= 0:
            self.own = os.open("/proc/thread-self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            try:
                syscalls.SYS.setns(self.pid_ns, namespaces.FLAGS["pid"])
            except BaseException:
                os.close(self.own)
                raise

    def __exit__(self, *exc):
        if self.own < 0:
            return
        if os.getpid() != self.parent:  # the child: born where it belongs
            os.close(self.own)
            return
        try:
            syscalls.SYS.setns(self.own, namespaces.FLAGS["pid"])
        except BaseException:
            os.write(2, b"pyruntime: cannot return to its own pid namespace: exiting\n")
            os._exit(70)
        os.close(self.own)


def in_cgroup(chan: Channel, pid: int, cgroup: Placement | None) -> None:
    """The parent's part: once the child has moved itself, move it where it could not go."""
    chan.recv(MOVED)
    if cgroup is not None:
        cgroup.parent(pid)


def kill_and_reap(pid: int) -> None:
    """SIGKILL a child of ours and reap it; one already gone is fine."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


# ---------------------------------------------------------------- the children

def enter(chan: Channel, ns_fds) -> None:
    """The bootstrap child's first steps: hide our /proc/<pid>/exe from the container, wait
    until the parent has put us into the container's cgroup, join the namespaces given."""
    at("namespaces")
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
    chan.recv(GO)
    if ns_fds:
        log.debug(f"nsexec container setup: joining {[k for k, _ in ns_fds]} namespaces", stage=1)
    namespaces.join(ns_fds)


def fork_held(chan: Channel, who: str, main, *args) -> None:
    """Fork the process that goes on, report its pid and exit. It shares our channel, so it
    waits for us to send PID first; it is handed its host pid too (inside a new pid namespace
    it cannot learn it, and a seccomp agent is told it). It runs main(chan, host_pid, *args)."""
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(hold_w)
        host_pid = int(os.read(hold_r, 32) or 0)
        os.close(hold_r)
        try:
            main(chan, host_pid, *args)
        except BaseException as e:
            fail(chan, e, who)
        os._exit(1)
    chan.send(PID, pid=pid)
    os.write(hold_w, str(pid).encode())
    os._exit(0)


def fail(chan: Channel, e: BaseException, who: str) -> None:
    """Report e to the parent as an ERROR and exit."""
    if TRACE:
        TRACE.print_exception(e)
    if isinstance(e, OSError):
        e = RuntimeFailure(f"{who}: {e}", errno=e.errno, step=_step)
    elif not isinstance(e, RuntimeFailure):
        e = RuntimeFailure(f"{who}: internal error: {type(e).__name__}: {e}", step=_step)
    elif e.step is None:
        e.step = _step
    if e.errno == errno.ENOENT and "/proc/" in str(e) and not os.path.exists("/proc/self"):
        # runc fails on any config without a proc; we run it (rootfs.proc_mounted), so a
        # step still reaching into /proc says why, not only which path was missing
        e = RuntimeFailure(f"{e} (no proc is mounted at /proc in the container, and this step "
                           f"needs one)", errno=e.errno, path=e.path, step=e.step)
    try:
        chan.fail(e)
    except OSError:
        pass
    os._exit(1)


def setup_terminal(proc, sock: socket.socket | None, *, bind_console: bool,
                   proc_mounted: bool = True) -> None:
    """A new pty: its master goes to the console socket, its peer becomes our controlling
    terminal (and, for the init, /dev/console; see rootfs.proc_mounted)."""
    if sock is None:
        raise RuntimeFailure("process.terminal is true but no --console-socket was given")
    from pyruntime.linux import console  # (preloaded where this runs in the container's root)
    master, peer = console.open_pty()
    console.give_to(peer, proc.user.uid)
    if proc.console_size:
        console.set_size(peer, *proc.console_size)
    if bind_console:
        console.bind_console(peer, proc_mounted)
    console.send_master(sock, master)
    os.close(master)
    sock.close()
    console.make_controlling(peer)
    os.close(peer)


def keep_only(chan: Channel, a) -> None:
    """In a child forked from a thread of the warm server, which holds every request's fds
    (clients' sockets and stdio, other inits' channels): keep stdio, the channel and what
    this create opened for its child (InitArgs a), close the rest. Otherwise a createContainer
    hook that runs long would keep another container's stdout from reaching EOF."""
    from pyruntime.setup.process import close_fds
    keep = {chan.sock.fileno(), a.fifo_fd, *(fd for _, fd in a.ns_fds), *a.bind_sources.values(),
            *(m.idmap_fd for m in a.cfg.mounts), *log.fds()}
    if a.listener is not None:
        keep.add(a.listener.fileno())
    close_fds(2, tuple(fd for fd in keep if fd > 2))


def redirect_stdio(stdio) -> None:
    """In a forked child: make each fd of stdio (None: keep ours) that child's fd 0, 1, 2."""
    if not stdio:
        return
    import fcntl
    try:
        # above 2 first: one of them may be another's target (stdout given as stderr)
        high = [None if fd is None else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
                for fd in stdio]
        for i, fd in enumerate(high):
            if fd is not None:
                os.dup2(fd, i)
                os.close(fd)
    except BaseException:
        os._exit(1)  # a forked child never returns into its parent's code
