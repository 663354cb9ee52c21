"""The controllers pyruntime enables in cgroup2's `cgroup.subtree_control` files, and their
undoing once no container of ours needs them.

On a hybrid host cgroup2 holds the controllers no v1 hierarchy took (hugetlb here). Left
enabled in the cgroup2 root, such a controller can no longer be mounted as v1, and crun refuses
the host ("cgroups in hybrid mode not supported"); runc never enables them there. We still
enable them while a container needs them (so a controller handed to cgroup2 is usable), but
count the containers that do, in one host-wide record, and disable each one at the last
container's delete (on a pure v2 host too: the host is left as found). A controller that was
enabled before us is never ours to disable.

The record, {dir: {controller: [container cgroup dirs]}}, is written before the controller is
enabled (an intent log: a kill at any instant leaves the undo to the next delete), under a
flock, and entries whose container dir is gone are dropped at every release.
"""
from __future__ import annotations

import fcntl
import os

from pyruntime.lean import jsonio
from pyruntime.errors import RuntimeFailure

from pyruntime.cgroups.common import read_or, write

RECORD = "/run/pyruntime-cgroup2-enabled.json"


class _Record:
    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> dict:
        self.fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            with open(self.path, "rb") as f:
                data = jsonio.load(f)
            self.data = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self.data = {}
        return self.data

    def save(self) -> None:
        data = {d: c for d, c in self.data.items() if c}
        if not data:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            return
        tmp = f"{self.path}.{os.getpid()}"
        with open(tmp, "w") as f:
            jsonio.dump(data, f)
        os.rename(tmp, self.path)

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def _levels(mount: str, leaf: str) -> list[str]:
    """The dirs whose subtree_control `leaf` needs: the mount's root down to leaf's parent."""
    rel = os.path.relpath(leaf, mount)
    if rel == "." or rel.startswith(".."):
        return []
    out, d = [], mount
    for part in rel.split("/"):
        out.append(d)
        d = os.path.join(d, part)
    return out


def acquire(mount: str, leaf: str, record: str = RECORD) -> None:
    """Enable every available controller from the root down to leaf's parent (as runc's fs2
    driver does) and count `leaf` as a user of each one we enabled. Failures are left for
    apply() to report: a dir holding processes cannot delegate (no-internal-processes rule)."""
    levels = _levels(mount, leaf)
    if not levels:
        return
    rec = _Record(record)
    with rec as data:
        changed = False
        for d in levels:
            avail = (read_or(d, "cgroup.controllers", "") or "").split()
            have = set((read_or(d, "cgroup.subtree_control", "") or "").split())
            ours = data.setdefault(d, {})
            if not isinstance(ours, dict) or \
                    not all(isinstance(u, list) for u in ours.values()):
                ours = data[d] = {}  # a damaged record: start this dir afresh
            for c in ours:
                if c in have and leaf not in ours[c]:
                    ours[c].append(leaf)
                    changed = True
            want = [c for c in avail if c not in have]
            if not want:
                continue
            changed = True
            for c in want:
                ours.setdefault(c, []).append(leaf)
            rec.save()  # before enabling: the record names what may be enabled
            failed = _enable(d, want)
            for c in failed:
                ours[c].remove(leaf)
                if not ours[c]:
                    del ours[c]
        if changed:
            rec.save()


def _enable(d: str, want: list[str]) -> list[str]:
    try:
        write(d, "cgroup.subtree_control", " ".join("+" + c for c in want), "cgroups")
        return []
    except RuntimeFailure:
        failed = []
        for c in want:
            try:
                write(d, "cgroup.subtree_control", "+" + c, "cgroups")
            except RuntimeFailure:
                failed.append(c)
        return failed


def release(leaf: str, record: str = RECORD) -> None:
    """`leaf` (already removed) no longer needs its controllers: disable those no other
    container of ours needs, deepest dir first. Users whose cgroup is gone go too, so
    release("") prunes what a killed remover left."""
    if not os.path.exists(record):
        return
    rec = _Record(record)
    with rec as data:
        for d in sorted(data, key=lambda p: p.count("/"), reverse=True):
            ours = data[d]
            if not isinstance(ours, dict):
                del data[d]
                continue
            for c in list(ours):
                users = [u for u in (ours[c] if isinstance(ours[c], list) else [])
                         if isinstance(u, str) and u != leaf and os.path.isdir(u)]
                if users:
                    ours[c] = users
                    continue
                del ours[c]
                if os.path.isdir(d):
                    try:
                        write(d, "cgroup.subtree_control", "-" + c, "cgroups")
                    except RuntimeFailure:
                        pass  # a child enabled it further down: still in use, not ours to force
        rec.save()
