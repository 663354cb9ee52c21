"""delete any resources held by the container"""
from pyruntime.cli.commands import runtime


def configure(p):
    p.add_argument("--force", "-f", action="store_true", help="kill the container first if it runs")
    p.add_argument("container_id")


def main(opts, ctx):
    runtime(ctx).delete(opts.container_id, opts.force)
    return 0
