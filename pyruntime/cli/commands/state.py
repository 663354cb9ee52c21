"""output the state of a container"""

import sys

from pyruntime.lean import jsonio
from pyruntime.lifecycle.state import Container


def configure(p):
    p.add_argument("container_id")


def main(opts, ctx):
    c = Container.load(ctx.root, opts.container_id)
    # as runc's json.MarshalIndent: UTF-8, with <, >, & escaped
    sys.stdout.buffer.write(jsonio.go_dumps(c.oci_state(), indent=2).encode() + b"\n")
    return 0
