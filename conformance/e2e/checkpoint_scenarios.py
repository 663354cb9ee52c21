"""Checkpoint/restore end to end (issue 18): Docker and podman drive `checkpoint`/`restore`.

The daemon.json daemons.py writes has `"experimental": true` (docker checkpoint needs it).
They need a CRIU that passes `criu check` (tests/criu-setup.sh) for runc and pyruntime alike.
A container counts in /tmp/n; after the restore the count must go on from where it was,
not start again.
"""
from __future__ import annotations

import time

from scenarios import PODMAN_IMG, PODMAN_RUN, Ctx, Fail, scenario, wait_for

# docker's `start --checkpoint` uploads the checkpoint to containerd before any runtime is
# called, and fails ("commit failed: content sha256:...: already exists") while containerd still
# holds the same blob from `checkpoint create` (its garbage collector has not run yet: seen under
# CI's load, with runc and pyruntime alike). Such a start is tried again; any other failure counts.
UPLOAD_RACE = "failed to upload checkpoint to containerd"


def _start_from_checkpoint(c: Ctx, n: str, name: str):
    for _ in range(10):
        st = c.docker("start", "--checkpoint", name, n, timeout=120)
        if st.rc == 0 or UPLOAD_RACE not in st.e or "already exists" not in st.e:
            return st
        time.sleep(1)
    return st


COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done"


def _count(read) -> int:
    """The counter, read through `docker/podman exec`; an exec can fail for a moment right
    after a start or restore (either runtime), so a few tries before -1."""
    for _ in range(20):
        text = read().o
        if text.isdigit():
            return int(text)
        time.sleep(0.1)
    return -1


def _goes_on(read, before: int) -> str:
    """'yes' if the restored counter's first reading is past `before` (read just before the
    dump, at least 10): a restarted shell would be counting from 1."""
    after = _count(read)
    return "yes" if after >= before >= 10 else f"no (before {before}, after {after})"


@scenario("docker checkpoint create + start --checkpoint",
          expect="ck=0 status=exited start=0 status=running goes-on=yes")
def _(c: Ctx):
    n = c.running(f"sh -c '{COUNTER}'")
    read = lambda: c.docker("exec", n, "cat", "/tmp/n")  # noqa: E731
    if not wait_for(lambda: _count(read) >= 10, timeout=15):
        raise Fail(f"the counter did not start: {read().e}")
    before = _count(read)  # the dump comes later: the restored count is at least this
    ck = c.docker("checkpoint", "create", n, "cp1", timeout=120)
    if ck.rc:
        return f"ck={ck.rc} err={ck.e[-200:]}"
    stopped = c.inspect(n, "{{.State.Status}}")
    st = _start_from_checkpoint(c, n, "cp1")
    running = c.inspect(n, "{{.State.Status}}")
    return (f"ck={ck.rc} status={stopped} start={st.rc} status={running} "
            f"goes-on={_goes_on(read, before) if st.rc == 0 else st.e[-200:]}")


@scenario("docker checkpoint create --leave-running", expect="ck=0 status=running")
def _(c: Ctx):
    n = c.running(f"sh -c '{COUNTER}'")
    time.sleep(1)
    ck = c.docker("checkpoint", "create", "--leave-running", n, "cp1", timeout=120)
    return f"ck={ck.rc} status={c.inspect(n, '{{.State.Status}}')}"


@scenario("podman container checkpoint + restore", group="podman",
          expect="ck=0 status=exited restore=0 status=running goes-on=yes")
def _(c: Ctx):
    n = c.name()
    c.cleanups.append(lambda: c.podman("rm", "-f", "-t", "0", n))
    r = c.podman("run", "-d", "--network", "none", *PODMAN_RUN, "--name", n, PODMAN_IMG,
                 "sh", "-c", COUNTER)
    if r.rc:
        raise Fail(f"podman run -d: rc={r.rc} {r.e}")
    read = lambda: c.podman("exec", n, "cat", "/tmp/n")  # noqa: E731
    if not wait_for(lambda: _count(read) >= 10, timeout=15):
        raise Fail(f"the counter did not start: {read().e}")
    before = _count(read)
    ck = c.podman("container", "checkpoint", n, timeout=120)
    stopped = c.podman("inspect", "-f", "{{.State.Status}}", n).o
    rs = c.podman("container", "restore", n, timeout=120)
    running = c.podman("inspect", "-f", "{{.State.Status}}", n).o
    return (f"ck={ck.rc} status={stopped} restore={rs.rc} status={running} "
            f"goes-on={_goes_on(read, before) if rs.rc == 0 else rs.e[-200:]}")
