"""`create` and `run` through the warm server: the client side, builtin modules only.

main() returns None, before any side effect (or after undoing its own), whenever the server
cannot take the call: no server, another version, flags or configs it does not serve, a
server that died mid-request. The caller then runs the command in-process, as without a
server. Otherwise it forks the init itself (so that it is the caller's child and inherits
its stdio, console socket and preserved fds) and lets the server do the rest.
"""
import posix
import sys

from pyruntime.cli import finish
from pyruntime.lean import fdpass, jsonio, socket
from pyruntime.lifecycle import layout
from pyruntime.server import wire


class Fallback(Exception):
    """Run in-process instead."""


class _Exit(Exception):
    """The command is over, with this exit code (its error already reported)."""

    def __init__(self, code):
        self.code = code


class Ctx:
    root = layout.DEFAULT_ROOT
    log = None
    log_format = "text"


_CREATE_VALUE = {"bundle": "bundle", "b": "bundle", "pid-file": "pid_file",
                 "console-socket": "console_socket", "preserve-fds": "preserve_fds"}
_CREATE_BOOL = {"no-new-keyring": "no_new_keyring"}
_RUN_BOOL = {"detach": "detach", "d": "detach", "keep": "keep", "no-subreaper": "no_subreaper"}


def _parse(argv):
    """(ctx, command, options, container id); Fallback for anything but the plain flags."""
    ctx, i = Ctx(), 0
    while i < len(argv) and argv[i].startswith("-"):
        name, eq, value = argv[i].lstrip("-").partition("=")
        if name not in ("root", "log", "log-format"):
            raise Fallback  # --debug, --systemd-cgroup, --rootless, --criu
        if not eq:
            i += 1
            value = argv[i]
        setattr(ctx, name.replace("-", "_"), value)
        i += 1
    if ctx.root is Ctx.root and posix.environ.get(b"XDG_RUNTIME_DIR"):
        raise Fallback  # the default root may be the user's (lifecycle/rootless.py)
    if ctx.log_format not in ("text", "json") or posix.geteuid() != 0:
        raise Fallback
    cmd, rest = argv[i], argv[i + 1:]
    if cmd == "exec":
        return (ctx, cmd) + _parse_exec(rest)
    opts = {"bundle": ".", "pid_file": None, "console_socket": None, "preserve_fds": "0"}
    bools = dict(_CREATE_BOOL, **(_RUN_BOOL if cmd == "run" else {}))
    pos, j = [], 0
    while j < len(rest):
        a = rest[j]
        if a == "--" or not a.startswith("-"):
            pos += rest[j + 1:] if a == "--" else [a]
            if a == "--":
                break
            j += 1
            continue
        name, eq, value = a.lstrip("-").partition("=")
        if name in _CREATE_VALUE:
            if not eq:
                j += 1
                value = rest[j]
            opts[_CREATE_VALUE[name]] = value
        elif name in bools and not eq:
            opts[bools[name]] = True
        else:
            raise Fallback  # --no-pivot, --help, anything unknown: the full parser
        j += 1
    if len(pos) != 1 or not opts["preserve_fds"].isdigit():
        raise Fallback
    return ctx, cmd, opts, pos[0]


def run():
    """The launcher's entry for create and run: through the server, else in-process."""
    finish(main(sys.argv[1:]))


_EXEC_VALUE = {"process": "process", "p": "process", "console-socket": "console_socket",
               "pid-file": "pid_file", "cwd": "cwd", "user": "user", "u": "user",
               "apparmor": "apparmor", "process-label": "process_label",
               "preserve-fds": "preserve_fds"}
_EXEC_LIST = {"env": "env", "e": "env", "additional-gids": "additional_gids",
              "g": "additional_gids", "cap": "caps", "c": "caps", "cgroup": "cgroups"}
_EXEC_BOOL = {"tty": "tty", "t": "tty", "detach": "detach", "d": "detach",
              "no-new-privs": "no_new_privs", "ignore-paused": "ignore_paused"}


def _parse_exec(rest):
    """exec's flags as cli/commands/exec.py declares them: (options, id, command)."""
    opts = {v: None for v in _EXEC_VALUE.values()}
    opts.update({v: [] for v in _EXEC_LIST.values()}, **{v: False for v in _EXEC_BOOL.values()})
    j = 0
    while j < len(rest) and rest[j].startswith("-") and rest[j] != "--":
        name, eq, value = rest[j].lstrip("-").partition("=")
        if name in _EXEC_VALUE or name in _EXEC_LIST:
            if not eq:
                j += 1
                value = rest[j]
            if name in _EXEC_VALUE:
                opts[_EXEC_VALUE[name]] = value
            else:
                opts[_EXEC_LIST[name]].append(value)
        elif name in _EXEC_BOOL and not eq:
            opts[_EXEC_BOOL[name]] = True
        else:
            raise Fallback
        j += 1
    if j < len(rest) and rest[j] == "--":
        j += 1
    if j >= len(rest) or rest[j].startswith("-") or not (opts["preserve_fds"] or "0").isdigit():
        raise Fallback
    return opts, rest[j], rest[j + 1:]


def main(argv):
    """The exit code, or None: run the command in-process."""
    if b"PYRUNTIME_NO_SERVER" in posix.environ:
        return None
    try:
        parsed = _parse(argv)
        if parsed[1] == "exec":
            return _exec(*parsed)
        ctx, cmd, opts, cid = parsed
        if cmd not in ("create", "run"):
            return None
        pid = _create(ctx, cmd, opts, cid)
        if pid is None:
            return None
        if cmd == "create":
            return 0
        return _run(ctx, opts, cid, pid)
    except _Exit as e:
        return e.code
    except (Fallback, IndexError, OSError, ValueError):
        return None


def _abs(path):
    return path if path.startswith("/") else posix.getcwd() + "/" + path


def _connect(ctx, console_socket):
    """(the server's connection, --console-socket's or None); None when no server answers,
    the ordinary case. A console socket that cannot be reached raises OSError: the full path
    then says why."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        conn.connect(wire.socket_path(ctx.root))
    except OSError:
        conn.close()
        return None
    console = None
    if console_socket:
        console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            console.connect(console_socket)
        except BaseException:
            console.close()
            conn.close()
            raise
    return conn, console


def _create(ctx, cmd, opts, cid):
    """The init's pid once the server reports the container created; None to fall back."""
    connected = _connect(ctx, opts["console_socket"])
    if connected is None:
        return None
    conn, console = connected
    pid = None
    try:
        _send(conn, wire.CREATE, version=wire.VERSION, id=cid, root=ctx.root,
              client_cwd=posix.getcwd(), bundle=_abs(opts["bundle"]),
              preserve_fds=int(opts["preserve_fds"]), console=console is not None,
              no_new_keyring=bool(opts.get("no_new_keyring")), command=cmd)
        _import_init(conn)  # while the server works
        while True:
            msg, _ = _recv(conn)
            kind = None if msg is None else msg["type"]
            if kind == wire.GO:
                pid = _fork_child(conn, console, msg, _init)
            elif kind == wire.CREATED and pid is not None:
                _warn(ctx, msg.get("warnings"))
                if opts["pid_file"]:
                    _write_pid_file(ctx, opts["pid_file"], pid, cid)
                return pid
            elif kind == wire.REFUSED:  # not served: nothing was made but our child
                if pid is not None:
                    _reap(pid)
                raise Fallback
            elif kind is None:
                raise EOFError("the server died")
            else:
                if pid is not None:
                    _reap(pid)
                _warn(ctx, msg.get("warnings"))
                _failed(ctx, msg)
    except _Exit:
        raise
    except Fallback:
        return None  # refused: nothing was made
    except Exception:  # a server that died or talks nonsense: as if there were none
        if pid is not None:
            _reap(pid)
        _remove_half_made(ctx, cid)
        return None
    finally:
        conn.close()
        if console is not None:
            console.close()


def _fork_child(conn, console, go, main):
    """GO: the container's cgroups exist. Fork the child the server asks for (create's init,
    PID 1 of a new pid namespace; exec's bootstrap child) right into the cgroup2 cgroup
    (clone3), and tell the server (INIT) its pid and the other end of its channel, with our
    stdio. The child enters the v1 hierarchies itself, then runs main(sock, console_fd)."""
    tasks = go["tasks"]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        pid, placed = _clone(go["cgroup2"], go["pid_ns"] is True)
        if pid == 0:
            conn.close()
            ours.close()
            code = 1
            try:
                main(theirs, console.fileno() if console is not None else -1, tasks)
            finally:
                posix._exit(code)
        theirs.close()
        stdio = [fd for fd in (0, 1, 2) if _valid(fd)]
        _send(conn, wire.INIT, [*stdio, ours.fileno()], pid=pid, stdio=stdio, placed=placed)
        return pid
    finally:
        ours.close()
        theirs.close()


def _enter_v1(tasks):
    """In the child: "0" to each v1 `tasks` moves just this thread (the only one), without
    the kernel-wide lock. The failure, for the child to report over its channel."""
    for d in tasks:
        try:
            fd = posix.open(d + "/tasks", posix.O_WRONLY | posix.O_CLOEXEC)
            try:
                posix.write(fd, b"0")
            finally:
                posix.close(fd)
        except OSError as e:
            return f"cgroups: cannot move into {d}: {posix.strerror(e.errno)}"
    return None


def _clone(cgroup2, pid_ns):
    """(pid, whether it was born in `cgroup2`), 0 in the child: clone3 puts it there, or else
    (threads, an older kernel, a cgroup that takes no process) the server moves it."""
    import os
    from pyruntime.linux import syscalls
    if cgroup2 is not None:
        fd = os.open(cgroup2, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return syscalls.fork_into_cgroup(fd, syscalls.CLONE_NEWPID if pid_ns else 0), True
        except OSError:
            pass
        finally:
            os.close(fd)
    if not pid_ns:
        return os.fork(), cgroup2 is None
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    syscalls.SYS.unshare(syscalls.CLONE_NEWPID)
    try:
        pid = os.fork()
    except BaseException:
        pid = -1
        raise
    finally:
        if pid != 0:
            syscalls.SYS.setns(own, syscalls.CLONE_NEWPID)  # our next fork is ours again
            os.close(own)
    return pid, cgroup2 is None


def _exec(ctx, cmd, opts, cid, command):
    """exec through the server: the process's exit code (its pid's, with --detach), 255 for
    the command's own failure, None to run in-process."""
    connected = _connect(ctx, opts["console_socket"])
    if connected is None:
        return None
    conn, console = connected
    child = None
    try:
        process = opts["process"]
        _send(conn, wire.EXEC, version=wire.VERSION, id=cid, root=ctx.root, command="exec",
              client_cwd=posix.getcwd(),
              args=command, process=_abs(process) if process else None, process_name=process,
              preserve_fds=int(opts["preserve_fds"] or 0), console=console is not None,
              **{k: opts[k] for k in ("cwd", "user", "apparmor", "process_label", "env",
                                      "additional_gids", "caps", "cgroups", "tty",
                                      "no_new_privs", "ignore_paused")})
        from pyruntime.linux import syscalls
        __import__("pyruntime.lifecycle.exec")  # the child's code, while the server works
        while True:
            msg, _ = _recv(conn)
            kind = None if msg is None else msg["type"]
            if kind == wire.GO:
                if not opts["detach"]:  # the process is our grandchild: it comes back to us
                    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
                child = _fork_child(conn, console, msg, _exec_child)
            elif kind == wire.EXECED and child is not None:
                posix.waitpid(child, 0)
                child = None
                _warn(ctx, msg.get("warnings"))
                pid = msg["pid"]
                if opts["pid_file"]:
                    _write_exec_pid_file(ctx, opts["pid_file"], pid)
                return 0 if opts["detach"] else _wait_forwarding(pid)
            elif kind in (wire.REFUSED, None) and child is None:
                raise Fallback  # nothing is made before the child: in-process from scratch
            else:
                if kind is None:  # the server died: its process may run; nothing to retry
                    msg = {"msg": "exec: the pyruntime server went away"}
                _warn(ctx, msg.get("warnings"))
                _failed(ctx, msg, 255)
    except _Exit:
        raise
    except Exception:
        if child is not None:
            _failed(ctx, {"msg": "exec: the pyruntime server went away"}, 255)
        return None
    finally:
        if child is not None:
            _reap(child)
        conn.close()
        if console is not None:
            console.close()


def _wait_forwarding(pid):
    """Wait for the process (a subreaper's grandchild), passing our signals on."""
    import _signal
    for s in range(1, 32):
        if s not in (_signal.SIGKILL, _signal.SIGSTOP, _signal.SIGCHLD):
            try:
                _signal.signal(s, lambda n, _f: _kill(pid, n))
            except (OSError, ValueError):
                pass
    while True:
        try:
            _, status = posix.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if posix.WIFSIGNALED(status):
        return 128 + posix.WTERMSIG(status)
    return posix.WEXITSTATUS(status)


def _write_exec_pid_file(ctx, path, pid):
    """As exec in-process: nobody would know the process's pid, so it must not run on."""
    from pyruntime.errors import RuntimeFailure
    try:
        layout.write_pid_file(path, pid)
    except RuntimeFailure as e:
        _kill(pid, 9)
        _failed(ctx, e.record(), 255)


def _remove_half_made(ctx, cid):
    """What a server that died while creating cid may have left: a state dir without its
    state, or one still "creating" (its init gone). Another's container, or one that another
    create finished meanwhile (it holds the lock until then), is left alone."""
    from pyruntime.lifecycle.container import delete
    from pyruntime.lifecycle.state import Container, StateCorrupt
    from pyruntime.errors import ContainerNotFound
    try:
        c = Container.load(ctx.root, cid, lock=True)
    except (ContainerNotFound, StateCorrupt):
        delete(ctx.root, cid, force=True)  # only our own files, under the lock: see delete
        return
    half_made = c.state.status == "creating"
    c.unlock()
    if half_made:
        delete(ctx.root, cid, force=True)


# The init's modules, in the order they import one another (JOIN's records first).
_INIT_MODULES = ("pyruntime.oci.config", "pyruntime.setup.process", "pyruntime.setup.rootfs",
                 "pyruntime.setup.init", "pyruntime.lifecycle.channel")


def _import_init(conn):
    """The fork's module, then the init's, while the server makes the cgroups, until its GO:
    the child imports those left beside the server's fork of the preparer. (Born by clone3 in
    a cgroup2 cgroup, the child's imports are the container's memory, as runc's init's is.)"""
    __import__("pyruntime.linux.syscalls")
    for name in _INIT_MODULES:
        try:
            conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            return  # GO (or an answer) is there
        except BlockingIOError:
            __import__(name)


def _init(sock, console_fd, tasks):
    """create's init, in the child. First, PROCFS: a proc context (fsopen) made in our pid
    namespace, which binds it there, for a preparer outside it to mount (it may have been
    forked before us: server/remote.py). Then the package's own code."""
    from pyruntime.linux import syscalls  # (imported before the fork)
    from pyruntime.lifecycle.channel import PROCFS
    try:
        fds, fields = [syscalls.fsopen("proc")], {}
    except OSError as e:
        fds, fields = [], {"errno": e.errno, "error": str(e)}
    fdpass.send(sock, jsonio.dumps(dict(fields, type=PROCFS)).encode(), fds)
    for fd in fds:
        posix.close(fd)
    from pyruntime.setup import init
    _child(sock, console_fd, tasks, init.p1_main, init.WHO)


def _exec_child(sock, console_fd, tasks):
    """exec's bootstrap child, in the child."""
    from pyruntime.lifecycle import exec as execmod
    _child(sock, console_fd, tasks, execmod.remote_bootstrap, execmod.WHO)


def _child(sock, console_fd, tasks, main, who):
    """Imports first, then the moves into the v1 cgroups (so that the imports' memory is not
    the container's), then main(chan, console_fd); a failure goes to the server."""
    from pyruntime.lifecycle.channel import Channel
    from pyruntime.setup import bootstrap
    error = _enter_v1(tasks)
    chan = Channel(sock)
    try:
        if error is not None:
            from pyruntime.errors import RuntimeFailure
            raise RuntimeFailure(error)
        main(chan, console_fd)
    except BaseException as e:
        bootstrap.fail(chan, e, who)


def _run(ctx, opts, cid, pid):
    """`run` after the create: start, then (unless detached) wait for the init and delete."""
    from pyruntime.cli import fast
    fctx = fast.Ctx()
    fctx.root, fctx.log, fctx.log_format = ctx.root, ctx.log, ctx.log_format
    import _signal
    forwarded = [s for s in range(1, 32) if s not in (_signal.SIGKILL, _signal.SIGSTOP,
                                                      _signal.SIGCHLD)]
    if not opts.get("detach"):
        for s in forwarded:
            _signal.signal(s, lambda n, _f: _kill(pid, n))
    code = _or_full(fast.main(_global(ctx) + ["start", cid]), ctx, "start", cid)
    if code or opts.get("detach"):
        if code:
            _full(ctx, ["delete", "--force", cid])
        return code
    while True:
        try:
            _, status = posix.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if not opts.get("keep"):
        _or_full(fast.main(_global(ctx) + ["delete", "--force", cid]), ctx, "delete", "--force",
                 cid)
    if posix.WIFSIGNALED(status):
        return 128 + posix.WTERMSIG(status)
    return posix.WEXITSTATUS(status)


def _global(ctx):
    out = ["--root", ctx.root, "--log-format", ctx.log_format]
    return out + (["--log", ctx.log] if ctx.log else [])


def _or_full(code, ctx, *args):
    return code if code is not None else _full(ctx, list(args))


def _full(ctx, args):
    from pyruntime.cli.main import main as full
    return full(_global(ctx) + args)


def _kill(pid, sig):
    try:
        posix.kill(pid, sig)
    except OSError:
        pass


def _valid(fd):
    try:
        posix.fstat(fd)
        return True
    except OSError:
        return False


def _reap(pid, timeout=2.0):
    """SIGKILL our child and reap it. A PID 1 ends only once every process of its namespace
    is reaped, and a preparer orphaned by a server that died goes to our caller's reaper,
    which may be waiting for us: after `timeout`, leave it to that reaper."""
    import select
    try:
        pidfd = posix.pidfd_open(pid)
    except OSError:
        return
    try:
        posix.kill(pid, 9)
        select.select([pidfd], [], [], timeout)  # readable once it has exited
        posix.waitpid(pid, posix.WNOHANG)
    except OSError:
        pass
    finally:
        posix.close(pidfd)


def _send(conn, kind, fds=(), **fields):
    fdpass.send(conn, jsonio.dumps(dict(fields, type=kind)).encode(), fds)


def _recv(conn):
    """The next message as a dict, or None at EOF; fds are not expected and are closed."""
    data, fds = fdpass.recv(conn, wire.MAX_MSG)
    for fd in fds:
        posix.close(fd)
    if not data:
        return None, []
    msg = jsonio.loads(data)
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ValueError("not a message")
    return msg, []


def _failed(ctx, msg, code=1):
    """Report the server's error as the in-process command reports it, and exit `code`."""
    from pyruntime import log
    from pyruntime.errors import RuntimeFailure
    log.setup(ctx.log, ctx.log_format)
    try:
        log.error(str(RuntimeFailure.from_record(msg)))
    finally:
        log.close()
    raise _Exit(code)


def _warn(ctx, warnings):
    if warnings:
        from pyruntime import log
        log.setup(ctx.log, ctx.log_format)
        for w in warnings:
            log.warning(str(w))
        log.close()


def _write_pid_file(ctx, path, pid, cid):
    """As create in-process: a pid file that cannot be written undoes the container."""
    from pyruntime.errors import RuntimeFailure
    try:
        layout.write_pid_file(path, pid)
    except RuntimeFailure as e:
        from pyruntime.lifecycle.container import delete
        delete(ctx.root, cid, force=True)
        _reap(pid)
        _failed(ctx, e.record())
