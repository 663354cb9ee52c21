"""output the state of a container"""

from .. import jsonio
from ..state import Container


def configure(p):
    p.add_argument("container_id")


def main(opts, ctx):
    c = Container.load(ctx.root, opts.container_id)
    print(jsonio.dumps(c.oci_state(), indent=2))
    return 0
