"""checkpoint/restore with CRIU: real containers are dumped and restored, and the restored
processes go on from where they were (a counter keeps counting)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import default_config, is_pyruntime, reap_zombies

COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done"


def working_criu() -> str | None:
    for c in ("/usr/local/sbin/criu", shutil.which("criu")):
        if c and os.access(c, os.X_OK) and subprocess.run(
                [c, "check"], capture_output=True).returncode == 0:
            return c
    return None


CRIU = working_criu()
pytestmark = pytest.mark.skipif(CRIU is None, reason="no CRIU that passes `criu check`: "
                                                     "run tests/criu-setup.sh")


class Stdio:
    """Pipes as a container's stdio: CRIU can dump a pipe, not a host file outside the
    container's mounts, and restore hands new pipes over in their place (inherit_fd)."""

    def __init__(self):
        self.ours, theirs = [], []
        for i in range(3):
            r, w = os.pipe()
            self.ours.append(w if i == 0 else r)
            theirs.append(r if i == 0 else w)
        self.theirs = theirs

    def kw(self) -> dict:
        return {"stdin": self.theirs[0], "stdout": self.theirs[1], "stderr": self.theirs[2]}

    def close_theirs(self):
        for fd in self.theirs:
            os.close(fd)
        self.theirs = []

    def close(self):
        for fd in self.ours + self.theirs:
            os.close(fd)
        self.ours = self.theirs = []

    def err(self) -> str:
        os.set_blocking(self.ours[2], False)
        try:
            return os.read(self.ours[2], 65536).decode(errors="replace")
        except BlockingIOError:
            return ""


@pytest.fixture
def stdio():
    made = []

    def new():
        made.append(Stdio())
        return made[-1]
    yield new
    for s in made:
        s.close()


def start_piped(runtime, bundle, stdio, cid=None) -> str:
    cid = cid or runtime.new_id()
    io = stdio()
    proc = subprocess.run(runtime.cmd("create", "--bundle", bundle.path, cid), **io.kw())
    io.close_theirs()
    assert proc.returncode == 0, io.err()
    runtime("start", cid)
    return cid


def restore_piped(runtime, bundle, stdio, cid, *flags, check=True):
    io = stdio()
    proc = subprocess.run(runtime.cmd("restore", "--detach", "--bundle", bundle.path, *flags, cid),
                          **io.kw())
    io.close_theirs()
    err = io.err()
    if check:
        assert proc.returncode == 0, err
    return proc, err


def count(bundle) -> int:
    for _ in range(50):
        text = (bundle.rootfs / "tmp" / "count").read_text().strip()
        if text:
            return int(text)
        time.sleep(0.02)  # caught between the shell's truncate and its write
    raise AssertionError("no count")


def counter_bundle(bundle, **linux):
    bundle.config["process"]["args"] = ["sh", "-c", COUNTER]
    bundle.config["linux"].update(linux)
    bundle.write()
    return bundle


def wait_count_above(bundle, n: int, timeout: float = 5) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = count(bundle)
        if c > n:
            return c
        time.sleep(0.05)
    raise AssertionError(f"the count stayed at {count(bundle)}, not above {n}")


def checkpoint(runtime, cid, image, *flags, check=True):
    return runtime("checkpoint", "--image-path", image, *flags, cid, check=check, timeout=120)


def test_the_init_leads_its_own_session(runtime, bundle):
    """As runc's init: CRIU refuses a tree whose session leader is outside the container."""
    bundle.config["process"]["args"] = ["sh", "-c", "cut -d' ' -f6 /proc/1/stat"]
    bundle.write()
    assert runtime.run(bundle).stdout.strip() == "1"


def test_counter_goes_on_after_checkpoint_and_restore(runtime, bundle, stdio, tmp_path):
    counter_bundle(bundle)
    cid = start_piped(runtime, bundle, stdio)
    before = wait_count_above(bundle, 5)
    old_pid = runtime.state(cid)["pid"]
    checkpoint(runtime, cid, tmp_path / "img")
    # The container is gone (runc's behaviour without --leave-running) and counts no more.
    assert runtime("state", cid, check=False).returncode != 0
    frozen = count(bundle)
    assert frozen >= before
    time.sleep(0.4)
    assert count(bundle) == frozen
    restore_piped(runtime, bundle, stdio, cid, "--image-path", tmp_path / "img",
                  "--pid-file", tmp_path / "pid")
    st = runtime.state(cid)
    assert st["status"] == "running"
    assert st["pid"] == int((tmp_path / "pid").read_text()) and st["pid"] != old_pid
    after = wait_count_above(bundle, frozen)
    # The same shell goes on counting: a fresh start would count from 1 again.
    assert frozen < after <= frozen + 20, (frozen, after)
    # every other command works on the restored container
    out = runtime("exec", cid, "sh", "-c", "cat /tmp/count; echo $$").stdout.split()
    assert int(out[0]) > frozen
    assert json.loads(runtime("ps", "--format", "json", cid).stdout)
    runtime("pause", cid)
    assert runtime.state(cid)["status"] == "paused"
    runtime("resume", cid)
    runtime("kill", cid, "KILL")
    assert runtime.wait_stopped(cid)["status"] == "stopped"
    runtime("delete", cid)


# ---------------------------------------------------------------- the RPC messages

def test_rpc_messages_encode_as_criu_reads_them():
    """Field numbers and wire types are rpc.proto's: a hand-checked encoding."""
    rpc = pytest.importorskip("pyruntime.criu.rpc", reason="the protobuf package is a "
                              "dependency of checkpoint/restore (pyproject)")
    req = rpc.Req(type=rpc.REQ_TYPE["DUMP"])
    req.opts.images_dir_fd = 5
    req.opts.ext_mnt.add(key="/a", val="/a")
    req.opts.manage_cgroups_mode = rpc.CG_MODE["SOFT"]
    # 1: type=1; 2: opts {1: 5; 23: {1: "/a", 2: "/a"}; 34: 3}
    assert req.SerializeToString() == (b"\x08\x01\x12\x10\x08\x05\xba\x01\x08\n\x02/a\x12\x02/a"
                                       b"\x90\x02\x03")
    resp = rpc.Resp()
    resp.ParseFromString(b"\x08\x06\x10\x01\x2a\x0d\x0a\x09post-dump\x10\x07")
    assert (resp.type, resp.success, resp.notify.script, resp.notify.pid) == (
        rpc.REQ_TYPE["NOTIFY"], True, "post-dump", 7)


def test_rpc_table_matches_criu_rpc_proto():
    """Every field declared here has rpc.proto's number, type and label (CRIU's source, where
    tests/criu-setup.sh built it)."""
    import re
    rpc = pytest.importorskip("pyruntime.criu.rpc")
    proto = os.path.join(os.environ.get("CRIU_BUILD", "/tmp/criu-build"), "src/images/rpc.proto")
    if not os.path.exists(proto):
        pytest.skip(f"{proto}: CRIU's source is not here (this CRIU was not built by "
                    "tests/criu-setup.sh)")
    text = open(proto).read()
    for name, fields in rpc.MESSAGES.items():
        body = re.search(r"message\s+%s\s*\{(.*?)\n\}" % name, text, re.S)
        assert body, name
        theirs = {m[2]: (m[0], m[1], int(m[3])) for m in re.findall(
            r"^\s*(required|optional|repeated)\s+(\w+)\s+(\w+)\s*=\s*(\d+)",
            body.group(1).replace("\t", " "), re.M)}
        for fname, number, ftype, *rest in fields:
            label = (rest[0] if rest else None) or "optional"
            assert theirs.get(fname) == (label, ftype, number), (name, fname)
