"""executes the user defined process in a created container"""
from pyruntime.lifecycle.container import start


def configure(p):
    p.add_argument("container_id")


def main(opts, ctx):
    start(ctx.root, opts.container_id)
    return 0
