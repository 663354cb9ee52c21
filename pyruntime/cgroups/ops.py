"""What the cgroup commands (pause, resume, update, ps, events) share: a container's manager,
runc's value parsers (memory sizes, Go durations), and the OOM watcher.

Imported only by those commands: nothing here sits on the hot path of `create`.
"""
from __future__ import annotations

import os
import re

from pyruntime.errors import RuntimeFailure

from pyruntime.cgroups import Manager, manager_from_state


def container_manager(c) -> Manager:
    """The cgroup manager saved in a Container's state."""
    if not c.state.cgroup:
        raise RuntimeFailure(f"container {c.id} has no cgroup (a rootless container gets one "
                             "only where a cgroup was delegated to its user)")
    return manager_from_state(c.state.cgroup)


# ---------------------------------------------------------------- parsers

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str) -> int:
    """A human size in bytes with binary multipliers, as docker/go-units' RAMInBytes (which runc
    uses for `update --memory`): "500M", "1g", "1.5GiB", "64kb", "1024"."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"invalid size: '{text}'")
    try:
        num = float(m.group(1))
    except ValueError:
        raise ValueError(f"invalid size: '{text}'") from None
    return int(num * _UNITS[(m.group(2) or "").lower()])


_DUR_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
              "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration ("5s", "500ms", "1m30s", "1.5h", "-1s") in seconds. A bare number is taken
    as seconds (Go would want a unit; accepting it costs nothing)."""
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    try:
        return sign * float(s)
    except ValueError:
        pass
    total, pos = 0.0, 0
    for m in _DUR_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"invalid duration {text!r}")
    return sign * total


# ---------------------------------------------------------------- OOM notification

class OOMWatcher:
    """Counts OOM events of a container's memory cgroup.

    cgroup v1: an eventfd registered on memory.oom_control through cgroup.event_control (what
    runc does); the kernel signals it on each OOM, and once more when the cgroup is removed.
    cgroup v2 (or no eventfd): poll the oom_kill count of memory.events / memory.oom_control.
    """

    def __init__(self, m: Manager):
        self.m = m
        self.efd = -1
        self.dir = None
        self.gone = False
        w = m.where("memory")
        try:
            self.last = m.oom_kill_count()
        except OSError:
            self.last = 0
        if w and w[0] == 1:
            self.dir = w[1]
            try:
                self._register(w[1])
            except OSError:
                self.close()

    def _register(self, d: str) -> None:
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            ofd = os.open(os.path.join(d, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
            try:
                cfd = os.open(os.path.join(d, "cgroup.event_control"), os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(cfd, f"{efd} {ofd}".encode())
                finally:
                    os.close(cfd)
            finally:
                os.close(ofd)  # the kernel holds its own reference once registered
        except OSError:
            os.close(efd)
            raise
        self.efd = efd

    def fileno(self) -> int:
        return self.efd

    @property
    def pollable(self) -> bool:
        return self.efd >= 0

    def check(self) -> int:
        """The number of new OOM events since the last call (after a wake-up or a timeout)."""
        n = 0
        if self.efd >= 0:
            try:
                n = int.from_bytes(os.read(self.efd, 8), "little")
            except BlockingIOError:
                n = 0
            except OSError:
                n = 0
            if n and self.dir and not os.path.exists(os.path.join(self.dir,
                                                                  "cgroup.event_control")):
                # The wake-up was the cgroup's removal, not an OOM.
                self.gone = True
                return 0
            return n
        try:
            count = self.m.oom_kill_count()
        except OSError:
            return 0
        if count > self.last:
            n = count - self.last
        self.last = max(self.last, count)
        return n

    def close(self) -> None:
        if self.efd >= 0:
            os.close(self.efd)
            self.efd = -1
