"""`exec`: start another process inside a running container.

Like the init, but joining instead of creating: a bootstrap child enters every namespace of
the container's init through /proc/<pid>/ns/* (user first, mount last), after the parent has
put it into the container's cgroup, and forks once so that the process lands inside the pid
namespace; that grandchild finishes the process (console, cwd, user, capabilities, seccomp)
and calls execve. The channel is close-on-exec, so its EOF tells the parent execve happened.
The steps shared with `create` are in setup/bootstrap.py, the messages in lifecycle/channel.py.
"""
from __future__ import annotations

import os

from pyruntime.lean import socket
from pyruntime.oci import config as configmod
from pyruntime.linux import namespaces
from pyruntime import log
from pyruntime.setup import bootstrap as boot, process
from pyruntime.lifecycle.channel import GO, PID, Channel, error_message
from pyruntime.errors import RuntimeFailure, step
from pyruntime.lifecycle.state import Container


def joinable_namespaces(pid: int) -> list[tuple[str, int]]:
    """Open the init's namespaces that differ from ours (joining our own would be a no-op, and
    for the user namespace an error)."""
    opened = []
    try:
        for kind in namespaces.JOIN_ORDER:
            name = namespaces.PROC_NAME[kind]
            theirs = f"/proc/{pid}/ns/{name}"
            try:
                if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                    continue
                opened.append((kind, os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)))
            except FileNotFoundError:
                continue  # a namespace type this kernel lacks
    except BaseException:
        for _, fd in opened:
            os.close(fd)
        raise
    return opened


def build_process(c: Container, process_json: dict | None, args: list[str], *, cwd=None,
                  env=(), user=None, additional_gids=(), caps=(), no_new_privs=False,
                  tty=False, apparmor=None, process_label=None) -> configmod.Process:
    """The process to run: --process's JSON, or the container's own process with the CLI's
    overrides (as runc's exec builds it)."""
    if process_json is not None:
        return configmod.parse_process(configmod.Reader(process_json, "", "process.json"))
    base = dict(c.state.config_process or {})
    base["args"] = list(args)
    base["terminal"] = bool(tty)
    if cwd:
        base["cwd"] = cwd
    if env:
        merged = {e.split("=", 1)[0]: e for e in base.get("env", [])}
        merged.update({e.split("=", 1)[0]: e for e in env})
        base["env"] = list(merged.values())
    if user is not None:
        uid, _, gid = user.partition(":")
        try:
            base["user"] = {"uid": int(uid), "gid": int(gid or 0)}
        except ValueError:
            raise RuntimeFailure(f"--user {user!r}: want uid[:gid] (numbers)") from None
    if additional_gids:
        base.setdefault("user", {})["additionalGids"] = [int(g) for g in additional_gids]
    if caps:
        c_ = {k: list(v) for k, v in (base.get("capabilities") or {}).items()}
        for kind in ("bounding", "effective", "permitted"):
            c_[kind] = list(dict.fromkeys(c_.get(kind, []) + list(caps)))
        base["capabilities"] = c_
    if no_new_privs:
        base["noNewPrivileges"] = True
    if apparmor:
        base["apparmorProfile"] = apparmor
    if process_label:
        base["selinuxLabel"] = process_label
    if not base.get("args"):
        raise RuntimeFailure("exec: no command given (args or --process)")
    return configmod.parse_process(configmod.Reader(base, "process"))


def exec_process(root: str, cid: str, proc: configmod.Process, *, console_socket=None,
                 console_sock: socket.socket | None = None, pid_file=None, preserve_fds=0,
                 ignore_paused=False, cgroup=None, stdio=None, reexec=True, joiner=None) -> int:
    """Start proc in the container; return its host pid once it has called execve.
    stdio and reexec: as for container.create. joiner: the warm server's handle on its
    client, which forks the bootstrap child (server/remote.py)."""
    c = Container.load(root, cid)
    status = c.status()
    if status == "stopped":
        raise RuntimeFailure("cannot exec in a stopped container: container not running")
    if status == "paused" and not ignore_paused:
        raise RuntimeFailure("cannot exec in a paused container (use --ignore-paused to override)")
    from pyruntime.linux.lsm import check_apparmor
    check_apparmor(proc.apparmor_profile)
    if proc.capabilities:
        from pyruntime.linux import capabilities
        capabilities.check(proc.capabilities, "process.capabilities")
        capabilities.check_grantable(proc.capabilities, "process.capabilities")
    seccomp_prog = notify = None
    if c.state.seccomp:
        from pyruntime.seccomp import compile as seccomp
        seccomp_prog = seccomp.compile(c.state.seccomp,
                                       cache_dir=os.path.join(root, seccomp.CACHE_SUBDIR))
        if c.state.seccomp.get("listenerPath"):
            # connected here: the process cannot reach the host's path once it is inside
            from pyruntime.seccomp import notify as seccomp_notify
            notify = (seccomp_notify.connect_listener(c.state.seccomp["listenerPath"]),
                      dict(c.oci_state(), status="running"),
                      c.state.seccomp.get("listenerMetadata", ""))
    init_pid = c.state.pid
    _maybe_seal(c, init_pid, reexec)
    ns_fds = joinable_namespaces(init_pid)
    if not c.init_alive():
        for _, fd in ns_fds:
            os.close(fd)
        raise RuntimeFailure("container not running")
    in_user_ns = any(kind == "user" for kind, _ in ns_fds)
    sock = None
    try:
        if joiner is None:  # (the server's client holds the console socket for its child)
            sock = boot.console_socket(proc.terminal, console_socket, console_sock)
        if c.state.memory_policy and joiner is None:  # on us: the fork and the process inherit it
            from pyruntime.linux import mempolicy
            mempolicy.apply(tuple(c.state.memory_policy))
        log.debug(f"exec in {cid}: nsexec container setup: forking the bootstrap child", stage=0)

        def child(chan, *args):
            boot.redirect_stdio(stdio)
            _bootstrap(chan, *args)
        placement = _placement(c, cgroup, proc)
        if joiner is None:
            pid, chan = boot.spawn(WHO, child, ns_fds, proc, sock, in_user_ns, seccomp_prog,
                                   preserve_fds, notify, cgroup=placement)
        else:
            pid, chan = joiner.spawn_exec(placement, ns_fds, proc, in_user_ns, seccomp_prog,
                                          preserve_fds, notify, c.state.memory_policy)
    finally:
        for _, fd in ns_fds:
            os.close(fd)
        if sock is not None:
            sock.close()
        if notify is not None:
            notify[0].close()
    try:
        _set_affinity(pid, proc, "initial")
        with step("cgroups"):
            boot.in_cgroup(chan, pid, placement)
        if c.state.intel_rdt:
            from pyruntime.linux import intelrdt
            intelrdt.join(c.state.intel_rdt, pid)
        log.debug(f"bootstrap child {pid} put in the container's cgroup")
        chan.send(GO)
        exec_pid = chan.recv(PID)["pid"]
        log.debug(f"process forked in the container: pid {exec_pid}")
        if joiner is None:  # (else the client's child: the client reaps it)
            os.waitpid(pid, 0)
        # EOF (the channel is close-on-exec) means execve succeeded; a message is a failure.
        chan.recv_or_eof()
    except BaseException:
        if joiner is None:
            boot.kill_and_reap(pid)
        else:
            os.kill(pid, 9)
        raise
    finally:
        chan.sock.close()
    if pid_file:
        from pyruntime.lifecycle.layout import write_pid_file
        try:
            write_pid_file(pid_file, exec_pid)
        except RuntimeFailure:
            # nobody would know the process's pid: it must not run on (runc kills it too);
            # it is our child when we are its subreaper (no --detach)
            boot.kill_and_reap(exec_pid)
            raise
    return exec_pid


def _set_affinity(pid: int, proc, which: str) -> None:
    """process.execCPUAffinity: `initial` for the time before the cgroup move (which may reset
    it to the cgroup's cpuset), `final` for the process itself."""
    cpus = (proc.exec_cpu_affinity or {}).get(which)
    if cpus:
        try:
            os.sched_setaffinity(pid, cpus)
        except OSError as e:
            raise RuntimeFailure(f"process.execCPUAffinity.{which}: {e.strerror} (CPUs "
                                 f"{sorted(cpus)} not available?)", errno=e.errno,
                                 path=f"process.execCPUAffinity.{which}") from None


def needs_seal(c: Container, init_pid: int) -> bool:
    from pyruntime.setup import sealed
    caps = (c.state.config_process or {}).get("capabilities") or {}
    if not sealed.needed(caps.values()):
        return False
    try:
        return os.stat(f"/proc/{init_pid}/ns/user").st_ino == os.stat("/proc/self/ns/user").st_ino
    except OSError:
        return False


def _maybe_seal(c: Container, init_pid: int, reexec: bool = True) -> None:
    """The container's processes see ours while it sets up: if they may hold CAP_SYS_PTRACE
    outside a user namespace, run from a sealed copy of the interpreter (see sealed.py)."""
    if not needs_seal(c, init_pid):
        return
    if not reexec:
        raise RuntimeFailure("exec: the container's processes may hold CAP_SYS_PTRACE: an exec "
                             "into it needs the command line, which re-executes itself from a "
                             "sealed copy of the interpreter (CVE-2019-5736); a library cannot "
                             "do that to its caller")
    from pyruntime.setup import sealed
    sealed.reexec()


def _placement(c: Container, subs: list[str] | None, proc):
    """Where the process goes: the container's cgroup, or the sub-cgroups of --cgroup."""
    if not c.state.cgroup:
        return None
    from pyruntime import cgroups
    mgr = cgroups.manager_from_state(c.state.cgroup)
    if not subs:
        placement = mgr.placement()
    else:
        from pyruntime.cgroups.placement import Placement
        placement = Placement(_sub_dirs(mgr.paths, subs), self_move=os.geteuid() == 0)
    if (proc.exec_cpu_affinity or {}).get("initial"):
        placement.self_move = False  # the parent sets it before the move
    return placement


def _sub_dirs(dirs: dict[str, str], subs: list[str]) -> dict[str, str]:
    dirs = dict(dirs)
    for ctrl, sub in sub_cgroups(subs).items():
        for key in (dirs if ctrl == "" else [ctrl]):
            if key not in dirs:
                raise RuntimeFailure(f"--cgroup: unknown controller {ctrl}")
            top = dirs[key]
            target = os.path.normpath(os.path.join(top, sub.lstrip("/")))
            if target != top and not target.startswith(top + "/"):
                raise RuntimeFailure(f"--cgroup: {sub} is not a sub cgroup path")
            if not os.path.isdir(target):
                # runc's words, which its tests match: "adding pid ... cgroup.procs: no such
                # file" (checked before the fork here, so nothing needs undoing)
                raise RuntimeFailure(f"--cgroup: error adding pid to {target}: open "
                                     f"{target}/cgroup.procs: no such file or directory")
            dirs[key] = target
    return dirs


def sub_cgroups(args: list[str]) -> dict[str, str]:
    """runc's --cgroup values: one bare "path" for every hierarchy, or any number of
    "ctrl[,ctrl...]:path" -> {controller (or ""): path}."""
    out = {}
    for a in args:
        parts = a.split(":")
        if len(parts) > 2:
            raise RuntimeFailure(f"invalid --cgroup argument: {a}")
        if len(parts) == 1:
            if len(args) != 1:
                raise RuntimeFailure(f"invalid --cgroup argument: {a} (missing <controller>: "
                                     "prefix)")
            out[""] = a
        else:
            for ctrl in parts[0].split(","):
                out[ctrl] = parts[1]
    return out


WHO = "exec"  # names a failure that is not a RuntimeFailure


def _bootstrap(chan: Channel, ns_fds, *args) -> None:
    boot.enter(chan, ns_fds)
    boot.fork_held(chan, WHO, _finish, *args)


# the modules whose records a PLAN may carry
_PLAN_RECORDS = ("pyruntime.oci.config",)


def plan_message(ns_fds, proc, in_user_ns, seccomp_prog, preserve_fds, notify,
                 memory_policy) -> tuple[dict, list[int]]:
    """The bootstrap child's arguments as JSON-able values and fds (the warm server's PLAN to
    the child its client forked)."""
    from pyruntime.lean.records import to_plain
    fds = [fd for _, fd in ns_fds] + ([notify[0].fileno()] if notify is not None else [])
    return {"ns": [k for k, _ in ns_fds], "proc": to_plain(proc), "in_user_ns": in_user_ns,
            "seccomp": None if seccomp_prog is None else [
                seccomp_prog.bpf.hex(), seccomp_prog.flags, seccomp_prog.notify],
            "preserve_fds": preserve_fds, "memory_policy": list(memory_policy or ()),
            "notify": None if notify is None else [notify[1], notify[2]]}, fds


def remote_bootstrap(chan: Channel, console_fd: int) -> None:
    """The bootstrap child that the warm server's client forked: wait for PLAN, then as any
    (MOVED: its own moves are done; the server makes the rest)."""
    from pyruntime.lean.records import from_plain
    from pyruntime.lifecycle.channel import MOVED, PLAN
    msg, fds = chan.recv_fds(PLAN)
    kinds = msg["ns"]
    if not isinstance(kinds, list) or len(fds) != len(kinds) + (msg["notify"] is not None):
        raise RuntimeFailure("the server's PLAN message does not match its fds")
    proc = from_plain(msg["proc"], _PLAN_RECORDS)
    prog = msg["seccomp"]
    if prog is not None:
        from pyruntime.seccomp.kernel import Program
        prog = Program(bytes.fromhex(prog[0]), prog[1], prog[2])
    notify = None
    if msg["notify"] is not None:
        __import__("pyruntime.seccomp.notify")  # nothing can be imported inside
        notify = (socket.socket(fileno=fds[-1]), *msg["notify"])
    if msg["memory_policy"]:
        from pyruntime.linux import mempolicy
        mempolicy.apply(tuple(msg["memory_policy"]))
    sock = socket.socket(fileno=console_fd) if console_fd >= 0 else None
    if proc.terminal:
        __import__("pyruntime.linux.console")  # set up once inside: nothing is imported there
    chan.send(MOVED)
    _bootstrap(chan, list(zip(kinds, fds)), proc, sock, msg["in_user_ns"], prog,
               msg["preserve_fds"], notify)


def _finish(chan: Channel, host_pid: int, proc, sock, in_user_ns, seccomp_prog, preserve_fds,
            notify) -> None:
    log.debug("child process in init(): inside the container's namespaces")
    # A session of its own, as runc's: left in the caller's, a process without a terminal of
    # its own keeps the caller's as its controlling one, and TIOCSTI on it types commands
    # that the caller's shell runs once we return.
    os.setsid()
    if proc.terminal:
        boot.at("console")
        boot.setup_terminal(proc, sock, bind_console=False)
    boot.at("process")
    process.enter_cwd(proc.cwd)
    env = process.build_env(proc, preserve_fds)
    path = process.lookup_executable(proc.args[0], [f"PATH={env['PATH']}"] if "PATH" in env else [])
    process.set_oom_score_adj(proc.oom_score_adj)
    process.set_scheduling(proc)
    _set_affinity(0, proc, "final")
    log.debug("setns_init: about to exec: rlimits, user, capabilities, seccomp, execve "
              "(the channel's close on execve signals completion)")
    keep, on_notify_fd = (chan.sock.fileno(),), None
    if notify is not None:
        listener, state, metadata = notify
        keep += (listener.fileno(),)

        def on_notify_fd(fd: int) -> None:
            from pyruntime.seccomp import notify as seccomp_notify  # loaded by the parent: no import from the container
            seccomp_notify.send_state(listener, fd, state, metadata, pid=host_pid)
    boot.at("exec")
    process.finalize_and_exec(
        proc, path, env, in_user_ns=in_user_ns, seccomp=seccomp_prog,
        preserve_fds=preserve_fds, keep=keep, report_fd=chan.sock.fileno(),
        on_notify_fd=on_notify_fd,
        encode=lambda m, errno: error_message(RuntimeFailure(m, errno=errno, step="exec")))
