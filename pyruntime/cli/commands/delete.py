"""delete any resources held by the container"""
from pyruntime.lifecycle.container import delete


def configure(p):
    p.add_argument("--force", "-f", action="store_true", help="kill the container first if it runs")
    p.add_argument("container_id")


def main(opts, ctx):
    delete(ctx.root, opts.container_id, opts.force)
    return 0
