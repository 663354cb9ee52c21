"""create and run a container"""
import os

from pyruntime.lean import socket
from pyruntime.linux import syscalls
from pyruntime.linux.console import (exit_code, follow_size, forward_signals, receive_master,
                                     wait_proxying)
from pyruntime.cli.commands import runtime
from pyruntime.cli.commands.create import add_create_flags


def configure(p):
    add_create_flags(p)
    p.add_argument("--detach", "-d", action="store_true", help="detach from the container's process")
    p.add_argument("--keep", action="store_true", help="do not delete the container after it exits")
    p.add_argument("--no-subreaper", action="store_true",
                   help="do not reap processes orphaned inside the container")


def main(opts, ctx):
    # The init is orphaned when `create`'s bootstrap child exits; as a subreaper we inherit it.
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
    ours = theirs = None
    if not opts.console_socket and not opts.detach and _wants_terminal(opts.bundle):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    rt = runtime(ctx, subreaper=True)
    st = rt.create(opts.container_id, opts.bundle, pid_file=opts.pid_file,
                   console_socket=theirs if theirs is not None else opts.console_socket,
                   no_pivot=opts.no_pivot, no_new_keyring=opts.no_new_keyring,
                   preserve_fds=opts.preserve_fds)
    if theirs is not None:
        theirs.close()
    if opts.no_subreaper:
        # The init is our child by now and stays so; only later orphans (of a container in
        # the host's pid namespace) go to our own reaper instead, as with runc's flag.
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 0)
    pid = st.pid
    try:
        if opts.detach:
            rt.start(opts.container_id)
            return 0
        forward_signals(pid)
        master = receive_master(ours) if ours is not None else None
        if master is not None:
            follow_size(master)  # before the process runs, not as soon after as can be
        rt.start(opts.container_id)
        status = wait_proxying(pid, master)
    except BaseException:
        rt.delete(opts.container_id, force=True)
        raise
    if not opts.keep:
        rt.delete(opts.container_id, force=True)
    return exit_code(status)


def _wants_terminal(bundle):
    from pyruntime.lean import jsonio
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            return bool(jsonio.load(f).get("process", {}).get("terminal"))
    except (OSError, ValueError, AttributeError):
        return False


