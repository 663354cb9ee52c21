"""`pyruntime server`: accept clients on <root>/@server/sock, one thread per request.

Safe by construction: the socket's directory is 0700 and the server's own; a peer must have
the server's uid (SO_PEERCRED) and share its mount, user and pid namespaces (paths and pids
mean the same on both sides); every message is checked before use; the server never runs a
container's code (its init is the client's child); it keeps nothing that is not on disk, so
killing it at any instant loses no container, and clients then run in-process.
"""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

from pyruntime import log
from pyruntime.errors import RuntimeFailure
from pyruntime.lifecycle import container
from pyruntime.server import wire
from pyruntime.server.messages import Refused, field, recv, send


class _Stop(Exception):
    pass


# What a create or an exec imports on its way, here and in the children it forks: imported
# once, before serving (a child's import would be paid again in every child). Not the rare
# ones that pull in a large dependency (netDevices' pyroute2, systemd's jeepney).
WARM = ("pyruntime.oci.config", "pyruntime.oci.mounts", "pyruntime.lifecycle.exec",
        "pyruntime.lifecycle.hooks", "pyruntime.setup.init", "pyruntime.setup.rootfs",
        "pyruntime.setup.mountattr", "pyruntime.setup.process", "pyruntime.setup.execshim",
        "pyruntime.setup.sealed", "pyruntime.cgroups.cgroupfs", "pyruntime.cgroups.v1",
        "pyruntime.cgroups.v2", "pyruntime.cgroups.devices", "pyruntime.cgroups.delegation",
        "pyruntime.cgroups.placement", "pyruntime.linux.mempolicy", "pyruntime.seccomp.compile",
        "pyruntime.seccomp.notify", "pyruntime.server.remote")


def serve(root: str, debug: bool = False) -> int:
    import signal
    import warnings
    # forking from a thread is what this process is for: each child only runs our own code
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork.*")
    for name in WARM:
        __import__(name)
    import gc
    gc.freeze()  # the collector then leaves these objects, so forks copy fewer pages
    root = os.path.realpath(root)
    path = wire.socket_path(root)
    listener = _listen(root, path)
    log.capture_warnings(threading.local())
    server = Server(root, debug)

    def stop(_sig, _frame):
        raise _Stop
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"pyruntime server: serving {root} on {path} (pid {os.getpid()})", flush=True)
    handlers: list[threading.Thread] = []
    try:
        while True:
            conn, _ = listener.accept()
            handlers = [t for t in handlers if t.is_alive()]
            t = threading.Thread(target=server.handle, args=(conn,), daemon=True)
            t.start()
            handlers.append(t)
    except _Stop:
        pass
    finally:
        listener.close()
        for p in (path, os.path.dirname(path)):
            try:
                os.unlink(p) if p == path else os.rmdir(p)
            except OSError:
                pass
    deadline = time.monotonic() + 30  # let requests in flight finish
    for t in handlers:
        t.join(max(0.0, deadline - time.monotonic()))
    return 0


def _listen(root: str, path: str):
    d = os.path.dirname(path)
    os.makedirs(root, 0o700, exist_ok=True)
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(d)
    if not os.path.isdir(d) or os.path.islink(d) or st.st_uid != os.geteuid():
        raise RuntimeFailure(f"{d}: not a directory of this user's: refusing to serve there")
    os.chmod(d, 0o700)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
        raise RuntimeFailure(f"a server already serves {root} ({path})")
    except (FileNotFoundError, ConnectionRefusedError):
        try:
            os.unlink(path)  # a dead server's socket
        except FileNotFoundError:
            pass
    finally:
        probe.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    s.bind(path)
    os.chmod(path, 0o600)
    s.listen(128)
    return s


class Server:
    def __init__(self, root: str, debug: bool):
        self.root, self.debug = root, debug
        self.ns = {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in ("mnt", "user", "pid")}

    def handle(self, conn) -> None:
        t0 = time.monotonic()
        what, cid = "request", "?"
        warnings = log.capture_start()
        try:
            # read before anything is refused: closing a connection with its request unread
            # would reset it, and the client would lose the answer
            req, _ = recv(conn, wire.CREATE, wire.EXEC)
            peer = self._peer(conn)
            if req.get("version") != wire.VERSION:
                raise Refused(f"client version {req.get('version')!r}, server {wire.VERSION}")
            what = field(req, "command", str, lambda v: v in ("create", "run", "exec"))
            cid = field(req, "id", str)
            if (req["type"] == wire.EXEC) != (what == "exec"):
                raise Refused(f"a {req['type']} message for {what}")
            if os.path.realpath(field(req, "root", str)) != self.root:
                raise Refused(f"root {req['root']!r} is not this server's")
            from pyruntime.server.remote import Joiner
            cwd = req.get("client_cwd")
            if type(cwd) is not str or not os.path.isabs(cwd):
                raise Refused(f"bad field 'client_cwd': {cwd!r}")
            joiner = Joiner(conn, peer, cwd)
            try:
                serve = self._serve_exec if what == "exec" else self._serve_create
                serve(conn, req, warnings, joiner)
            finally:
                joiner.close()
            self._say(f"{what} {cid}: served in {(time.monotonic() - t0) * 1e3:.1f} ms")
        except Refused as e:
            self._say(f"{what} {cid}: refused: {e}")
            self._reply(conn, wire.REFUSED, reason=str(e))
        except RuntimeFailure as e:
            self._say(f"{what} {cid}: failed: {e}")
            self._reply(conn, wire.ERROR, warnings=warnings, **e.record())
        except (EOFError, BrokenPipeError, ConnectionResetError):  # (the channels' are PeerGone)
            self._say(f"{what} {cid}: the client went away")
        except OSError as e:  # one that create did not name itself: which file, and why
            where = f" {e.filename}" if e.filename else ""
            self._say(f"{what} {cid}: failed:{where}: {e.strerror or e}")
            self._reply(conn, wire.ERROR, warnings=warnings,
                        msg=f"{what}:{where}: {e.strerror or e}", errno=e.errno)
        except Exception as e:  # a bug: one line for the client, the server goes on
            self._say(f"{what} {cid}: internal error: {type(e).__name__}: {e}")
            self._reply(conn, wire.ERROR, msg=f"server: internal error: {type(e).__name__}: {e}")
        finally:
            log.capture_end()
            conn.close()

    def _say(self, line: str) -> None:
        if self.debug:
            os.write(1, f"pyruntime server: {line}\n".encode(errors="backslashreplace"))

    @staticmethod
    def _reply(conn, kind, **fields) -> None:
        try:
            send(conn, kind, **fields)
        except OSError:
            pass

    def _peer(self, conn) -> int:
        pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
        if uid != os.geteuid() or pid <= 0:
            raise Refused(f"peer uid {uid} pid {pid}: not this server's user")
        for name, ino in self.ns.items():
            try:
                theirs = os.stat(f"/proc/{pid}/ns/{name}").st_ino
            except FileNotFoundError:
                raise EOFError from None  # gone already
            if theirs != ino:
                raise Refused(f"the client is in another {name} namespace")
        return pid

    def _serve_create(self, conn, req: dict, warnings: list, joiner) -> None:
        from pyruntime.oci import config as configmod
        bundle = field(req, "bundle", str, os.path.isabs)
        preserve = field(req, "preserve_fds", int, lambda v: 0 <= v < 1 << 16)
        keyring = field(req, "no_new_keyring", bool)
        console = field(req, "console", bool)
        cfg = configmod.load(bundle)  # a bad config: the error the client prints
        unsupported(cfg, console)
        container.create(self.root, req["id"], bundle, preserve_fds=preserve,
                         no_new_keyring=keyring, reexec=False, cfg=cfg, joiner=joiner)
        send(conn, wire.CREATED, pid=joiner.pid, warnings=warnings)


    def _serve_exec(self, conn, req: dict, warnings: list, joiner) -> None:
        from pyruntime.lean import jsonio
        from pyruntime.lifecycle import exec as execmod
        from pyruntime.lifecycle.state import Container

        def strings(name):
            v = field(req, name, list)
            if not all(type(x) is str for x in v):
                raise Refused(f"bad field {name!r}: {v!r}")
            return v

        def text_or_none(name):
            v = req.get(name)
            if v is not None and type(v) is not str:
                raise Refused(f"bad field {name!r}: {v!r}")
            return v
        args, env, gids, caps, subs = (strings(n) for n in (
            "args", "env", "additional_gids", "caps", "cgroups"))
        process, cwd, user, apparmor, label = (text_or_none(n) for n in (
            "process", "cwd", "user", "apparmor", "process_label"))
        preserve = field(req, "preserve_fds", int, lambda v: 0 <= v < 1 << 16)
        flags = {n: field(req, n, bool) for n in ("tty", "no_new_privs", "ignore_paused",
                                                  "console")}
        process_json = None
        if process is not None:
            if not os.path.isabs(process):
                raise Refused(f"bad field 'process': {process!r}")
            given = text_or_none("process_name") or process  # as the caller spelt it
            try:
                with open(process) as f:
                    process_json = jsonio.load(f)
            except OSError as e:
                raise RuntimeFailure(f"--process {given}: {e.strerror}", errno=e.errno) from None
            except ValueError as e:
                raise RuntimeFailure(f"--process {given}: not valid JSON: {e}") from None
        elif not args:
            raise RuntimeFailure("exec: no command given (args or --process)")
        c = Container.load(self.root, req["id"])
        proc = execmod.build_process(c, process_json, args, cwd=cwd, env=env, user=user,
                                     additional_gids=gids, caps=caps,
                                     no_new_privs=flags["no_new_privs"], tty=flags["tty"],
                                     apparmor=apparmor, process_label=label)
        if proc.terminal and not flags["console"]:
            raise Refused("a terminal without --console-socket")
        if c.state.pid and execmod.needs_seal(c, c.state.pid):
            raise Refused("a container that needs the sealed interpreter")
        pid = execmod.exec_process(self.root, req["id"], proc, preserve_fds=preserve,
                                   ignore_paused=flags["ignore_paused"], cgroup=subs,
                                   reexec=False, joiner=joiner)
        send(conn, wire.EXECED, pid=pid, warnings=warnings)


def unsupported(cfg, console: bool) -> None:
    """Refused: what the server does not prepare, which the client then runs in-process."""
    linux = cfg.linux
    pid_ns, mnt_ns = linux.namespace("pid"), linux.namespace("mount")
    if linux.namespace("user") is not None:
        raise Refused("a user namespace")
    if pid_ns is None or pid_ns.path:
        raise Refused("no new pid namespace")
    if mnt_ns is None or mnt_ns.path:
        raise Refused("no new mount namespace")
    if linux.namespace("time") is not None:
        raise Refused("a time namespace")
    if cfg.process is not None and cfg.process.terminal and not console:
        raise Refused("a terminal without --console-socket")
