"""Check a bundle's config.json against the OCI runtime-spec v1.3.0 schema.

Prints every problem on its own line (``config.json: <json.path>: <value> <problem>``) and
exits 1, or prints ``config.json is valid`` and exits 0. The root filesystem named by
``root.path`` must exist too. A valid config is then checked as `create` would check it on
this host (what it refuses is a problem), and every field this host would ignore gets a
``warning:`` line (coverage.py says which).
"""
from __future__ import annotations

import os


def configure(parser) -> None:
    parser.add_argument(
        "--bundle", "-b", default=None,
        help="path to the root of the bundle directory (default: the current directory)")


def main(opts, ctx) -> int:
    from pyruntime.oci.validate import host_check, validate_bundle

    bundle = getattr(opts, "bundle", None) or os.getcwd()
    problems = validate_bundle(bundle)
    if problems:
        print("\n".join(problems), flush=True)
        return 1
    problems, warnings = host_check(bundle)
    lines = problems + warnings if problems else warnings + ["config.json is valid"]
    print("\n".join(lines), flush=True)
    return 1 if problems else 0
