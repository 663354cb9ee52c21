"""resumes all processes that have been previously paused"""
from pyruntime.cgroups.ops import container_manager
from pyruntime.errors import RuntimeFailure
from pyruntime.lifecycle.state import Container


def configure(p):
    p.add_argument("container_id")


def main(opts, ctx):
    c = Container.load(ctx.root, opts.container_id, lock=True)
    try:
        if c.status() != "paused":
            raise RuntimeFailure("container not paused")
        container_manager(c).thaw()
    finally:
        c.unlock()
    return 0
