"""display container events such as OOM notifications, cpu, memory, and IO usage statistics"""
import json
import signal
import sys

from pyruntime.cgroups.ops import parse_duration
from pyruntime.cli.commands import runtime
from pyruntime.errors import RuntimeFailure


def configure(p):
    p.add_argument("--interval", default="5s",
                   help="the stats collection interval, a duration such as 5s, 500ms, 1m "
                        "(default 5s)")
    p.add_argument("--stats", action="store_true",
                   help="display the container's stats once, then exit")
    p.add_argument("container_id")


def _emit(event: dict) -> None:
    # One compact JSON object a line, like Go's json.Encoder.
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main(opts, ctx):
    try:
        interval = parse_duration(opts.interval)
    except ValueError as e:
        raise RuntimeFailure(f"invalid value {opts.interval!r} for flag -interval: {e}") from None
    if interval <= 0:
        raise RuntimeFailure("duration interval must be greater than 0")
    rt = runtime(ctx)
    if opts.stats:
        _emit({"type": "stats", "id": opts.container_id, "data": rt.stats(opts.container_id)})
        return 0
    events = rt.events(opts.container_id, interval)
    # A reader that goes away (`| head`) ends the stream quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        for ev in events:
            _emit(ev.to_dict())
    finally:
        events.close()
    return 0
