"""One module per CLI command: configure(parser) adds its flags, main(opts, ctx) runs it."""


def runtime(ctx, subreaper: bool = False):
    """The Python API's Runtime for the global flags: the commands are a layer over it. No
    subreaper unless the command waits for the process itself (Docker's shim is the one that
    reaps what `create` leaves), and this process may re-execute itself (sealed.py)."""
    from pyruntime.api import Runtime
    rt = Runtime(ctx.root, systemd_cgroup=ctx.systemd_cgroup, rootless=ctx.rootless,
                 subreaper=subreaper)
    rt._reexec = True
    return rt
