"""pause suspends all processes inside the container"""
from pyruntime.cgroups.ops import container_manager
from pyruntime.errors import RuntimeFailure
from pyruntime.lifecycle.state import Container


def configure(p):
    p.add_argument("container_id")


def main(opts, ctx):
    c = Container.load(ctx.root, opts.container_id, lock=True)
    try:
        # runc pauses running and created containers; anything else is "not running".
        if c.status() not in ("running", "created"):
            raise RuntimeFailure("container not running")
        m = container_manager(c)
        m.freeze()
        # The init may have exited between the status check and the freeze: a frozen empty
        # cgroup is not a paused container.
        if not m.pids() and not c.init_alive():
            m.thaw()
            raise RuntimeFailure("container not running")
    finally:
        c.unlock()
    return 0
