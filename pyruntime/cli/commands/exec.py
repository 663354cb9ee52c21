"""execute new process inside the container"""

from pyruntime.lean import socket
from pyruntime.lean import jsonio
from pyruntime.linux.console import (caller_size, exit_code, forward_signals, receive_master,
                                     wait_proxying)
from pyruntime.errors import RuntimeFailure
from pyruntime.cli.commands import runtime


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
    process_json = None
    if opts.process:
        try:
            with open(opts.process) as f:
                process_json = jsonio.load(f)
        except OSError as e:
            raise RuntimeFailure(f"--process {opts.process}: {e.strerror}", errno=e.errno) from None
        except ValueError as e:
            raise RuntimeFailure(f"--process {opts.process}: not valid JSON: {e}") from None
    elif not opts.command:
        raise RuntimeFailure("exec: no command given (args or --process)")
    terminal = bool(process_json.get("terminal")) if isinstance(process_json, dict) else opts.tty
    ours = theirs = None
    if terminal and not opts.console_socket:
        if opts.detach:
            raise RuntimeFailure("exec: a terminal with --detach needs --console-socket")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    size = caller_size() if ours is not None else None
    # Without --detach the process is reparented to us (a subreaper): we wait for it here,
    # proxying signals and the terminal, which the API's own wait does not do.
    rt = runtime(ctx, subreaper=not opts.detach)
    pid = rt.exec(opts.container_id, opts.command, process=process_json, detach=True,
                  console_socket=theirs if theirs is not None else opts.console_socket,
                  pid_file=opts.pid_file, preserve_fds=opts.preserve_fds,
                  ignore_paused=opts.ignore_paused, cgroups=opts.cgroup, cwd=opts.cwd,
                  env=opts.env, user=opts.user, additional_gids=opts.additional_gids,
                  caps=opts.cap, no_new_privs=opts.no_new_privs, tty=opts.tty,
                  apparmor=opts.apparmor, process_label=opts.process_label,
                  console_size=size).pid
    if theirs is not None:
        theirs.close()
    if opts.detach:
        return 0
    forward_signals(pid)
    master = receive_master(ours) if ours is not None else None
    return exit_code(wait_proxying(pid, master))
