"""restore a container from a previous checkpoint (CRIU)"""


def configure(p):
    from pyruntime.cli.commands.checkpoint import criu_options
    criu_options(p, "path to criu image files for restoring (default: ./checkpoint)")
    p.add_argument("--console-socket", help="unix socket that receives the pty master")
    p.add_argument("--bundle", "-b", default=".", help="path to the bundle (default: cwd)")
    p.add_argument("--detach", "-d", action="store_true", help="detach from the container's process")
    p.add_argument("--pid-file", help="file to write the init's host pid to (no newline)")
    p.add_argument("--no-subreaper", action="store_true", help="do not reap reparented processes")
    p.add_argument("--no-pivot", action="store_true", help="(accepted as runc does: CRIU sets the root)")
    p.add_argument("--lsm-profile", help="LSM profile for the restored process, TYPE:NAME")
    p.add_argument("--lsm-mount-context", help="LSM mount context for the restored mounts")
    p.add_argument("container_id")


def main(opts, ctx):
    from pyruntime.criu.restore import restore
    if not opts.detach and not opts.no_subreaper:
        from pyruntime.linux import syscalls  # the restored tree's orphans come to us while
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)  # we wait, as with `run`
    pid, master = restore(ctx.root, opts.container_id, opts, getattr(ctx, "criu", None),
                          ctx.systemd_cgroup)
    if opts.detach:
        return 0
    from pyruntime.linux.console import exit_code, forward_signals, wait_proxying
    from pyruntime.lifecycle.container import delete
    forward_signals(pid)
    try:
        status = wait_proxying(pid, master)
    finally:
        delete(ctx.root, opts.container_id, force=True)
    return exit_code(status)
