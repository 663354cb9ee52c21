"""create a container"""
from pyruntime.cli.commands import runtime


def configure(p):
    add_create_flags(p)


def add_create_flags(p):
    p.add_argument("--bundle", "-b", default=".", help="path to the bundle (default: cwd)")
    p.add_argument("--pid-file", help="file to write the init's host pid to (no newline)")
    p.add_argument("--console-socket", help="unix socket that receives the pty master")
    p.add_argument("--no-pivot", action="store_true", help="use MS_MOVE + chroot, not pivot_root")
    p.add_argument("--no-new-keyring", action="store_true", help="keep the caller's session keyring")
    p.add_argument("--preserve-fds", type=int, default=0, help="pass N fds beyond stdio (3..3+N-1)")
    p.add_argument("container_id")


def main(opts, ctx):
    runtime(ctx).create(opts.container_id, opts.bundle, pid_file=opts.pid_file,
                        console_socket=opts.console_socket, no_pivot=opts.no_pivot,
                        no_new_keyring=opts.no_new_keyring, preserve_fds=opts.preserve_fds)
    return 0
