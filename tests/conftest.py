"""Shared fixtures: a busybox rootfs, bundles, a runtime runner and a leak check.

tests/unit/ needs neither root nor a rootfs. Every other test starts real containers: it is
marked `root` here and skipped, with that reason, when pytest does not run as root. As root,
every pytest worker makes itself a child subreaper so that container inits (which `create`
leaves behind as orphans) become its children and can be reaped; the leak check then fails a
test that leaves any of them.
"""
from __future__ import annotations

import copy
import ctypes
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

PR_SET_CHILD_SUBREAPER = 36
ROOTFS_CACHE = Path(os.environ.get("PYRUNTIME_TEST_ROOTFS", "/var/tmp/pyruntime-test-rootfs"))
CGROUP_ROOT = Path("/sys/fs/cgroup")


def runtime_binary() -> str:
    """The runtime under test: $PYRUNTIME_TEST_RUNTIME, else pyruntime's launcher.

    The variable takes a name on PATH (e.g. runc, to check a test) or a path, such as a launcher
    written for another interpreter (`python3 -m pyruntime.cli.launcher --python X /path/pyruntime-X`).
    """
    name = os.environ.get("PYRUNTIME_TEST_RUNTIME", "pyruntime")
    # pyruntime: the launcher tests/setup.sh installs (what Docker is given), not a
    # version-manager shim on PATH (pyenv's costs half a second a call).
    if "/" in name:
        path = name
    else:
        path = "/usr/local/bin/pyruntime" if name == "pyruntime" else shutil.which(name)
    if not os.access(path or "", os.X_OK):
        path = None
    if not path:
        pytest.exit(f"runtime {name!r} not found on PATH: run tests/setup.sh first", returncode=2)
    return path


def is_pyruntime() -> bool:
    return os.path.basename(runtime_binary()).startswith("pyruntime")


# ---------------------------------------------------------------- process hygiene

UNIT_DIR = Path(__file__).parent / "unit"
IS_ROOT = os.geteuid() == 0


def pytest_configure(config):
    config.addinivalue_line("markers", "root: starts real containers (every test outside tests/unit/)")
    if not IS_ROOT:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.exit("prctl(PR_SET_CHILD_SUBREAPER) failed", returncode=2)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        config._cgroup2_root_before = _cgroup2_root_controllers()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="starts real containers: needs root (tests/unit/ does not)")
    for item in items:
        if UNIT_DIR in Path(item.fspath).parents:
            continue
        item.add_marker(pytest.mark.root)
        if not IS_ROOT:
            item.add_marker(skip)


# ---------------------------------------------------------------- host hygiene, per session

# tests' cgroupsPath parents, shared by many tests: removed at the end of a session
TEST_CGROUP_PARENTS = ("pyrt-test", "pyrt-ckpt", "pyrt-hyg-*")


def _cgroup2_root_controllers() -> str | None:
    """What the cgroup2 root delegates: containers come and go in parallel, so only the whole
    session can check that the host's cgroup2 root is left as it was found."""
    for root in (CGROUP_ROOT / "unified", CGROUP_ROOT):
        try:
            return (root / "cgroup.subtree_control").read_text()
        except OSError:
            continue
    return None


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("PYTEST_XDIST_WORKER") or not IS_ROOT:
        return  # the controller checks, once every worker is done; without root, nothing ran
    parents = [p for pattern in TEST_CGROUP_PARENTS for p in CGROUP_ROOT.glob(f"*/{pattern}")]
    for parent in parents:
        try:
            # another session on this host (tests run in parallel worktrees) may be removing
            # its own containers' dirs in there right now
            found = sorted(parent.rglob("*"), reverse=True)
        except OSError:
            found = []
        for d in found:
            if d.is_dir():
                try:
                    d.rmdir()
                except OSError:
                    pass
        try:
            parent.rmdir()
        except OSError:
            pass
    before = getattr(session.config, "_cgroup2_root_before", None)
    # Users recorded by a delete that was killed on purpose (the kill -9 sweeps), or whose
    # cgroup a harness removed (the e2e daemons' leftovers), hold controllers until the next
    # release; release("") stands for that next one. A live leftover still fails the check.
    from pyruntime.cgroups import delegation
    delegation.release("")
    after = _cgroup2_root_controllers()
    if before != after:
        session.config.get_terminal_writer().line(
            f"host hygiene: the cgroup2 root's subtree_control was {before!r} before the "
            f"tests and is {after!r} after them", red=True)
        session.exitstatus = 1


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def children_after_reaping(timeout: float = 5) -> list[int]:
    """Our children still alive after `timeout` seconds of reaping (an init on its way out
    takes a moment to become a zombie we can reap)."""
    deadline = time.monotonic() + timeout
    while True:
        reap_zombies()
        kids = [k for k in children_of(os.getpid()) if k not in SERVER_PIDS]
        if not kids or time.monotonic() > deadline:
            return kids
        time.sleep(0.02)


def kill_cgroup(m) -> None:
    """SIGKILL whatever is left in a cgroup manager's cgroup and reap our children."""
    for _ in range(100):
        try:
            pids = m.pids()
        except OSError:
            pids = []
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reap_zombies()
        time.sleep(0.01)


def reap_zombies() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# ---------------------------------------------------------------- rootfs

def build_busybox_rootfs(dest: Path) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "home"):
        (tmp / d).mkdir(parents=True)
    os.chmod(tmp, 0o755)
    os.chmod(tmp / "tmp", 0o1777)
    shutil.copy2(busybox, tmp / "bin" / "busybox")
    for applet in out.split():
        if applet != "busybox":
            os.symlink("busybox", tmp / "bin" / applet)
    (tmp / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (tmp / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    os.rename(tmp, dest)


@pytest.fixture(scope="session")
def rootfs_template() -> Path:
    """A busybox rootfs built once per machine from Debian's busybox-static (shared by workers)."""
    ROOTFS_CACHE.parent.mkdir(parents=True, exist_ok=True)
    with open(str(ROOTFS_CACHE) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (ROOTFS_CACHE / "bin" / "busybox").exists():
            shutil.rmtree(ROOTFS_CACHE, ignore_errors=True)
            build_busybox_rootfs(ROOTFS_CACHE)
    return ROOTFS_CACHE


# ---------------------------------------------------------------- config

BASE_CONFIG = {
    "ociVersion": "1.3.0",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["/bin/true"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {k: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
                         for k in ("bounding", "effective", "permitted")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": False},
    "hostname": "pyruntime",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}


def default_config(args: list[str] | None = None, **process) -> dict:
    cfg = copy.deepcopy(BASE_CONFIG)
    if args is not None:
        cfg["process"]["args"] = list(args)
    cfg["process"].update(process)
    return cfg


class Bundle:
    """A bundle dir holding a private copy of the busybox rootfs and a config.json."""

    def __init__(self, path: Path, template: Path):
        self.path = path
        self.rootfs = path / "rootfs"
        shutil.copytree(template, self.rootfs, symlinks=True)
        self.config = default_config()

    def write(self, config: dict | None = None) -> "Bundle":
        if config is not None:
            self.config = config
        (self.path / "config.json").write_text(json.dumps(self.config, indent=1))
        return self

    def read_output(self, name: str) -> str:
        return (self.rootfs / name).read_text()


@pytest.fixture
def bundle(tmp_path, rootfs_template) -> Bundle:
    b = Bundle(tmp_path / "bundle", rootfs_template)
    return b.write()


# ---------------------------------------------------------------- the runtime

class Runtime:
    """Runs the runtime CLI with a private --root; remembers ids so teardown can force-delete."""

    def __init__(self, root: Path):
        self.binary = runtime_binary()
        self.root = root
        self.ids: list[str] = []

    def new_id(self, prefix: str = "t") -> str:
        cid = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.ids.append(cid)
        return cid

    def state_dirs(self) -> list[str]:
        """What is in --root but the seccomp cache and a warm server's socket dir."""
        if not self.root.exists():
            return []
        return [p.name for p in self.root.iterdir() if p.name not in (".cache", "@server")]

    def cmd(self, *args, global_args=()) -> list[str]:
        return [self.binary, "--root", str(self.root), *global_args, *map(str, args)]

    def __call__(self, *args, check=True, input=None, timeout=60, global_args=(), **kw):
        """Run a subcommand to completion and return the CompletedProcess (text mode)."""
        kw.setdefault("capture_output", True)
        proc = subprocess.run(self.cmd(*args, global_args=global_args), input=input, text=True,
                              timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args[0]} failed rc={proc.returncode}\nstdout: {proc.stdout}\n"
                                 f"stderr: {proc.stderr}")
        return proc

    def state(self, cid: str) -> dict:
        return json.loads(self("state", cid).stdout)

    def run(self, bundle: Bundle, cid: str | None = None, *extra, **kw):
        """`run` a container in the foreground and return the CompletedProcess."""
        cid = cid or self.new_id()
        return self("run", "--bundle", bundle.path, *extra, cid, **kw)

    def create(self, bundle: Bundle, cid: str | None = None, *extra, **kw) -> str:
        cid = cid or self.new_id()
        kw.setdefault("stdin", subprocess.DEVNULL)
        # The init inherits our stdio: never let it hold a pipe we would wait on.
        kw.setdefault("capture_output", False)
        if not kw["capture_output"]:
            kw.setdefault("stdout", subprocess.DEVNULL)
            if "stderr" not in kw:
                # A pipe would be held open by the init (it inherits stderr) and `create` would
                # never see EOF: collect stderr in a file instead.
                import tempfile
                with tempfile.TemporaryFile("w+") as errf:
                    check = kw.pop("check", True)
                    proc = self("create", "--bundle", bundle.path, *extra, cid, check=False,
                                stderr=errf, **kw)
                    errf.seek(0)
                    err = errf.read()
                if check and proc.returncode != 0:
                    raise AssertionError(f"create failed rc={proc.returncode}\nstderr: {err}")
                return cid
        self("create", "--bundle", bundle.path, *extra, cid, **kw)
        return cid

    def wait_stopped(self, cid: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            reap_zombies()
            st = self.state(cid)
            if st["status"] == "stopped" or time.monotonic() > deadline:
                return st
            time.sleep(0.02)

    def cleanup(self) -> None:
        for cid in self.ids:
            subprocess.run(self.cmd("delete", "--force", cid), capture_output=True, timeout=30)


# PYRUNTIME_TEST_SERVER=1: every test's --root gets a warm server (`pyruntime server`), so that
# create and run go through it wherever it serves them; each test's tally of what the server
# served and refused is appended to PYRUNTIME_TEST_SERVER_LOG, which the CI stage checks.
SERVER_MODE = os.environ.get("PYRUNTIME_TEST_SERVER") == "1"
SERVER_LOG = os.environ.get("PYRUNTIME_TEST_SERVER_LOG", "/tmp/pyruntime-test-server.log")


SERVER_PIDS: set[int] = set()  # not a container's: children_after_reaping leaves them out


class Server:
    """A `pyruntime server` for one --root, started and stopped around a test."""

    def __init__(self, rt: Runtime, out: Path):
        self.out = out
        self.sock = rt.root / "@server" / "sock"
        with open(out, "w") as f:
            self.proc = subprocess.Popen([rt.binary, "--root", str(rt.root), "--debug", "server"],
                                         stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        SERVER_PIDS.add(self.proc.pid)
        deadline = time.monotonic() + 15
        while "pyruntime server: serving" not in out.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"pyruntime server did not start:\n"
                                     f"{out.read_text(errors='replace')}")
            time.sleep(0.01)

    def stop(self, nodeid: str) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = "hung"
        SERVER_PIDS.discard(self.proc.pid)
        log = self.out.read_text(errors="replace")
        served = log.count(": served in ")
        refused = log.count(": refused: ")
        with open(SERVER_LOG, "a") as f:
            f.write(f"served={served} refused={refused} {nodeid}\n")
        assert code == 0, f"pyruntime server exited {code}:\n{log}"
        assert not self.sock.parent.exists(), f"the server left {self.sock.parent}"
        assert "internal error" not in log, log


@pytest.fixture
def runtime(request, tmp_path) -> Runtime:
    rt = Runtime(tmp_path / "state")
    server = Server(rt, tmp_path / "server.log") if SERVER_MODE else None
    yield rt
    rt.cleanup()
    if server is not None:
        server.stop(request.node.nodeid)


# ---------------------------------------------------------------- leak check

def _mounts_under(prefix: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


def _cgroups_named(fragment: str) -> list[str]:
    found = []
    for hier in CGROUP_ROOT.iterdir():
        if not hier.is_dir():
            continue
        for dirpath, dirnames, _ in os.walk(hier):
            for d in dirnames:
                if fragment in d:
                    found.append(os.path.join(dirpath, d))
    return found


@pytest.fixture(autouse=True)
def leak_check(request, tmp_path):
    """Fail the test if it leaves a mount, a child process, a cgroup or a state dir behind."""
    yield
    rt = request.node.funcargs.get("runtime")
    if isinstance(rt, Runtime):
        rt.cleanup()
    kids = children_after_reaping()
    problems = []
    if kids:
        problems.append(f"processes left running: {kids}")
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    mounts = _mounts_under(str(tmp_path))
    if mounts:
        problems.append(f"mounts left: {mounts}")
        for m in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
    if isinstance(rt, Runtime):
        left = rt.state_dirs()
        if left:
            problems.append(f"state dirs left in {rt.root}: {left}")
        for cid in rt.ids:
            cg = _cgroups_named(cid)
            if cg:
                problems.append(f"cgroups left: {cg}")
                for d in sorted(cg, key=len, reverse=True):
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass
    reap_zombies()
    if problems:
        pytest.fail("leak check: " + "; ".join(problems), pytrace=False)
