"""The container side of `create`, top to bottom in the order of the runtime-spec lifecycle.

`create` forks a bootstrap child (bootstrap()), which joins and creates the namespaces and forks
the init (init_main()), PID 1 of the new pid namespace. Both talk to the parent over a
SOCK_SEQPACKET channel; the init reports "created" and then blocks on exec.fifo until `start`.
Nothing here returns: each process ends in execve or os._exit.
"""
from __future__ import annotations

import os
import struct

import prctl

from pyruntime.lean import socket
from pyruntime.linux import console, namespaces, syscalls as sc
from pyruntime.lifecycle import hooks
from pyruntime import log
from pyruntime.setup import process, rootfs
from pyruntime.lifecycle.channel import TRACE, Channel
from pyruntime.errors import RuntimeFailure
from pyruntime.lean.records import record

@record
class InitArgs:
    """What the parent hands to the forked children (they share its memory)."""
    cfg: object
    container_id: str
    bundle: str
    fifo_fd: int  # O_PATH: the init may not be able to reach the state dir by path
    ns_fds: list
    console_sock: socket.socket | None
    no_pivot: bool
    no_new_keyring: bool
    preserve_fds: int
    cgroup_paths: dict
    cgroup_mode: str
    seccomp: object  # a seccomp.compile.Program made before the fork, or None
    bind_sources: dict  # mount index -> detached copy of its source, made before a user ns
    caller_waits: bool  # `run` in the foreground: it holds its stderr until the end anyway
    listener: socket.socket | None  # connected to linux.seccomp.listenerPath


def bootstrap(chan: Channel, a: InitArgs) -> None:
    """The bootstrap child: namespaces, then fork the init and report its pid."""
    try:
        prctl.set_dumpable(False)  # no /proc/<pid>/exe of ours for the container to open
        chan.recv("go")  # the parent has put us in the container's cgroup
        linux = a.cfg.linux
        if a.ns_fds:
            log.debug(f"nsexec container setup: joining {[k for k, _ in a.ns_fds]} namespaces",
                      stage=1)
        namespaces.join(a.ns_fds)
        if namespaces.new_flags(linux, ("user",)):
            sc.unshare(sc.CLONE_NEWUSER)
            chan.send("userns")
            chan.recv("mapped")
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        flags = namespaces.new_flags(linux) & ~sc.CLONE_NEWUSER
        if flags:
            log.debug(f"nsexec container setup: unsharing namespaces (flags {flags:#x})", stage=1)
            sc.unshare(flags)
        if linux.time_offsets and flags & sc.CLONE_NEWTIME:
            namespaces.write_time_offsets(linux.time_offsets)
        # The init shares our channel: hold it back until the parent has its pid.
        hold_r, hold_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(hold_w)
            os.read(hold_r, 1)
            os.close(hold_r)
            init_main(chan, a)
        chan.send("pid", pid=pid)
        os.write(hold_w, b"1")
        os._exit(0)
    except BaseException as e:
        _fail(chan, e)


def init_main(chan: Channel, a: InitArgs) -> None:
    try:
        _init(chan, a)
    except BaseException as e:
        _fail(chan, e)


def _fail(chan: Channel, e: BaseException) -> None:
    if TRACE:
        TRACE.print_exception(e)
    if isinstance(e, RuntimeFailure):
        msg = str(e)
    elif isinstance(e, OSError):
        msg = f"container init: {e}"
    else:
        msg = f"container init: internal error: {type(e).__name__}: {e}"
    try:
        chan.send("error", msg=msg)
    except OSError:
        pass
    os._exit(1)


def _init(chan: Channel, a: InitArgs) -> None:
    cfg, linux, proc = a.cfg, a.cfg.linux, a.cfg.process
    log.debug("child process in init(): setting the container up")
    process.die_on_signals()
    # A session of its own, as runc's init: CRIU refuses a tree whose session leader is
    # outside the container (unless --shell-job), and a terminal needs it for TIOCSCTTY.
    os.setsid()
    in_user_ns = linux.namespace("user") is not None
    new_mount_ns = bool(namespaces.new_flags(linux, ("mount",))) or bool(
        linux.namespace("mount") and linux.namespace("mount").path)
    if namespaces.new_flags(linux, ("network",)):
        loopback_up()

    # -- the rootfs, while the host's filesystem is still in view
    if new_mount_ns:
        rootfs.set_root_propagation(linux.rootfs_propagation)
        rootfs.bind_rootfs(cfg.root_path)
    root_fd = os.open(cfg.root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    log.debug(f"init: mounting {len(cfg.mounts)} mounts in {cfg.root_path}")
    rootfs.mount_all(cfg, a.bundle, root_fd, a.cgroup_paths, a.cgroup_mode, a.bind_sources)
    for fd in a.bind_sources.values():
        os.close(fd)
    log.debug("init: creating devices")
    rootfs.create_devices(cfg, root_fd, in_user_ns)
    os.close(root_fd)
    process.set_oom_score_adj(proc.oom_score_adj if proc else None)

    # -- hooks that run before the root switch: prestart and createRuntime in the runtime's
    #    namespace (the parent runs them), then createContainer here in ours
    chan.send("hooks")
    state = chan.recv("hooks-done")["state"]
    # runc's createContainer hooks run in the rootfs (a hook's `touch ./lib/x` lands in it);
    # the root switch moves us anyway
    os.chdir(cfg.root_path)
    log.debug("init: running the createContainer hooks")
    hooks.run("createContainer", cfg.hooks.get("createContainer", []), state)
    fifo = a.fifo_fd

    # -- switch root
    log.debug("init: switching root" + (" (--no-pivot)" if a.no_pivot else ""))
    if a.no_pivot:
        rootfs.move_root(cfg.root_path)
    elif new_mount_ns:
        rootfs.pivot(cfg.root_path)
    else:
        os.chroot(cfg.root_path)  # sharing the host's mount namespace: never pivot it
        os.chdir("/")
    rootfs.reopen_dev_null()
    if proc and proc.terminal:
        setup_terminal(proc, a.console_sock)
    if new_mount_ns:
        rootfs.set_rootfs_propagation(linux.rootfs_propagation)
    rootfs.readonly_dev(cfg)
    if cfg.root_readonly:
        rootfs.readonly_root()

    # -- the rest of the environment, in runc's order
    log.debug("init: hostname, sysctls, read-only and masked paths, personality, keyring")
    if cfg.hostname is not None and linux.namespace("uts"):
        sc.sethostname(cfg.hostname)
    if cfg.domainname is not None and linux.namespace("uts"):
        sc.setdomainname(cfg.domainname)
    for key, value in linux.sysctl.items():
        write_sysctl(key, value)
    rootfs.readonly_paths(linux.readonly_paths)
    rootfs.mask_paths(linux.masked_paths)
    process.set_personality(linux.personality)
    if linux.memory_policy:
        from pyruntime.linux import mempolicy
        mempolicy.apply(linux.memory_policy)
    if not a.no_new_keyring:
        try:
            sc.join_session_keyring(f"_ses.{a.container_id}")
        except OSError:
            pass  # no keyring support (ENOSYS) or not allowed here: runc goes on too
    if proc is None:
        out = _wait_for_start(chan, fifo, let_go_of_stderr=True)  # nothing to exec
        _start_container_hooks(cfg, state, out)()
        os._exit(0)
    process.set_scheduling(proc)
    process.enter_cwd(proc.cwd)
    env = process.build_env(proc, a.preserve_fds)
    path = process.lookup_executable(proc.args[0], [f"PATH={env['PATH']}"] if "PATH" in env else [])

    # -- created: block until `start`
    out = _wait_for_start(chan, fifo, proc.terminal and not a.caller_waits)

    def report(msg: str) -> None:
        try:
            os.write(out, b"E" + msg.encode())
        except OSError:
            pass
    keep = (out,) if a.listener is None else (out, a.listener.fileno())
    log.debug("init: closing the pipe to signal completion (exec.fifo closes on execve); "
              "then rlimits, user, capabilities, seccomp, execve")
    try:
        process.finalize_and_exec(proc, path, env, in_user_ns=in_user_ns, seccomp=a.seccomp,
                                  preserve_fds=a.preserve_fds, keep=keep,
                                  on_notify_fd=_notify_sender(a.listener, linux.seccomp, state),
                                  before_exec=_start_container_hooks(cfg, state, out),
                                  report_fd=out, encode=lambda m: b"E" + m.encode())
    except RuntimeFailure as e:
        report(str(e))
        os._exit(1)


def _notify_sender(listener, seccomp_cfg, state):
    if listener is None:
        return None

    def send(fd: int) -> None:
        from pyruntime.seccomp import notify as seccomp_notify
        seccomp_notify.send_state(listener, fd, dict(state, status="running"),
                           seccomp_cfg.get("listenerMetadata", ""))
    return send


def _wait_for_start(chan: Channel, fifo_path_fd: int, let_go_of_stderr: bool) -> int:
    """Tell the parent we are created, then block on exec.fifo until `start` opens it. Returns
    the fifo's write end (close-on-exec: `start` sees EOF when execve succeeds, and reads a
    failure as "E<message>")."""
    chan.send("created")
    chan.sock.close()
    log.debug("init: created, blocking on exec.fifo until start")
    if let_go_of_stderr:
        log.drop_stderr_copy()  # fd 2 is the console now, and the caller is gone
    out = os.open(rootfs.fdpath(fifo_path_fd), os.O_WRONLY | os.O_CLOEXEC)
    os.close(fifo_path_fd)
    os.write(out, b"0")
    return out


def _start_container_hooks(cfg, state: dict, out: int):
    """The startContainer hooks, to run as the last step before execve: as runc runs them, as
    the process's user, with its capabilities and under its seccomp filter (a hook must not
    be a way around the filter)."""
    def run() -> None:
        if not cfg.hooks.get("startContainer"):
            return
        log.debug("init: running the startContainer hooks")
        try:
            hooks.run("startContainer", cfg.hooks["startContainer"], dict(state, status="running"))
        except RuntimeFailure as e:
            os.write(out, b"E" + str(e).encode())
            os._exit(1)
    return run


def setup_terminal(proc, sock: socket.socket | None) -> None:
    if sock is None:
        raise RuntimeFailure("process.terminal is true but no --console-socket was given")
    master, peer = console.open_pty()
    console.give_to(peer, proc.user.uid)
    if proc.console_size:
        console.set_size(peer, *proc.console_size)
    console.bind_console(peer)
    console.send_master(sock, master)
    os.close(master)
    sock.close()
    console.make_controlling(peer)
    os.close(peer)


def write_sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise RuntimeFailure(f"linux.sysctl.{key}: {value!r}: {e.strerror}") from None


SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    import fcntl
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, req + b"\0" * 22)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP) + b"\0" * 22)
    finally:
        s.close()
