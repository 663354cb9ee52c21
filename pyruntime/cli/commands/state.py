"""output the state of a container"""

import sys

from pyruntime.lean import jsonio
from pyruntime.cli.commands import runtime


def configure(p):
    p.add_argument("container_id")


def main(opts, ctx):
    st = runtime(ctx).state(opts.container_id)
    # as runc's json.MarshalIndent: UTF-8, with <, >, & escaped
    sys.stdout.buffer.write(jsonio.go_dumps(st.to_oci(), indent=2).encode() + b"\n")
    return 0
