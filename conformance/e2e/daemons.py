"""Install, start and stop containerd and dockerd by hand (no systemd), each with private state.

Everything lives under one run directory (default /var/tmp/pyruntime-e2e/run): containerd's
root/state and socket, dockerd's data-root, exec-root, socket and key, podman's storage, logs.
The daemons are started from a separate subreaper process (PID 1 here does not reap orphans, and
the shims daemonize), with stdin on /dev/null and every stray fd closed. stop() removes every
container, stops the daemons, unmounts what they left under the run directory and deletes the
bridge it made; nothing else on the machine is touched.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
PACKAGES = ["docker.io", "containerd", "podman", "busybox-static", "runc", "uidmap"]
BRIDGE = "pye2e0"
BRIDGE_CIDR = "10.213.77.1/24"
# What the daemons and tools create outside their configured roots (hard-coded paths): the
# trees are removed at the end when they were not there before the first run (then they are all
# ours: shim sockets, ctr's fifos, podman's network dir); the shared runtime roots and the
# cgroup parents of Docker (/docker), ctr (/<namespace>) and podman (/libpod_parent) only when
# they are also empty.
SIDE_TREES = ["/run/containerd", "/run/docker", "/run/containers"]
PY313_RUNTIME, PY313_LAUNCHER = "pyruntime-3.13", "/usr/local/bin/pyruntime-3.13"  # tests/pythons.py
SIDE_DIRS = ["/run/pyruntime", "/run/runc"]
CGROUP_PARENTS = ["docker", "e2e", "libpod_parent"]


DOCKER = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else (
    shutil.which("docker") or "docker")  # Debian's CLI, not some other docker on PATH


class Unavailable(Exception):
    """The daemons cannot run on this machine (a true reason, shown as the skip reason)."""


# The harness is a child subreaper too (podman's conmon daemonizes, and PID 1 here does not
# reap): orphans that land on it are reaped by reap_orphans(), which must never take a child a
# subprocess call is waiting for, so every command goes through sh(), which registers its pid.
_spawn_lock = threading.Lock()
_ours: set[int] = set()


def become_subreaper() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def sh(cmd, *, input=None, timeout=None, env=None, stdin=None) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True), safe beside reap_orphans()."""
    if stdin is None:
        stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
    with _spawn_lock:
        p = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, errors="replace", env=env)
        _ours.add(p.pid)
    try:
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise subprocess.TimeoutExpired(cmd, timeout, out, err) from None
    finally:
        with _spawn_lock:
            _ours.discard(p.pid)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def reap_orphans() -> None:
    with _spawn_lock:
        mine = _ours | {p.pid for p in _children}
        for pid in _children_of(os.getpid(), zombies=True):
            if pid not in mine:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass


def start_orphan_reaper() -> None:
    become_subreaper()

    def loop():
        while True:
            time.sleep(0.5)
            reap_orphans()
    threading.Thread(target=loop, daemon=True, name="reap-orphans").start()


def install(log=print) -> None:
    missing = []
    for p in PACKAGES:
        r = sh(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", p])
        if not r.stdout.startswith("ii"):
            missing.append(p)
    if not missing:
        return
    log(f"e2e: installing {' '.join(missing)} (apt)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock = ["-o", "DPkg::Lock::Timeout=900"]
    r = sh(["apt-get", *lock, "update", "-qq"], env=env)
    if r.returncode:
        raise Unavailable(f"apt-get update failed: {r.stderr.strip()[-300:]}")
    r = sh(["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)
    if r.returncode:
        raise Unavailable(f"apt-get install {' '.join(missing)} failed: {r.stderr.strip()[-300:]}")


# Debian 12's docker.io (20.10.24) lacks libnetwork's fix for a lock-order deadlock between two
# containers' network teardowns (moby/libnetwork#2649; fixed by moby/moby#42545, backported to
# 20.10 by moby/libnetwork#2679): the watch loop holds the controller and waits for a network,
# a sandbox's leave holds that network and waits for the controller, and every later `docker
# run` hangs behind them, whichever runtime it asks for. Two runtimes' containers exiting at
# the same instant are enough.
LIBNETWORK_DEADLOCK = ("libnetwork.(*controller).processEndpointDelete",
                       "libnetwork.(*network).getSvcRecords")


def libnetwork_deadlocked(dump: str) -> bool:
    """Whether a dockerd goroutine dump shows both sides of that deadlock, each blocked on a
    lock for minutes."""
    stuck = [b for b in dump.split("\n\n")
             if re.match(r"goroutine \d+ \[semacquire, \d+ minutes\]", b)]
    return all(any(sign in b for b in stuck) for sign in LIBNETWORK_DEADLOCK)


class Daemons:
    def __init__(self, base: str, pyruntime: str, extra_runtimes: dict | None = None):
        self.base = base
        self.extra_runtimes = extra_runtimes or {}
        self.dir = os.path.join(base, "run")
        self.logs = os.path.join(base, "logs")
        self.pyruntime = pyruntime
        self.containerd_sock = os.path.join(self.dir, "containerd.sock")
        self.docker_sock = os.path.join(self.dir, "docker.sock")
        self.reaper_pid = 0
        self.made_bridge = False
        self.podman_base = ["podman", "--root", f"{self.dir}/podman/root",
                            "--runroot", f"{self.dir}/podman/runroot",
                            "--tmpdir", f"{self.dir}/podman/tmp", "--cgroup-manager", "cgroupfs",
                            "--events-backend", "file", "--storage-driver", "overlay"]
        self.podman_env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.docker_sock}",
                        DOCKER_CONFIG=os.path.join(self.dir, "docker-cli"), DOCKER_BUILDKIT="0")
        self.env.pop("DOCKER_CONTEXT", None)

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        self.cleanup_stale()
        self._record_absent()
        for d in ("containerd/root", "containerd/state", "docker/data", "docker/exec",
                  "docker-cli", "podman/root", "podman/runroot", "podman/tmp", "podman/conf"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        os.makedirs(self.logs, exist_ok=True)
        self._bridge_up()
        cd_conf = os.path.join(self.dir, "containerd/config.toml")
        with open(cd_conf, "w") as f:
            f.write(f'''version = 2
root = "{self.dir}/containerd/root"
state = "{self.dir}/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.containerd_sock}"
[ttrpc]
  address = "{self.containerd_sock}.ttrpc"
# collect garbage after every deletion: docker's checkpoint upload fails on a blob that
# `checkpoint create` left for a collection still to come (checkpoint_scenarios.py)
[plugins."io.containerd.gc.v1.scheduler"]
  deletion_threshold = 1
''')
        # The second way to register a runtime: daemon.json "runtimes" (the first is the flag).
        dk_conf = os.path.join(self.dir, "docker/daemon.json")
        with open(dk_conf, "w") as f:
            json.dump({
                "data-root": f"{self.dir}/docker/data", "exec-root": f"{self.dir}/docker/exec",
                "hosts": [f"unix://{self.docker_sock}"], "pidfile": f"{self.dir}/docker/docker.pid",
                "containerd": self.containerd_sock, "storage-driver": "overlay2",
                "iptables": False, "ip-forward": False, "ip-masq": False, "bridge": BRIDGE,
                "userland-proxy": True, "userland-proxy-path": shutil.which("docker-proxy") or
                "/usr/sbin/docker-proxy",
                "runtimes": {"pyruntime-cfg": {"path": self.pyruntime},
                             # the same runtime through another supported Python's launcher
                             PY313_RUNTIME: {"path": PY313_LAUNCHER},
                             **{n: {"path": p} for n, p in self.extra_runtimes.items()}},
                "deprecated-key-path": f"{self.dir}/docker/key.json",  # not /etc/docker
                "experimental": True,  # docker checkpoint
            }, f, indent=1)
        cmds = [
            (["containerd", "--config", cd_conf], "containerd", self.containerd_sock),
            (["dockerd", "--config-file", dk_conf, "--add-runtime",
              f"pyruntime={self.pyruntime}"], "dockerd", self.docker_sock),
        ]
        self.reaper_pid = _spawn_reaper(self.dir, self.logs, cmds)
        with open(os.path.join(self.dir, "reaper.pid"), "w") as f:
            f.write(str(self.reaper_pid))
        for _, name, sock in cmds:
            self._wait_socket(name, sock)
        deadline = time.monotonic() + 30
        while True:
            r = sh([DOCKER, "version", "--format", "{{.Server.Version}}"], env=self.env)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise Unavailable(f"dockerd does not answer: {r.stderr.strip()} "
                                  f"(see {self.logs}/dockerd.log)")
            time.sleep(0.2)

    def docker_deadlocked(self) -> str | None:
        """If dockerd is stuck in libnetwork's deadlock (above), say so; else None. Asks
        dockerd for its goroutine dump (SIGUSR1), which it writes to a file its log names."""
        log = os.path.join(self.logs, "dockerd.log")
        try:
            with open(os.path.join(self.dir, "docker/docker.pid")) as f:
                pid = int(f.read())
            start = os.path.getsize(log)
            os.kill(pid, signal.SIGUSR1)
        except (OSError, ValueError):
            return None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(log, errors="replace") as f:
                f.seek(start)
                m = re.search(r"goroutine stacks written to ([^\s\"]+)", f.read())
            if m:
                with open(m.group(1), errors="replace") as f:
                    if libnetwork_deadlocked(f.read()):
                        return (f"dockerd deadlocked in libnetwork (moby/libnetwork#2649, not "
                                f"fixed in this docker.io): {m.group(1)}")
                return None
            time.sleep(0.2)
        return None

    def _wait_socket(self, name: str, path: str, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(path)
                s.close()
                return
            except OSError:
                pass
            if not _alive(self.reaper_pid) or _exited(os.path.join(self.dir, f"{name}.exited")):
                break
            time.sleep(0.1)
        tail = _tail(os.path.join(self.logs, f"{name}.log"))
        raise Unavailable(f"{name} did not start (socket {path}): {tail}")

    def _bridge_up(self) -> None:
        if os.path.exists(f"/sys/class/net/{BRIDGE}"):
            self.made_bridge = True  # ours from an earlier run
            return
        for cmd in (["ip", "link", "add", BRIDGE, "type", "bridge"],
                    ["ip", "addr", "add", BRIDGE_CIDR, "dev", BRIDGE],
                    ["ip", "link", "set", BRIDGE, "up"]):
            r = sh(cmd)
            if r.returncode:
                raise Unavailable(f"{' '.join(cmd)}: {r.stderr.strip()}")
            self.made_bridge = True

    # What the daemons create outside our directory: note what is absent now (once: a stale
    # run's record is kept), so that stop() removes exactly that.
    def _absent_file(self) -> str:
        return os.path.join(self.base, "absent-before.json")

    def _record_absent(self) -> None:
        if os.path.exists(self._absent_file()):
            return
        absent = [d for d in SIDE_TREES + SIDE_DIRS if not os.path.exists(d)]
        for mnt in sorted(os.listdir("/sys/fs/cgroup")):
            for parent in CGROUP_PARENTS:
                d = f"/sys/fs/cgroup/{mnt}/{parent}"
                if os.path.isdir(f"/sys/fs/cgroup/{mnt}") and not os.path.exists(d):
                    absent.append(d)
        with open(self._absent_file(), "w") as f:
            json.dump(absent, f)

    def _remove_absent(self) -> None:
        try:
            with open(self._absent_file()) as f:
                absent = json.load(f)
        except (OSError, ValueError):
            return
        for d in absent:
            if d in SIDE_TREES:
                shutil.rmtree(d, ignore_errors=True)
            elif d.startswith("/sys/fs/cgroup/") and \
                    not os.path.ismount("/".join(d.split("/")[:5])):
                # a controller this host does not mount is a plain dir of the tmpfs, where
                # conmon still makes its dirs and writes a `tasks` file: rmdir alone leaves it
                shutil.rmtree(d, ignore_errors=True)
            elif d.startswith("/sys/fs/cgroup/"):
                for sub, _, _ in sorted(os.walk(d), key=lambda w: -len(w[0])):
                    try:
                        os.rmdir(sub)
                    except OSError:
                        pass
            else:
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        os.unlink(self._absent_file())

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        if os.path.exists(self.docker_sock):
            r = sh([DOCKER, "ps", "-aq"], env=self.env, timeout=30)
            ids = r.stdout.split()
            if ids:
                sh([DOCKER, "rm", "-f", *ids], env=self.env, timeout=120)
        if os.path.exists(self.containerd_sock):
            ctr = ["ctr", "-a", self.containerd_sock, "-n", "e2e"]
            for t in sh([*ctr, "tasks", "ls", "-q"], timeout=30).stdout.split():
                sh([*ctr, "tasks", "kill", "-a", "-s", "SIGKILL", t], timeout=30)
                sh([*ctr, "tasks", "delete", "-f", t], timeout=30)
            for c in sh([*ctr, "containers", "ls", "-q"], timeout=30).stdout.split():
                sh([*ctr, "containers", "delete", c], timeout=30)
        if os.path.isdir(os.path.join(self.dir, "podman/root")) and shutil.which("podman"):
            try:
                sh([*self.podman_base, "rm", "-af", "-t", "0"], env=self.podman_env, timeout=120)
            except subprocess.TimeoutExpired:
                pass
        self._stop_reaper()
        self._unmount_all()
        if self.made_bridge:
            sh(["ip", "link", "del", BRIDGE])
        shutil.rmtree(self.dir, ignore_errors=True)
        self._remove_absent()
        reap_orphans()

    def _stop_reaper(self) -> None:
        pid = self.reaper_pid
        if not pid or not _alive(pid):
            return
        os.kill(pid, signal.SIGTERM)  # the reaper stops dockerd, then containerd, then strays
        deadline = time.monotonic() + 60
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        for p in [p for p in _children if p.pid == pid]:
            p.wait()
            _children.remove(p)

    def _unmount_all(self) -> None:
        for _ in range(3):
            points = []
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    mp = line.split()[4].replace("\\040", " ")
                    if mp == self.dir or mp.startswith(self.dir + "/"):
                        points.append(mp)
            if not points:
                return
            for mp in sorted(points, key=len, reverse=True):
                sh(["umount", "-l", mp])

    def cleanup_stale(self) -> None:
        """An earlier run that was killed: stop what it left, keep nothing."""
        try:
            with open(os.path.join(self.dir, "reaper.pid")) as f:
                pid = int(f.read())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if REAPER_MARK.encode() in f.read():
                    self.reaper_pid = pid
        except (OSError, ValueError):
            pass
        if os.path.exists(self.dir) or self.reaper_pid:
            self.made_bridge = os.path.exists(f"/sys/class/net/{BRIDGE}")
            self.stop()
            self.reaper_pid = 0


# ---------------------------------------------------------------------- the reaper

REAPER_MARK = "pyruntime-e2e-reaper"


def _spawn_reaper(rundir: str, logs: str, cmds) -> int:
    """Start a subreaper process (this file, exec'd) that starts the daemons and reaps whatever
    gets reparented to it (the shims daemonize). Returns once the daemons are spawned."""
    spec = json.dumps({"rundir": rundir, "logs": logs, "cmds": [[c, n] for c, n, _ in cmds]})
    with open(os.path.join(logs, "reaper.log"), "ab") as log, _spawn_lock:
        p = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), REAPER_MARK, spec],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                             close_fds=True, start_new_session=True)
        _children.append(p)  # keep the Popen so that it is waited for (no zombie)
    line = p.stdout.readline()
    p.stdout.close()
    if line.strip() != b"ready":
        p.wait()
        raise Unavailable(f"the reaper failed: {_tail(os.path.join(logs, 'reaper.log'))}")
    return p.pid


_children: list = []


def reaper_main(spec: dict) -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0):
        print("prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
        sys.exit(1)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the harness stops us in order
    daemons = {}
    for cmd, name in spec["cmds"]:
        with open(os.path.join(spec["logs"], f"{name}.log"), "wb") as log:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 close_fds=True)
        daemons[p.pid] = name
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)

    def reap() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in daemons:
                open(os.path.join(spec["rundir"], f"{daemons.pop(pid)}.exited"), "w").close()

    while not stopping:
        reap()
        time.sleep(0.2)
    # dockerd first, then containerd, then whatever is left (shims of leftover tasks)
    for pid, name in sorted(daemons.items(), key=lambda kv: kv[1] != "dockerd"):
        _terminate(pid, reap, 30)
    for _ in range(3):
        strays = _children_of(os.getpid())
        if not strays:
            break
        for pid in strays:
            _terminate(pid, reap, 10)
    reap()


def _terminate(pid: int, reap, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        reap()
        time.sleep(0.05)
    if _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.2)
        reap()


def _children_of(ppid: int, zombies: bool = False) -> list[int]:
    """Children of ppid: the living ones, or (zombies=True) the zombies."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == ppid and (fields[0] == "Z") == zombies:
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _exited(path: str) -> bool:
    return os.path.exists(path)


def _tail(path: str, n: int = 600) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:].strip()
    except OSError:
        return "(no log)"


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == REAPER_MARK:
    reaper_main(json.loads(sys.argv[2]))
