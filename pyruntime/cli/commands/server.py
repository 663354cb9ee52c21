"""run the warm server for --root in the foreground (not a runc command)"""


def configure(p):
    pass


def main(opts, ctx):
    from pyruntime.server.daemon import serve
    if ctx.rootless:
        from pyruntime.errors import RuntimeFailure
        raise RuntimeFailure("server: rootless callers are not served yet: run without it")
    return serve(ctx.root, ctx.debug)
