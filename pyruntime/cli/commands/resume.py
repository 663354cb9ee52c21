"""resumes all processes that have been previously paused"""
from pyruntime.cli.commands import runtime


def configure(p):
    p.add_argument("container_id")


def main(opts, ctx):
    runtime(ctx).resume(opts.container_id)
    return 0
