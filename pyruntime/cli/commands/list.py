"""lists containers started by pyruntime with the given root"""

import sys

from pyruntime.lean import jsonio
from pyruntime import log
from pyruntime.cli.commands import runtime


def configure(p):
    p.add_argument("--format", "-f", choices=("table", "json"), default="table",
                   help="select one of: table or json")
    p.add_argument("--quiet", "-q", action="store_true", help="display only container IDs")


def main(opts, ctx):
    states = []
    for st in runtime(ctx).list():
        if st.status == "damaged":  # shown as such; the others are still listed
            log.warning(st.damage)
            states.append({"id": st.id, "pid": 0, "status": "damaged", "bundle": "",
                           "created": "", "owner": ""})
        else:
            states.append(st.to_oci())
    if opts.quiet:
        for st in states:
            print(st["id"])
    elif opts.format == "json":
        # runc's shape: its struct omits empty annotations, and an empty list is null
        for st in states:
            if not st.get("annotations"):
                st.pop("annotations", None)
        # as runc's json.NewEncoder: UTF-8, with <, >, & escaped
        sys.stdout.buffer.write(jsonio.go_dumps(states or None).encode() + b"\n")
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"])
                 for s in states]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0
