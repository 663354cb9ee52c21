"""pause suspends all processes inside the container"""
from pyruntime.cli.commands import runtime


def configure(p):
    p.add_argument("container_id")


def main(opts, ctx):
    runtime(ctx).pause(opts.container_id)
    return 0
