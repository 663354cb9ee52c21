"""checkpoint (not implemented yet: needs CRIU integration)"""
from ..errors import RuntimeFailure

IMPLEMENTED = False  # features reports checkpoint.enabled only once this is true


def configure(p):
    p.add_argument("args", nargs="*")


def main(opts, ctx):
    raise RuntimeFailure("checkpoint is not implemented in pyruntime yet (CRIU support is planned)")
