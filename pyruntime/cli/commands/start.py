"""executes the user defined process in a created container"""
from pyruntime.cli.commands import runtime


def configure(p):
    p.add_argument("container_id")


def main(opts, ctx):
    runtime(ctx).start(opts.container_id)
    return 0
