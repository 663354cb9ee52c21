"""The parent <-> child protocol of `create` and `exec`: named JSON messages over SOCK_SEQPACKET,
then, for `create`, a marker byte on exec.fifo.

create (the parent is the `create` command; the init is PID 1 of the container)::

    parent                       bootstrap child                 init
    fork (clone3 into the -----> moves itself into each v1
    cgroup2 dir, if it can)      hierarchy (tasks)
                       MOVED <-- (waits)
    cgroup: add pid where the
    child could not go, apply
    GO ------------------------> join and unshare namespaces
                      USERNS <-- (a new user namespace only)
    write uid/gid maps
    MAPPED --------------------> become root in it, unshare the rest
                                 fork the init -----------------> (held until PID is sent)
                         PID <-- pid=<host pid>; exit
    net devices, intelRdt                                        mounts, devices
                       HOOKS <---------------------------------- (the rootfs is ready)
    prestart, createRuntime
    HOOKS_DONE state=<state> -----------------------------------> createContainer hooks,
                                                                 root switch .. keyring
                     CREATED <---------------------------------- closes the channel
    (create returns)                                             exec shim, bounding set,
                                                                 rlimits .. seccomp, fds;
                                                                 execve(shim), which opens
                                                                 exec.fifo: blocks
    `start` opens exec.fifo ------------------------------------> writes FIFO_READY, execve
    `start` reads to EOF: FIFO_READY then EOF means the process called execve (the fifo is
    close-on-exec); FIFO_READY, FIFO_ERROR, ERROR means the last steps or execve failed.

    The shim waits on the fifo unless there are startContainer hooks or a seccomp listener,
    a filter is loaded after no_new_privs, or the process goes without a shim (init.py's
    _shim_waits). Otherwise the init opens exec.fifo itself after the exec shim and the
    bounding set, and takes the other last steps and the startContainer hooks after it.

create through the warm server (server/): the server is the parent; once the cgroups exist its
client forks the init (PID 1 of a new pid namespace, the caller's child, born in the cgroup2
cgroup; it enters the v1 ones itself) and hands the server a channel to it (server/wire.py).
The server forks the bootstrap child, the preparer, which makes the other namespaces and the
rootfs, does not fork, and enters the cgroups only to create a cgroup namespace. It forks it
before the init exists (while the client still imports), outside the init's pid namespace:
the init's first message is a proc context made in that namespace (fsopen), from which the
preparer mounts /proc. With createContainer hooks (they run in the container's pid
namespace) or a proc mount fsmount cannot make, it forks it after INIT, into the init's pid
namespace (PID 2 there), and the context is not used::

    server                       preparer                        init (the client's child)
    cgroup limits; fork -------> (as above, to GO)
                       MOVED <--
    GO ------------------------> join and unshare namespaces,
                                 all but the pid one
    the client's INIT
                      PROCFS <---------------------------------- fd=fsopen("proc")
    PROCFS fd=<context> -------> (kept for the proc mount)
                  NAMESPACES <-- fds=<ns>
    JOIN fds=<ns, fifo> args=<config> ---------------------------> join the namespaces
                                 mounts, devices
                      JOINED <---------------------------------- exec shim, bounding set
                                                                 (if the init waits itself)
                       HOOKS <-- (the rootfs is ready)
    prestart, createRuntime
    HOOKS_DONE state=<state> --> createContainer hooks,
                                 root switch .. sysctls
                    PREPARED <-- exit
    PREPARED state=<state> --------------------------------------> (its root was switched
                                                                 too) terminal .. keyring
                     CREATED <---------------------------------- as above

exec (the process is the program `exec` runs)::

    parent                       bootstrap child                 process
    fork, as for create -------> moves itself, as for create
                       MOVED <-- (waits)
    affinity, cgroup, intelRdt
    GO ------------------------> join the init's namespaces
                                 fork the process --------------> (held until PID is sent)
                         PID <-- pid=<host pid>; exit            console, cwd .. seccomp
                    EOF or ERROR <------------------------------ execve (the channel is
                                                                 close-on-exec)

At any step a child may send ERROR (the error's message, errno, config path and step) instead
of what the parent expects, and exit; EOF where a message is due means the child died.
"""
from __future__ import annotations

import os

from pyruntime.lean import fdpass, jsonio, socket
from pyruntime.errors import PeerGone, ProtocolError, RuntimeFailure

# PYRUNTIME_TRACE=1: full tracebacks from the container side on stderr, for debugging. Imported
# up front because nothing can be imported once the process has switched to the container's root.
TRACE = __import__("traceback") if os.environ.get("PYRUNTIME_TRACE") else None

# the messages (a message's "type")
MOVED = "moved"            # bootstrap -> parent: I am in the cgroups I could enter myself
GO = "go"                  # parent -> bootstrap: you are in the container's cgroup
USERNS = "userns"          # bootstrap -> parent: I unshared a user namespace, map it
MAPPED = "mapped"          # parent -> bootstrap: the uid/gid maps are written
PID = "pid"                # bootstrap -> parent: the host pid of the init (or exec's process)
HOOKS = "hooks"            # init -> parent: mounts done, run prestart and createRuntime
HOOKS_DONE = "hooks-done"  # parent -> init: done; carries the state the hooks were given
CREATED = "created"        # init -> parent: set up; now blocking on exec.fifo
PREPARED = "prepared"      # preparer -> server -> init: the root is switched, all is ready
NAMESPACES = "namespaces"  # preparer -> server: the namespaces it made (fds), for the init
JOIN = "join"              # server -> init: join these namespaces (fds)
PROCFS = "procfs"          # init -> server -> preparer: fsopen("proc") in the init's pid namespace
JOINED = "joined"          # init -> server: done (the hooks may look at them through us)
PLAN = "plan"              # server -> exec's bootstrap child: what to join and to run
ERROR = "error"            # child -> parent: a failure (then the child exits)

# what the init writes to exec.fifo once `start` opens it
FIFO_READY = b"0"   # first: the init is about to finish (EOF follows at its execve)
FIFO_ERROR = b"E"   # then, on a failure: this byte and the message

GONE = "the container init exited during setup"
GONE_BEFORE_START = "the container init exited before it could start the process"


def error_message(e: RuntimeFailure) -> bytes:
    """A whole ERROR message, for writers that are not a Channel (the exec shim)."""
    return jsonio.dumps({"type": ERROR, **e.record()}).encode()


def fifo_error(e: RuntimeFailure) -> bytes:
    """What the init writes to exec.fifo (after FIFO_READY) when it fails."""
    return FIFO_ERROR + error_message(e)


def check_fifo(data: bytes) -> None:
    """All `start` read from exec.fifo: returns if the init reached its execve, else raises
    its failure."""
    if data.startswith(FIFO_READY) and FIFO_ERROR not in data:
        return
    if FIFO_ERROR not in data:
        raise PeerGone(GONE_BEFORE_START)
    payload = data.split(FIFO_ERROR, 1)[1]
    try:
        msg = jsonio.loads(payload)
    except ValueError:
        msg = None
    if not isinstance(msg, dict) or msg.get("type") != ERROR:
        # an init that an older pyruntime created writes the bare message
        raise RuntimeFailure(payload.decode(errors="replace"))
    raise RuntimeFailure.from_record(msg)


class Channel:
    """Named JSON messages over a SOCK_SEQPACKET socket; EOF means the peer died."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def send(self, kind: str, **fields) -> None:
        try:
            self.sock.send(jsonio.dumps({"type": kind, **fields}).encode())
        except (BrokenPipeError, ConnectionResetError):
            raise PeerGone(GONE) from None

    def fail(self, e: RuntimeFailure) -> None:
        self.sock.send(error_message(e))

    def send_fds(self, kind: str, fds, **fields) -> None:
        try:
            fdpass.send(self.sock, jsonio.dumps({"type": kind, **fields}).encode(), fds)
        except (BrokenPipeError, ConnectionResetError):
            raise PeerGone(GONE) from None

    def recv_fds(self, *expect: str) -> tuple[dict, list[int]]:
        """As recv, for a message that carries fds (closed here if the message is not the
        one expected)."""
        data, fds = fdpass.recv(self.sock, 1 << 20)
        try:
            msg = self._decode(data, expect)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        if msg is None:
            raise PeerGone(GONE)
        return msg, fds

    def recv(self, *expect: str) -> dict:
        """The next message, which must be one of `expect`; an ERROR is raised as the
        RuntimeFailure it carries, EOF as PeerGone."""
        msg = self.recv_or_eof(*expect)
        if msg is None:
            raise PeerGone(GONE)
        return msg

    def recv_or_eof(self, *expect: str) -> dict | None:
        """As recv, but EOF (the peer closed it, e.g. by execve) is None. A peer that died
        with messages of ours unread resets the socket: that error comes first, then what it
        sent before it went, then EOF (fdpass.recv reads on past it alike)."""
        while True:
            try:
                return self._decode(self.sock.recv(1 << 16), expect)
            except ConnectionResetError:
                continue

    @staticmethod
    def _decode(data: bytes, expect) -> dict | None:
        if not data:
            return None
        msg = jsonio.loads(data)
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == ERROR:
            raise RuntimeFailure.from_record(msg)
        if kind not in expect:
            raise ProtocolError(expect, kind)
        return msg
