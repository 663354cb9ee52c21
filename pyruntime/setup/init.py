"""The container side of `create`, top to bottom in the order of the runtime-spec lifecycle.

`create` forks a bootstrap child (bootstrap()), which joins and creates the namespaces and forks
the init (init_main()), PID 1 of the new pid namespace; the steps shared with `exec` are in
bootstrap.py. Both talk to the parent over the channel (lifecycle/channel.py has the messages
and who sends what when); the init reports CREATED and then blocks on exec.fifo until `start`.
Nothing here returns: each process ends in execve or os._exit.
"""
from __future__ import annotations

import os
import struct

from pyruntime.lean import socket
from pyruntime.linux import namespaces
from pyruntime.linux.syscalls import PR_SET_DUMPABLE, SYS, Sys, prctl
from pyruntime import log
from pyruntime.setup import bootstrap as boot, execshim, process, rootfs
from pyruntime.lifecycle.channel import (CREATED, FIFO_READY, HOOKS, HOOKS_DONE, JOIN, MAPPED,
                                         JOINED, NAMESPACES, PREPARED, PROCFS, USERNS, Channel,
                                         fifo_error)
from pyruntime.errors import RuntimeFailure
from pyruntime.lean.records import from_plain, record, to_plain


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
    rootless: bool = False
    preparer: bool = False  # the warm server's: the bootstrap child is PID 2 of the init's
    shim: int | None = None  # process.ready_to_exec()'s, if it ran already (p1_main)
    proc_from_init: bool = False  # a preparer outside the init's pid namespace: PROCFS


WHO = "container init"  # names a failure that is not a RuntimeFailure


def bootstrap(chan: Channel, a: InitArgs) -> None:
    """The bootstrap child: namespaces, then fork the init and report its pid."""
    boot.enter(chan, a.ns_fds)

    def map_ids() -> None:  # the parent writes a new user namespace's maps
        if a.rootless:
            # an unprivileged parent (and newuidmap, which checks who owns us) can write our
            # /proc/<pid>/*_map only while we are dumpable: just for the mapping, as runc
            prctl(PR_SET_DUMPABLE, 1)
        chan.send(USERNS)
        chan.recv(MAPPED)
        prctl(PR_SET_DUMPABLE, 0)
    if a.preparer:  # born in the init's pid namespace: its PID 2
        namespaces.create_new(a.cfg.linux, map_ids, skip=namespaces.FLAGS["pid"])
        # the init joins them while we mount: before the prestart hooks, which look at them
        kinds = [k for k in SHARED if a.cfg.linux.namespace(k) is not None]
        fds = [SYS.open(f"/proc/self/ns/{namespaces.PROC_NAME[k]}", os.O_RDONLY | os.O_CLOEXEC)
               for k in kinds]
        chan.send_fds(NAMESPACES, fds, ns=kinds)
        for fd in fds:
            SYS.close(fd)
        prepare_main(chan, a)
    namespaces.create_new(a.cfg.linux, map_ids)
    boot.fork_held(chan, WHO, init_main, a)


def _preload(cfg) -> None:
    """What this config will need once the root is switched, where nothing can be imported
    any more; the rest of the time these modules are not worth their import."""
    proc = cfg.process
    if proc is not None and proc.terminal:
        __import__("pyruntime.linux.console")
    if cfg.hooks.get("startContainer"):
        __import__("pyruntime.lifecycle.hooks")
    if cfg.linux.memory_policy:
        __import__("pyruntime.linux.mempolicy")


def init_main(chan: Channel, _host_pid: int, a: InitArgs, sys: Sys = SYS) -> None:
    """The init: the container's environment, then the process itself, in one process."""
    _preload(a.cfg)
    # while the host's /proc is in view: a config may mount none (as runc, before the clone)
    process.set_oom_score_adj(a.cfg.process.oom_score_adj if a.cfg.process else None)
    state = prepare(chan, a, sys)
    become(chan, a, state, sys)


def prepare(chan: Channel, a: InitArgs, sys: Sys = SYS, proc_context=None) -> dict:
    """What every process of the container shares, made in its namespaces: the rootfs and its
    mounts, the createContainer hooks, the root switch, hostname, sysctls, read-only and
    masked paths. Returns the state the hooks were given. With the warm server this runs in
    a process of its own (PID 2), and the init joins what it made (p1_main)."""
    cfg, linux = a.cfg, a.cfg.linux
    log.debug("child process in init(): setting the container up")
    process.die_on_signals()
    # rootless without a user namespace in the config: the caller's own is not the host's
    # (podman runs us inside its namespace), and there mknod fails just the same
    in_user_ns = linux.namespace("user") is not None or a.rootless
    new_mount_ns = bool(namespaces.new_flags(linux, ("mount",))) or bool(
        linux.namespace("mount") and linux.namespace("mount").path)
    if namespaces.new_flags(linux, ("network",)):
        loopback_up()

    # -- the rootfs, while the host's filesystem is still in view
    boot.at("rootfs")
    if new_mount_ns:
        rootfs.set_root_propagation(linux.rootfs_propagation, sys)
        rootfs.bind_rootfs(cfg.root_path, sys)
    root_fd = sys.open(cfg.root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    log.debug(f"init: mounting {len(cfg.mounts)} mounts in {cfg.root_path}")
    rootfs.mount_all(cfg, a.bundle, root_fd, a.cgroup_paths, a.cgroup_mode, a.bind_sources, sys,
                     proc_context)
    for fd in a.bind_sources.values():
        sys.close(fd)
    log.debug("init: creating devices")
    rootfs.create_devices(cfg, root_fd, in_user_ns, sys)
    sys.close(root_fd)

    # -- hooks that run before the root switch: prestart and createRuntime in the runtime's
    #    namespace (the parent runs them), then createContainer here in ours
    boot.at("hooks")
    chan.send(HOOKS)
    state = chan.recv(HOOKS_DONE)["state"]
    # runc's createContainer hooks run in the rootfs (a hook's `touch ./lib/x` lands in it);
    # the root switch moves us anyway
    os.chdir(cfg.root_path)
    if cfg.hooks.get("createContainer"):
        log.debug("init: running the createContainer hooks")
        from pyruntime.lifecycle import hooks
        hooks.run("createContainer", cfg.hooks["createContainer"], state)

    # -- switch root
    boot.at("rootfs")
    log.debug("init: switching root" + (" (--no-pivot)" if a.no_pivot else ""))
    if a.no_pivot:
        rootfs.move_root(cfg.root_path, sys)
    elif new_mount_ns:
        rootfs.pivot(cfg.root_path, sys)
    else:
        sys.chroot(cfg.root_path)  # sharing the host's mount namespace: never pivot it
        sys.chdir("/")
    if new_mount_ns:
        rootfs.set_rootfs_propagation(linux.rootfs_propagation, sys)

    # -- the rest of the shared environment, in runc's order
    boot.at("process")
    log.debug("init: hostname, sysctls, read-only and masked paths")
    if cfg.hostname is not None and linux.namespace("uts"):
        sys.sethostname(cfg.hostname)
    if cfg.domainname is not None and linux.namespace("uts"):
        sys.setdomainname(cfg.domainname)
    write_sysctls(linux.sysctl, rootfs.proc_mounted(cfg.mounts), sys)
    return state


# The namespaces the init joins from the preparer (mount last: it changes our root).
SHARED = ("network", "ipc", "uts", "cgroup", "mount")


def prepare_main(chan: Channel, a: InitArgs, sys: Sys = SYS) -> None:
    """The warm server's preparer: prepare(), which hands the init our namespaces with HOOKS,
    then PREPARED, and exit. Either PID 2 of the init's pid namespace, or (proc_from_init)
    forked before the init exists, outside it: then the proc mount is made from the context
    the init made in its pid namespace (PROCFS)."""
    def proc_context() -> int:
        _, fds = chan.recv_fds(PROCFS)
        if len(fds) != 1:
            raise RuntimeFailure("the server's PROCFS message carries no fd")
        return fds[0]
    prepare(chan, a, sys, proc_context if a.proc_from_init else None)
    chan.send(PREPARED)
    os._exit(0)


# the modules whose records a JOIN may carry
_JOIN_RECORDS = ("pyruntime.oci.config", "pyruntime.oci.mounts", "pyruntime.seccomp.kernel")


def join_message(a: InitArgs) -> dict:
    """What the init needs to finish, as JSON-able values (the server's side of JOIN)."""
    cfg = a.cfg
    linux = to_plain(cfg.linux)
    linux["seccomp"] = {"listenerMetadata": (cfg.linux.seccomp or {}).get("listenerMetadata", "")}
    plain = dict(to_plain(cfg), raw={}, linux=linux)
    prog = a.seccomp
    return {"cfg": plain, "id": a.container_id,
            "no_new_keyring": a.no_new_keyring, "preserve_fds": a.preserve_fds,
            "caller_waits": a.caller_waits, "listener": a.listener is not None,
            "seccomp": None if prog is None else [prog.bpf.hex(), prog.flags, prog.notify]}


def p1_main(chan: Channel, console_fd: int) -> None:
    """The init under the warm server, forked by its client as PID 1 of a new pid namespace:
    join the namespaces the preparer made (JOIN), before the prestart hooks run (they look at
    our namespaces); once the preparer has switched the root (ours with it: we share its
    mount namespace), become() as any init."""
    boot.at("namespaces")
    prctl(PR_SET_DUMPABLE, 0)
    msg, fds = chan.recv_fds(JOIN)
    kinds = msg["ns"]
    if not isinstance(kinds, list) or len(fds) != len(kinds) + 1 + bool(msg["listener"]):
        raise RuntimeFailure("the server's JOIN message does not match its fds")
    # everything imported now: nothing can be once we are in the container's mount namespace
    cfg = from_plain(msg["cfg"], _JOIN_RECORDS)
    process.set_oom_score_adj(cfg.process.oom_score_adj if cfg.process else None)  # as init_main
    listener = socket.socket(fileno=fds[-1]) if msg["listener"] else None
    prog = msg["seccomp"]
    if prog is not None:
        from pyruntime.seccomp.kernel import Program
        prog = Program(bytes.fromhex(prog[0]), prog[1], prog[2])
    _preload(cfg)
    if listener is not None:
        __import__("pyruntime.seccomp.notify")
    for kind, fd in zip(kinds, fds):
        SYS.setns(fd, namespaces.FLAGS[kind])
        SYS.close(fd)
    chan.send(JOINED)
    # while the preparer finishes the rootfs, what `start` would otherwise wait for
    fifo = fds[len(kinds)]
    shim = process.ready_to_exec(cfg.process, fifo, _fifo_error) \
        if cfg.process and not _shim_waits(cfg, listener, prog) else None
    state = chan.recv(PREPARED)["state"]
    a = InitArgs(cfg=cfg, container_id=msg["id"], bundle="",
                 fifo_fd=fifo, ns_fds=[],
                 console_sock=socket.socket(fileno=console_fd) if console_fd >= 0 else None,
                 no_pivot=False, no_new_keyring=msg["no_new_keyring"],
                 preserve_fds=msg["preserve_fds"], cgroup_paths={}, cgroup_mode="",
                 seccomp=prog, bind_sources={}, caller_waits=msg["caller_waits"],
                 listener=listener, shim=shim)
    become(chan, a, state)


def become(chan: Channel, a: InitArgs, state: dict, sys: Sys = SYS) -> None:
    """The init's own process, in the prepared environment: session, terminal, the rest of
    the root's lockdown (after the console is bound), personality, keyring, then created:
    block until `start`, and the last steps to execve."""
    cfg, linux, proc = a.cfg, a.cfg.linux, a.cfg.process
    process.die_on_signals()
    # A session of its own, as runc's init: CRIU refuses a tree whose session leader is
    # outside the container (unless --shell-job), and a terminal needs it for TIOCSCTTY.
    os.setsid()
    in_user_ns = linux.namespace("user") is not None or a.rootless
    has_proc = rootfs.proc_mounted(cfg.mounts)
    rootfs.reopen_dev_null(sys)
    if proc and proc.terminal:
        boot.at("console")
        boot.setup_terminal(proc, a.console_sock, bind_console=True, proc_mounted=has_proc)
    boot.at("process")
    rootfs.readonly_dev(cfg, sys)
    if cfg.root_readonly:
        rootfs.readonly_root(sys)
    rootfs.readonly_paths(linux.readonly_paths, sys, has_proc)
    rootfs.mask_paths(linux.masked_paths, sys, has_proc)
    log.debug("init: personality, keyring")
    process.set_personality(linux.personality, sys)
    if linux.memory_policy:
        from pyruntime.linux import mempolicy
        mempolicy.apply(linux.memory_policy)
    if not a.no_new_keyring:
        try:
            sys.join_session_keyring(f"_ses.{a.container_id}")
        except OSError:
            pass  # no keyring support (ENOSYS) or not allowed here: runc goes on too
    fifo = a.fifo_fd
    if proc is None:
        out, _ = _wait_for_start(chan, fifo, let_go_of_stderr=True)  # nothing to exec
        _start_container_hooks(cfg, state, out)()
        os._exit(0)
    process.set_scheduling(proc, sys)
    process.enter_cwd(proc.cwd)
    env = process.build_env(proc, a.preserve_fds)
    path = process.lookup_executable(proc.args[0], [f"PATH={env['PATH']}"] if "PATH" in env else [])

    # -- created: block until `start`
    if _shim_waits(cfg, a.listener, a.seccomp):
        _exec_waiting(chan, a, path, env, in_user_ns, proc.terminal and not a.caller_waits)
    out, shim = _wait_for_start(chan, fifo, proc.terminal and not a.caller_waits,
                                ready=lambda: process.ready_to_exec(proc, fifo, _fifo_error)
                                if a.shim is None else a.shim)

    def report(e: RuntimeFailure) -> None:
        if e.step is None:
            e.step = "exec"
        try:
            os.write(out, fifo_error(e))
        except OSError:
            pass
    boot.at("exec")
    keep = (out,) if a.listener is None else (out, a.listener.fileno())
    log.debug("init: closing the pipe to signal completion (exec.fifo closes on execve); "
              "then rlimits, user, capabilities, seccomp, execve")
    try:
        process.finalize_and_exec(proc, path, env, in_user_ns=in_user_ns, seccomp=a.seccomp,
                                  preserve_fds=a.preserve_fds, keep=keep,
                                  on_notify_fd=_notify_sender(a.listener, linux.seccomp, state),
                                  before_exec=_start_container_hooks(cfg, state, out),
                                  report_fd=out, encode=_fifo_error, shim=shim)
    except RuntimeFailure as e:
        report(e)
        os._exit(1)


def _shim_waits(cfg, listener, seccomp) -> bool:
    """Whether the init's last steps can all come before `start`, with the exec shim left to
    wait on exec.fifo (the fifo is the process user's: container.py's _give_fifo). Not with
    startContainer hooks (they run after `start`, in Python), a seccomp listener (its agent
    gets the container's state at `start`), a filter loaded last, after no_new_privs, or no
    shim at all (execshim.wanted): for those all of it comes after the fifo, in the init."""
    proc = cfg.process
    return proc is not None and not cfg.hooks.get("startContainer") and \
        listener is None and not (seccomp and proc.no_new_privileges) and \
        execshim.wanted(proc.user, proc.capabilities)


def _exec_waiting(chan: Channel, a: InitArgs, path: str, env: dict, in_user_ns: bool,
                  let_go_of_stderr: bool) -> None:
    """Created: tell the parent, then take every last step (the shim, the bounding set,
    rlimits, user, capabilities, no_new_privs, seccomp, fds) and exec the shim, which blocks
    on exec.fifo itself and execs the process once `start` opens it. runc's init takes these
    steps before its fifo too; here they also keep the interpreter's own teardown (its
    execve) out of what `start` waits for. A failure on the way is `start`'s to report."""
    proc, fifo = a.cfg.process, a.fifo_fd
    at, where = rootfs.magic_link(fifo)
    chan.send(CREATED)
    chan.sock.close()
    log.debug("init: closing the pipe to signal completion; then rlimits, user, capabilities, "
              "seccomp, and the exec shim, which waits on exec.fifo")
    if let_go_of_stderr:
        log.drop_stderr_copy()
    opened = []

    def wait_here() -> None:  # no shim after all: wait as the init without one does
        _open_fifo(fifo, at, where)
        opened.append(True)
    try:
        if a.shim is not None and a.shim >= 0:
            os.close(a.shim)
        shim = process.ready_to_exec(proc, fifo, _fifo_error, wait=(at, where))
        inherit = (at,) if at >= 0 else ()
        process.finalize_and_exec(proc, path, env, in_user_ns=in_user_ns, seccomp=a.seccomp,
                                  preserve_fds=a.preserve_fds, keep=(fifo, *inherit),
                                  report_fd=fifo, encode=_fifo_error, shim=shim,
                                  inherit=inherit, wait_here=wait_here)  # execs, or raises
    except Exception as e:
        try:
            if not opened:
                _open_fifo(fifo, at, where)
            os.write(fifo, fifo_error(_as_failure(e)))
        except OSError:
            pass
    os._exit(1)


def _open_fifo(fifo_path_fd: int, at: int, where: str) -> None:
    """Block until `start` opens exec.fifo (where, at: rootfs.magic_link's), put the write
    end (close-on-exec) on fifo_path_fd's number and write FIFO_READY."""
    try:
        out = os.open(where, os.O_WRONLY | os.O_CLOEXEC, dir_fd=None if at < 0 else at)
    finally:
        if at >= 0:
            os.close(at)
    os.dup2(out, fifo_path_fd, inheritable=False)
    os.close(out)
    os.write(fifo_path_fd, FIFO_READY)


def _as_failure(e: Exception) -> RuntimeFailure:
    """A failure of the init's last steps, as `start` reports it."""
    failed = e if isinstance(e, RuntimeFailure) else RuntimeFailure(
        str(e), errno=getattr(e, "errno", None))
    failed.step = failed.step or "exec"
    return failed


def _fifo_error(msg: str, errno: int) -> bytes:
    """The exec shim's report of a failed execve, as `start` reads it."""
    return fifo_error(RuntimeFailure(msg, errno=errno, step="exec"))


def _notify_sender(listener, seccomp_cfg, state):
    if listener is None:
        return None

    def send(fd: int) -> None:
        from pyruntime.seccomp import notify as seccomp_notify
        seccomp_notify.send_state(listener, fd, dict(state, status="running"),
                           seccomp_cfg.get("listenerMetadata", ""))
    return send


def _wait_for_start(chan: Channel, fifo_path_fd: int, let_go_of_stderr: bool,
                    ready=None) -> tuple[int, object]:
    """Tell the parent we are created, run ready() (while nothing waits for us), then block on
    exec.fifo until `start` opens it. Returns the fifo's write end (close-on-exec: `start`
    sees EOF when execve succeeds, and reads a failure after FIFO_ERROR), which takes the
    number of fifo_path_fd, and what ready() returned. ready()'s failure is reported there."""
    at, path = rootfs.magic_link(fifo_path_fd)
    chan.send(CREATED)
    chan.sock.close()
    log.debug("init: created, blocking on exec.fifo until start")
    if let_go_of_stderr:
        log.drop_stderr_copy()  # fd 2 is the console now, and the caller is gone
    got = failed = None
    try:
        got = ready() if ready is not None else None
    except Exception as e:  # for `start` to report: it is what waits for the outcome now
        failed = _as_failure(e)
    _open_fifo(fifo_path_fd, at, path)  # on the number ready() was told to report on
    if failed is not None:
        os.write(fifo_path_fd, fifo_error(failed))
        os._exit(1)
    return fifo_path_fd, got


def _start_container_hooks(cfg, state: dict, out: int):
    """The startContainer hooks, to run as the last step before execve: as runc runs them, as
    the process's user, with its capabilities and under its seccomp filter (a hook must not
    be a way around the filter)."""
    def run() -> None:
        if not cfg.hooks.get("startContainer"):
            return
        log.debug("init: running the startContainer hooks")
        from pyruntime.lifecycle import hooks  # preloaded: we are in the container's root
        try:
            hooks.run("startContainer", cfg.hooks["startContainer"], dict(state, status="running"))
        except RuntimeFailure as e:
            e.step = e.step or "hooks"
            os.write(out, fifo_error(e))
            os._exit(1)
    return run


def write_sysctls(sysctl: dict, proc_mounted: bool, sys: Sys = SYS) -> None:
    """Through /proc/sys; without a proc at /proc, through a proc of our own (the rootfs's
    own files there would take the values silently)."""
    if not sysctl:
        return
    proc = -1 if proc_mounted else rootfs.own_proc("to write sysctls through", sys)
    try:
        for key, value in sysctl.items():
            write_sysctl(key, value, proc)
    finally:
        if proc >= 0:
            sys.close(proc)


def write_sysctl(key: str, value: str, proc: int = -1) -> None:
    path = "sys/" + key.replace(".", "/")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc) if proc >= 0 else \
            os.open("/proc/" + path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise RuntimeFailure(f"linux.sysctl.{key}: {value!r}: {e.strerror}", errno=e.errno,
                             path=f"linux.sysctl.{key}") from None


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
