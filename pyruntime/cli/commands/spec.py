"""create a new specification file"""
import json
import os

from pyruntime.oci.defaults import default_spec
from pyruntime.errors import RuntimeFailure


def configure(p):
    p.add_argument("--bundle", "-b", default=".", help="where to write config.json")
    p.add_argument("--rootless", action="store_true", help="a spec for a rootless container")


def main(opts, ctx):
    path = os.path.join(opts.bundle, "config.json")
    if os.path.exists(path):
        raise RuntimeFailure(f"File {path} exists. Remove it first")
    try:
        with open(path, "x") as f:
            json.dump(default_spec(rootless=opts.rootless), f, indent="\t")
    except OSError as e:
        raise RuntimeFailure(f"cannot write {path}: {e.strerror}", errno=e.errno) from None
    return 0
