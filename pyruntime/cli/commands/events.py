"""display container events such as OOM notifications, cpu, memory, and IO usage statistics"""
import json
import select
import signal
import sys
import time

from pyruntime.cgroups.ops import OOMWatcher, container_manager, parse_duration
from pyruntime.errors import ContainerNotFound, RuntimeFailure
from pyruntime.lifecycle.state import Container

# How often the stream checks that the container still runs (and, without an eventfd, whether
# the OOM kill count rose), whatever the stats interval.
_TICK = 0.2


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


def _stats_event(cid: str, m) -> dict:
    try:
        data = m.stats()
    except OSError as e:
        raise RuntimeFailure(f"unable to get container cgroup stats: {e}") from None
    return {"type": "stats", "id": cid, "data": data}


def _still_running(root: str, cid: str) -> bool:
    try:
        c = Container.load(root, cid)
    except ContainerNotFound:
        return False
    return c.status() != "stopped"


def main(opts, ctx):
    try:
        interval = parse_duration(opts.interval)
    except ValueError as e:
        raise RuntimeFailure(f"invalid value {opts.interval!r} for flag -interval: {e}") from None
    if interval <= 0:
        raise RuntimeFailure("duration interval must be greater than 0")
    c = Container.load(ctx.root, opts.container_id)
    if c.status() == "stopped":
        raise RuntimeFailure(f"container with id {c.id} is not running")
    m = container_manager(c)
    if opts.stats:
        _emit(_stats_event(c.id, m))
        return 0
    # A reader that goes away (`| head`) ends the stream quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    oom = OOMWatcher(m)
    try:
        next_stats = time.monotonic() + interval
        while True:
            now = time.monotonic()
            timeout = max(0.0, min(next_stats - now, _TICK))
            if oom.pollable:
                select.select([oom], [], [], timeout)
            else:
                time.sleep(timeout)
            if oom.check():  # one event a wake-up, however many OOMs it counts (as runc)
                _emit({"type": "oom", "id": c.id})
            if oom.gone:
                break
            if time.monotonic() >= next_stats:
                try:
                    _emit(_stats_event(c.id, m))
                except RuntimeFailure:
                    if not _still_running(ctx.root, c.id):
                        break
                    raise
                next_stats += interval
                if next_stats < time.monotonic():  # fell behind (a stopped clock, a slow read)
                    next_stats = time.monotonic() + interval
            if not _still_running(ctx.root, c.id):
                # The init's death may follow an OOM kill by a hair: report that one too.
                if oom.check():
                    _emit({"type": "oom", "id": c.id})
                break
    finally:
        oom.close()
    return 0
