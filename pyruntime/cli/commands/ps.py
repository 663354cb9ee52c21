"""ps displays the processes running inside a container"""
import json
import subprocess
import sys

from pyruntime.cli.commands import runtime
from pyruntime.cli.options import REMAINDER
from pyruntime.errors import RuntimeFailure


def configure(p):
    p.add_argument("--format", "-f", default="table", help="table or json")
    p.add_argument("container_id")
    # Everything after the id goes to ps(1), options included (runc: SkipArgReorder).
    p.add_argument("ps_args", nargs=REMAINDER, help="ps options (default: -ef)")


def main(opts, ctx):
    if opts.format not in ("table", "json"):
        raise RuntimeFailure("invalid format option")
    pids = runtime(ctx).ps(opts.container_id)
    if opts.format == "json":
        sys.stdout.write(json.dumps(pids, separators=(",", ":")) + "\n")
        return 0
    args = opts.ps_args or ["-ef"]
    try:
        proc = subprocess.run(["ps", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise RuntimeFailure('exec: "ps": executable file not found in $PATH') from None
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        first = (out.strip().splitlines() or [""])[0]
        raise RuntimeFailure(f"ps: exit status {proc.returncode}: {first}")
    lines = out.split("\n")
    header = lines[0]
    titles = header.split()
    if "PID" not in titles:
        raise RuntimeFailure("couldn't find PID field in ps output")
    col = titles.index("PID")
    wanted = set(pids)
    keep = [header]
    for line in lines[1:]:
        if not line:
            continue
        fields = line.split()
        try:
            pid = int(fields[col])
        except (IndexError, ValueError):
            raise RuntimeFailure(f"unable to parse pid: {line!r}") from None
        if pid in wanted:
            keep.append(line)
    sys.stdout.write("\n".join(keep) + "\n")
    return 0
