"""execute new process inside the container"""

import prctl

from pyruntime.lean import socket
from pyruntime.lean import jsonio
from pyruntime.linux.console import exit_code, forward_signals, receive_master, wait_proxying
from pyruntime.errors import RuntimeFailure
from pyruntime.lifecycle.exec import build_process, exec_process


def configure(p):
    p.add_argument("--process", "-p", help="path to a process.json (OCI process)")
    p.add_argument("--console-socket", help="unix socket that receives the pty master")
    p.add_argument("--tty", "-t", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("--detach", "-d", action="store_true", help="detach from the process")
    p.add_argument("--pid-file", help="file to write the process's host pid to")
    p.add_argument("--cwd", help="current working directory in the container")
    p.add_argument("--env", "-e", action="append", default=[], help="KEY=value (repeatable)")
    p.add_argument("--user", "-u", help="uid[:gid]")
    p.add_argument("--additional-gids", "-g", action="append", default=[], help="extra gid")
    p.add_argument("--cap", "-c", action="append", default=[], help="add a capability")
    p.add_argument("--no-new-privs", action="store_true", help="set no_new_privs")
    p.add_argument("--apparmor", help="AppArmor profile (this host has no AppArmor)")
    p.add_argument("--process-label", help="SELinux label (this host has no SELinux)")
    p.add_argument("--preserve-fds", type=int, default=0, help="pass N fds beyond stdio")
    p.add_argument("--ignore-paused", action="store_true", help="exec even if paused")
    p.add_argument("--cgroup", action="append", default=[],
                   help="run the process in an (existing) sub-cgroup: [controller[,...]:]path "
                        "(repeatable, one per controller)")
    p.add_argument("container_id")
    p.add_argument("command", nargs="...", help="the command and its arguments")


def main(opts, ctx):
    from pyruntime.lifecycle.state import Container
    c = Container.load(ctx.root, opts.container_id)
    process_json = None
    if opts.process:
        try:
            with open(opts.process) as f:
                process_json = jsonio.load(f)
        except OSError as e:
            raise RuntimeFailure(f"--process {opts.process}: {e.strerror}") from None
        except ValueError as e:
            raise RuntimeFailure(f"--process {opts.process}: not valid JSON: {e}") from None
    elif not opts.command:
        raise RuntimeFailure("exec: no command given (args or --process)")
    proc = build_process(c, process_json, opts.command, cwd=opts.cwd, env=opts.env, user=opts.user,
                         additional_gids=opts.additional_gids, caps=opts.cap,
                         no_new_privs=opts.no_new_privs, tty=opts.tty,
                         apparmor=opts.apparmor, process_label=opts.process_label)
    if not opts.detach:
        prctl.set_child_subreaper(True)  # the process is reparented to us: wait for it
    ours = theirs = None
    if proc.terminal and not opts.console_socket:
        if opts.detach:
            raise RuntimeFailure("exec: a terminal with --detach needs --console-socket")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = exec_process(ctx.root, opts.container_id, proc, console_socket=opts.console_socket,
                       console_sock=theirs, pid_file=opts.pid_file,
                       preserve_fds=opts.preserve_fds, ignore_paused=opts.ignore_paused,
                       cgroup=opts.cgroup)
    if theirs is not None:
        theirs.close()
    if opts.detach:
        return 0
    forward_signals(pid)
    master = receive_master(ours) if ours is not None else None
    return exit_code(wait_proxying(pid, master))
