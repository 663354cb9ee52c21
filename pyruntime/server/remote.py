"""The server's handle on an init that its client forks: what lifecycle/container.py's create
needs to prepare a container for an init that is not its own child."""
from __future__ import annotations

import os
import socket
import threading

from pyruntime.lifecycle.channel import Channel
from pyruntime.linux import namespaces
from pyruntime.server import messages, wire

# The namespaces a config may leave out: the container then shares the caller's (not the
# server's), so the preparer joins the init's, which are still the client's.
_CALLERS = ("network", "ipc", "uts", "cgroup")


class Joiner:
    """The client's child: the init (create) or the bootstrap child (exec): pid, pidfd,
    chan and the client's stdio, once forked() or spawn_exec() returned."""

    def __init__(self, conn, peer: int, cwd: str | None = None):
        self._conn, self._peer, self._fds = conn, peer, []
        self.cwd = cwd  # the client's, for the hooks the server runs
        self.pid, self.pidfd, self.chan, self.stdio = 0, -1, None, [None, None, None]
        self._mover = self._placement = None
        self._went = False  # GO sent: the client forks its child, and INIT follows

    def cgroups_ready(self, mgr) -> None:
        """create: the cgroups exist: the client forks the init into them now (GO), PID 1 of
        a new pid namespace, while we go on; forked() then takes its pid."""
        self._placement = mgr.placement()
        self._go(self._placement, pid_ns=True)

    def forked(self) -> None:
        """create: the init exists (INIT). A cgroup2 move waits for the kernel-wide lock (and
        an RCU grace period): the client's clone3 saves it; otherwise a thread of ours moves
        it while we go on."""
        placed = self._forked()
        if self._placement.v2 and not placed:
            self._mover = _Mover(self._placement.v2, self.pid)

    def spawn_exec(self, placement, ns_fds, proc, in_user_ns, seccomp_prog, preserve_fds,
                   notify, memory_policy) -> tuple[int, Channel]:
        """exec: the client forks the bootstrap child (so that the process is the caller's)
        and we hand it what it needs (PLAN); it then talks the channel's exec protocol."""
        from pyruntime.lifecycle.channel import PLAN
        from pyruntime.lifecycle.exec import plan_message
        self._go(placement, pid_ns=False)
        placed = self._forked()
        if placement is not None:
            placement.born_in_v2 = placed
        msg, fds = plan_message(ns_fds, proc, in_user_ns, seccomp_prog, preserve_fds, notify,
                                memory_policy)
        self.chan.send_fds(PLAN, fds, **msg)
        return self.pid, self.chan

    def _go(self, placement, pid_ns: bool) -> None:
        """GO: the client forks its child into the cgroups."""
        if placement is not None and not placement.self_move:
            raise messages.Refused("cgroups that the child cannot enter by itself")
        self._went = True
        messages.send(self._conn, wire.GO, pid_ns=pid_ns,
                      tasks=placement.v1 if placement else [],
                      cgroup2=placement.v2 if placement else None)

    def _forked(self) -> bool:
        """INIT: the client's child exists; whether it was born in the cgroup2 cgroup."""
        msg, self._fds = messages.recv(self._conn, wire.INIT)
        fds = self._fds
        stdio = msg.get("stdio")
        if not (isinstance(stdio, list) and set(stdio) <= {0, 1, 2} and
                len(set(stdio)) == len(stdio) and len(fds) == len(stdio) + 1):
            raise messages.Refused("the INIT message's fds do not match its stdio")
        pid = messages.field(msg, "pid", int, lambda v: v > 1)
        try:
            self.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            from pyruntime.errors import PeerGone
            from pyruntime.lifecycle.channel import GONE
            raise PeerGone(GONE) from None
        if messages.parent(pid) != self._peer:
            raise messages.Refused(f"pid {pid} is not the client's child")
        self.pid = pid
        self.chan = Channel(socket.socket(fileno=fds[-1]))
        self._fds = fds[:-1]
        given = dict(zip(stdio, fds))
        self.stdio = [given.get(i) for i in (0, 1, 2)]
        return msg.get("placed") is True

    def arrived(self) -> int:
        """For an abort: the client's child's pid (0: none), waiting for its INIT if GO went
        out and it has not come yet (a preparer forked first can fail before)."""
        if self._went and not self.pid and self.chan is None:
            try:
                self._forked()
            except Exception:  # the client is gone, or talks nonsense: no child to kill
                pass
        return self.pid

    def preparer_first(self, cfg) -> bool:
        """create: whether the preparer can be forked before the init, outside its pid
        namespace, so that its fork and namespaces overlap the client's imports. It needs the
        init's pid namespace for its proc mount (made from the init's PROCFS context
        instead, if the kernel has fsopen and fsmount takes its flags) and for the
        createContainer hooks (run in the container's namespaces, so not then)."""
        from pyruntime.oci.mounts import parse_options
        from pyruntime.setup.rootfs import CONTEXT_FLAGS
        if cfg.hooks.get("createContainer") or not _proc_contexts_work():
            return False
        # exactly one: the preparer then reads the context (relayed to it) at that mount
        procs = [parse_options(m.options)[0] for m in cfg.mounts if m.type == "proc"]
        return len(procs) == 1 and not procs[0] & ~sum(CONTEXT_FLAGS)

    def proc_context(self, required: bool) -> int:
        """create: the init's first message, PROCFS: an fsopen("proc") fd it made in its pid
        namespace, for a preparer outside it. -1 if it could not and it is not `required`."""
        from pyruntime.lifecycle.channel import PROCFS
        msg, fds = self.chan.recv_fds(PROCFS)
        if len(fds) == 1:
            return fds[0]
        for fd in fds:
            os.close(fd)
        if required:
            from pyruntime.errors import RuntimeFailure
            raise RuntimeFailure(f"the init could not make a proc context: {msg.get('error')}",
                                 errno=msg.get("errno") if type(msg.get("errno")) is int else None)
        return -1

    def moved(self) -> None:
        if self._mover is not None:
            self._mover.result()

    def callers_namespaces(self, linux, opened: list) -> list:
        """`opened` (the config's paths) and the caller's namespaces of the types the config
        does not list, in joining order: the client's, which its init inherits."""
        out = list(opened)
        try:
            for kind in _CALLERS:
                if linux.namespace(kind) is not None:
                    continue
                name = namespaces.PROC_NAME[kind]
                theirs = f"/proc/{self._peer}/ns/{name}"
                try:
                    if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                        continue
                except FileNotFoundError:
                    continue
                out.append((kind, os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)))
        except BaseException:
            for _, fd in out[len(opened):]:
                os.close(fd)
            raise
        out.sort(key=lambda t: namespaces.JOIN_ORDER.index(t[0]))
        return out

    def close(self) -> None:
        if self._mover is not None:
            self._mover.thread.join()
        if self.pidfd >= 0:
            os.close(self.pidfd)
        if self.chan is not None:
            self.chan.sock.close()
        for fd in self._fds:
            os.close(fd)


_contexts = None


def _proc_contexts_work() -> bool:
    """Whether this kernel makes proc contexts (fsopen, linux 5.2), asked once."""
    global _contexts
    if _contexts is None:
        from pyruntime.linux import syscalls
        try:
            os.close(syscalls.fsopen("proc"))
            _contexts = True
        except OSError:
            _contexts = False
    return _contexts


class _Mover:
    """Moves the init into its cgroup2 cgroup, beside the rest of the create."""

    def __init__(self, cgroup2: str, pid: int):
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(cgroup2, pid), daemon=True)
        self.thread.start()

    def _run(self, cgroup2, pid):
        from pyruntime.cgroups.placement import add
        try:
            add(cgroup2, "cgroup.procs", pid, f"pid {pid}", cgroup2=True)
        except BaseException as e:
            self.error = e

    def result(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error
