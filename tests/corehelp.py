"""Helpers for the core integration tests (test_cli, test_lifecycle, test_init, test_terminal,
test_hooks, test_errors). Plain functions and classes; the fixtures live in conftest.py.
"""
from __future__ import annotations

import array
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

CAPS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
}


def cap_mask(names) -> int:
    m = 0
    for n in names:
        m |= 1 << CAPS[n]
    return m


def assert_in_cgroup_everywhere(pid: int, rel: str, inside: str | None = None) -> None:
    """Process `pid` is in cgroup `rel` in every hierarchy of this host (v1 ones and cgroup2):
    its /proc/<pid>/cgroup names `rel` on each line, as does `inside` (the same file read in
    the container, without a cgroup namespace), and each hierarchy's cgroup.procs lists it."""
    from pyruntime.cgroups import detect
    layout = detect()
    seen = Path(f"/proc/{pid}/cgroup").read_text()
    host = Path("/proc/self/cgroup").read_text()
    assert len(seen.splitlines()) == len(host.splitlines()), (seen, host)
    if inside is not None:
        assert inside == seen, (inside, seen)
    for line in seen.splitlines():
        _, ctrls, path = line.split(":", 2)
        assert path == rel, line
        mnt, root = layout.unified if ctrls == "" else layout.v1[ctrls.split(",")[0]]
        procs = Path(mnt + rel[len(root.rstrip("/")):], "cgroup.procs").read_text().split()
        assert str(pid) in procs, (line, procs)


def set_sh(bundle, script: str, **process) -> None:
    """Make the container's process `sh -c script` and write config.json."""
    bundle.config["process"]["args"] = ["sh", "-c", script]
    bundle.config["process"].update(process)
    bundle.write()


def run_sh(runtime, bundle, script: str, *extra, **process) -> str:
    """Run `sh -c script` in the bundle in the foreground; return its stdout (asserts rc 0)."""
    set_sh(bundle, script, **process)
    return runtime.run(bundle, None, *extra).stdout


def assert_failed(proc, *needles: str) -> None:
    """A CLI call failed cleanly: non-zero exit, no traceback, and one of needles in stderr."""
    text = (proc.stderr or "") + (proc.stdout or "")
    assert proc.returncode != 0, f"expected failure, got rc=0\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert "Traceback" not in text, text
    if needles:
        assert any(n in text for n in needles), f"none of {needles!r} in output:\n{text}"


def assert_no_traceback(proc) -> None:
    text = (proc.stderr or "") + (proc.stdout or "")
    assert "Traceback" not in text, text


def wait_for(pred, timeout: float = 5.0, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {pred}")
        time.sleep(interval)


def wait_file(path: Path, timeout: float = 5.0) -> str:
    """Wait until `path` exists and is non-empty; return its text."""
    path = Path(path)

    def ready():
        try:
            return path.read_text() or None
        except FileNotFoundError:
            return None
    return wait_for(ready, timeout)


def proc_status(pid: int | str) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def parse_status(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def ppid_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def ns_link(kind: str, pid: int | str = "self") -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def parse_rfc3339(s: str) -> datetime:
    """Parse an RFC 3339 timestamp (Go style: nanoseconds and 'Z' or an offset)."""
    import re
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", s)
    assert m, f"not RFC 3339: {s!r}"
    frac = (m.group(2) or ".0")[:7]
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(m.group(1) + frac + tz)


def mountinfo(text: str) -> list[dict]:
    """Parse /proc/<pid>/mountinfo text into dicts: target, root, opts, optional, fstype, source, super."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        pre, _, post = line.partition(" - ")
        f = pre.split()
        p = post.split()
        out.append({"id": f[0], "parent": f[1], "root": f[3], "target": f[4],
                    "opts": f[5].split(","), "optional": f[6:], "fstype": p[0],
                    "source": p[1] if len(p) > 1 else "", "super": p[2].split(",") if len(p) > 2 else []})
    return out


def mount_at(infos: list[dict], target: str) -> dict:
    """The topmost mount at target (the last one in mountinfo order)."""
    found = [m for m in infos if m["target"] == target]
    assert found, f"no mount at {target}: {[m['target'] for m in infos]}"
    return found[-1]


# ---------------------------------------------------------------- namespace holders

class NsHolder:
    """A helper process sitting in fresh namespaces (made with unshare), for joining by path."""

    def __init__(self, *unshare_flags: str, setup: str = ""):
        script = (setup + "; " if setup else "") + "echo ready; exec sleep 60"
        self.proc = subprocess.Popen(["unshare", *unshare_flags, "sh", "-c", script],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"unshare helper failed: {line!r}"
        self.pid = self.proc.pid

    def path(self, kind: str) -> str:
        return f"/proc/{self.pid}/ns/{kind}"

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# ---------------------------------------------------------------- console socket

class ConsoleSocket:
    """A unix stream socket server for --console-socket; receives the pty master.

    Records every message: `payload` (the name), `fds` (all SCM_RIGHTS fds received, so a test can
    check exactly one came). `master` is the first fd (owned here; closed by close()).
    """

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pyrt-cs-")
        self.path = os.path.join(self.dir, "console.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(4)
        self.payload: bytes | None = None
        self.fds: list[int] = []
        self.messages = 0
        self.extra_bytes = b""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            self.sock.settimeout(30)
            conn, _ = self.sock.accept()
        except OSError:
            self.done.set()
            return
        with conn:
            conn.settimeout(30)
            fds = array.array("i")
            try:
                msg, ancdata, flags, _ = conn.recvmsg(4096, socket.CMSG_SPACE(16 * fds.itemsize))
            except OSError:
                self.done.set()
                return
            self.messages += 1
            self.payload = msg
            for level, typ, data in ancdata:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(data[: len(data) - (len(data) % a.itemsize)])
                    self.fds.extend(a)
            # anything more on this connection would be a protocol violation
            try:
                conn.settimeout(0.2)
                rest = conn.recv(4096)
                self.extra_bytes = rest
            except OSError:
                pass
        self.done.set()

    @property
    def master(self) -> int:
        assert self.done.wait(10), "no connection on the console socket"
        assert self.fds, f"no fd received (payload {self.payload!r})"
        return self.fds[0]

    def read_until_eof(self, timeout: float = 10.0) -> bytes:
        import select
        fd = self.master
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the last slave fd closed
                break
            if not chunk:
                break
            buf += chunk
        return buf

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a pending accept()
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.done.wait(1)
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
        try:
            os.unlink(self.path)
        except OSError:
            pass
        try:
            os.rmdir(self.dir)
        except OSError:
            pass


def on_a_terminal(cmd, typed_ahead: bytes = b"", during=None, timeout: float = 30,
                  size: tuple[int, int] | None = None):
    """Run cmd as a session leader whose controlling terminal (and stdio) is a fresh pty, as
    from a shell (of `size` rows and columns); write typed_ahead before it starts and call
    during(master) while it runs. Returns its exit status and all it wrote to the terminal."""
    import fcntl
    import termios
    master, peer = os.openpty()
    try:
        if size:
            set_winsize(master, *size)
        os.write(master, typed_ahead)
        proc = subprocess.Popen(cmd, stdin=peer, stdout=peer, stderr=peer, start_new_session=True,
                                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(peer)
        peer = -1
        try:
            if during:
                during(master)
            status = proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the command, the last holder of the peer, is gone
                break
            if not chunk:
                break
            out += chunk
        return status, out
    finally:
        os.close(master)
        if peer >= 0:
            os.close(peer)


def set_winsize(fd: int, rows: int, cols: int) -> None:
    """Resize a terminal (on a pty's master: the kernel sends SIGWINCH to its foreground group)."""
    import fcntl
    import struct
    import termios
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def host_script(path: Path, body: str) -> Path:
    """Write an executable /bin/sh script."""
    path = Path(path)
    path.write_text("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return path


def kill_quiet(pid: int, sig=signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------- containers with a test cgroup

CGROUP_VIEW = {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["ro", "nosuid", "noexec", "nodev"]}


def prepare_in_cgroup(runtime, bundle, script: str, resources: dict | None = None,
                      cgroup_view: bool = False) -> str:
    """A new id whose config puts `sh -c script` at cgroupsPath /pyrt-test/<id> (the leak check
    looks there), with extra linux.resources and, if asked, a view of its cgroups inside."""
    cid = runtime.new_id()
    bundle.config["linux"]["cgroupsPath"] = f"/pyrt-test/{cid}"
    if resources:
        bundle.config["linux"]["resources"].update(resources)
    if cgroup_view:
        bundle.config["mounts"].append(dict(CGROUP_VIEW))
    set_sh(bundle, script)
    return cid


def start_in_cgroup(runtime, bundle, script: str, **kw) -> str:
    cid = prepare_in_cgroup(runtime, bundle, script, **kw)
    runtime.create(bundle, cid)
    runtime("start", cid)
    return cid


def stop_and_delete(runtime, cid: str) -> None:
    runtime("kill", "--all", cid, "KILL", check=False)
    runtime.wait_stopped(cid)
    runtime("delete", "--force", cid)


def proc_state(pid: int) -> str:
    """The one-letter state of /proc/<pid>/status (R, S, D, T, Z...)."""
    return proc_status(pid)["State"].split()[0]
