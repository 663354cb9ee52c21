"""kill sends the specified signal (default: SIGTERM) to the container's init process"""
from pyruntime.cli.commands import runtime


def configure(p):
    p.add_argument("--all", "-a", action="store_true", help="signal every process in the container")
    p.add_argument("container_id")
    p.add_argument("signal", nargs="?", default="SIGTERM")


def main(opts, ctx):
    runtime(ctx).kill(opts.container_id, opts.signal, opts.all)
    return 0
