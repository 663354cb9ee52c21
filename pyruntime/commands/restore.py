"""restore (not implemented yet: needs CRIU integration)"""
from ..errors import RuntimeFailure


def configure(p):
    p.add_argument("args", nargs="*")


def main(opts, ctx):
    raise RuntimeFailure("restore is not implemented in pyruntime yet (CRIU support is planned)")
