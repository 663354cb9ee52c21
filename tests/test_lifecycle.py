"""create / start / state / kill / delete / run: the container's life, seen from outside and inside."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import is_pyruntime
from corehelp import (alive, assert_failed, assert_in_cgroup_everywhere, parse_rfc3339, ppid_of,
                      proc_status, set_sh, wait_file, wait_for)


def cgroup_config(bundle, cid):
    bundle.config["linux"]["cgroupsPath"] = f"/pyrt-test/{cid}"


def create_sleeper(runtime, bundle, script="sleep 30", *extra):
    cid = runtime.new_id()
    cgroup_config(bundle, cid)
    set_sh(bundle, script)
    runtime.create(bundle, cid, *extra)
    return cid


def reap(pid: int, timeout: float = 5.0):
    """Wait for our child `pid` (the init is a child of this subreaper) and return its status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if got == pid:
            return status
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not exit")


# ================================================================ create

def test_create_leaves_a_created_container(runtime, bundle, tmp_path):
    pidfile = tmp_path / "init.pid"
    cid = runtime.new_id()
    cgroup_config(bundle, cid)
    set_sh(bundle, "cat /proc/self/cgroup > /cgroup; echo started > /started")
    runtime.create(bundle, cid, "--pid-file", pidfile)

    raw = pidfile.read_text()
    assert raw.isdigit(), repr(raw)            # decimal, no trailing newline
    pid = int(raw)
    st = runtime.state(cid)
    assert st["status"] == "created"
    assert st["pid"] == pid
    assert st["id"] == cid
    # the init is a direct child of the caller (a subreaper); our own processes have exited
    assert ppid_of(pid) == os.getpid()
    # it is already in its cgroup, in every hierarchy
    assert_in_cgroup_everywhere(pid, f"/pyrt-test/{cid}")
    seen = Path(f"/proc/{pid}/cgroup").read_text()
    # it holds <root>/<id>/exec.fifo open, waiting for start
    fifo = runtime.root / cid / "exec.fifo"
    assert fifo.exists()
    fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert str(fifo) in fds, fds
    # the user process has not run
    time.sleep(0.1)
    assert not (bundle.rootfs / "started").exists()

    runtime("start", cid)
    assert wait_file(bundle.rootfs / "started") == "started\n"
    assert not fifo.exists()
    assert (bundle.rootfs / "cgroup").read_text() == seen  # and sees itself there
    st = runtime.wait_stopped(cid)
    assert st["status"] == "stopped"
    runtime("delete", cid)
    assert not (runtime.root / cid).exists()


def test_create_start_kill_delete(runtime, bundle):
    cid = create_sleeper(runtime, bundle)
    pid = runtime.state(cid)["pid"]
    runtime("start", cid)
    assert runtime.state(cid)["status"] == "running"
    assert alive(pid)
    runtime("kill", cid, "KILL")
    status = reap(pid)
    assert status is None or os.WTERMSIG(status) == signal.SIGKILL
    assert runtime.wait_stopped(cid)["status"] == "stopped"
    runtime("delete", cid)
    assert not (runtime.root / cid).exists()
    assert_failed(runtime("state", cid, check=False), "does not exist")
    assert cid not in runtime("list", "-q").stdout.split()


def test_create_with_equals_and_short_flags(runtime, bundle, tmp_path):
    cid = runtime.new_id()
    set_sh(bundle, "sleep 30")
    pidfile = tmp_path / "p.pid"
    proc = runtime("create", f"--bundle={bundle.path}", f"--pid-file={pidfile}", cid,
                   check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, capture_output=False)
    assert proc.returncode == 0
    assert int(pidfile.read_text()) == runtime.state(cid)["pid"]
    cid2 = runtime.new_id()
    proc = runtime("create", "-b", bundle.path, "-pid-file", tmp_path / "q.pid", cid2,
                   check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, capture_output=False)
    assert proc.returncode == 0
    assert runtime.state(cid2)["status"] == "created"
    runtime("delete", "--force", cid)
    runtime("delete", "--force", cid2)


def test_create_bundle_defaults_to_cwd(runtime, bundle):
    cid = runtime.new_id()
    set_sh(bundle, "sleep 30")
    proc = runtime("create", cid, cwd=bundle.path, check=False, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, capture_output=False)
    assert proc.returncode == 0
    assert runtime.state(cid)["bundle"] == str(bundle.path)
    runtime("delete", "--force", cid)


def test_duplicate_id_is_refused(runtime, bundle):
    cid = create_sleeper(runtime, bundle)
    pid = runtime.state(cid)["pid"]
    proc = runtime("create", "--bundle", bundle.path, cid, check=False, stdin=subprocess.DEVNULL)
    assert_failed(proc, "container with given ID already exists")
    st = runtime.state(cid)
    assert st["status"] == "created" and st["pid"] == pid
    runtime("delete", "--force", cid)


def test_state_json(runtime, bundle):
    bundle.config["annotations"] = {"org.example.key": "value"}
    cid = create_sleeper(runtime, bundle)
    before = time.time()
    st = runtime.state(cid)
    for key in ("ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"):
        assert key in st, key
    assert st["id"] == cid and st["status"] == "created"
    assert st["bundle"] == str(bundle.path)
    assert st["rootfs"] == str(bundle.rootfs)
    assert st["annotations"] == {"org.example.key": "value"}
    created = parse_rfc3339(st["created"]).timestamp()
    assert before - 60 < created <= before + 1
    if is_pyruntime():
        assert st["ociVersion"] == "1.3.0" and st["owner"] == "root"
    runtime("delete", "--force", cid)


# ================================================================ start

def test_start_twice_fails(runtime, bundle):
    cid = create_sleeper(runtime, bundle)
    runtime("start", cid)
    assert_failed(runtime("start", cid, check=False))
    assert runtime.state(cid)["status"] == "running"
    runtime("delete", "--force", cid)


def test_start_stopped_fails(runtime, bundle):
    cid = create_sleeper(runtime, bundle, "true")
    runtime("start", cid)
    runtime.wait_stopped(cid)
    assert_failed(runtime("start", cid, check=False))
    runtime("delete", cid)


# ================================================================ kill

@pytest.mark.parametrize("sig", ["9", "KILL", "SIGKILL"])
def test_kill_signal_forms(runtime, bundle, sig):
    cid = create_sleeper(runtime, bundle)
    pid = runtime.state(cid)["pid"]
    runtime("start", cid)
    runtime("kill", cid, sig)
    status = reap(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert runtime.wait_stopped(cid)["status"] == "stopped"
    runtime("delete", cid)


@pytest.mark.parametrize("args", [(), ("TERM",), ("15",), ("SIGTERM",)])
def test_kill_default_is_term(runtime, bundle, args):
    cid = create_sleeper(runtime, bundle,
                         "trap 'exit 3' TERM; echo ready > /ready; while :; do sleep 0.05; done")
    pid = runtime.state(cid)["pid"]
    runtime("start", cid)
    wait_file(bundle.rootfs / "ready")
    runtime("kill", cid, *args)
    status = reap(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3
    runtime("delete", cid)


@pytest.mark.parametrize("sig", ["9", "TERM"])
def test_kill_created_container(runtime, bundle, sig):
    """As runc's: SIGTERM ends a created container too (its init, PID 1 of the container's
    pid namespace, handles it: unhandled, even the host's would be ignored)."""
    cid = create_sleeper(runtime, bundle)
    pid = runtime.state(cid)["pid"]
    runtime("kill", cid, sig)
    reap(pid)
    assert runtime.wait_stopped(cid)["status"] == "stopped"
    runtime("delete", cid)


def test_kill_stopped_container(runtime, bundle):
    cid = create_sleeper(runtime, bundle, "true")
    runtime("start", cid)
    runtime.wait_stopped(cid)
    assert_failed(runtime("kill", cid, "9", check=False), "container not running")
    # --all on a stopped container is not an error
    assert runtime("kill", "--all", cid, "9", check=False).returncode == 0
    runtime("delete", cid)


def test_kill_all(runtime, bundle):
    cid = create_sleeper(runtime, bundle,
                         "sleep 30 & sleep 31 & echo ready > /ready; wait")
    init = runtime.state(cid)["pid"]
    runtime("start", cid)
    wait_file(bundle.rootfs / "ready")
    procs_file = Path(f"/sys/fs/cgroup/pids/pyrt-test/{cid}/cgroup.procs")
    pids = wait_for(lambda: [int(p) for p in procs_file.read_text().split()]
                    if len(procs_file.read_text().split()) >= 3 else None)
    runtime("kill", "--all", cid, "9")
    reap(init)
    wait_for(lambda: not any(alive(p) for p in pids))
    assert runtime.wait_stopped(cid)["status"] == "stopped"
    runtime("delete", cid)


def test_kill_unknown_signal_fails(runtime, bundle):
    cid = create_sleeper(runtime, bundle)
    assert_failed(runtime("kill", cid, "SIGNOPE", check=False))
    assert runtime.state(cid)["status"] == "created"
    runtime("delete", "--force", cid)


# ================================================================ delete

def test_delete_running_without_force_fails(runtime, bundle):
    cid = create_sleeper(runtime, bundle)
    runtime("start", cid)
    assert_failed(runtime("delete", cid, check=False), "running")
    assert runtime.state(cid)["status"] == "running"
    runtime("delete", "--force", cid)


@pytest.mark.parametrize("started", [True, False])
def test_delete_force(runtime, bundle, started):
    cid = create_sleeper(runtime, bundle)
    pid = runtime.state(cid)["pid"]
    if started:
        runtime("start", cid)
    runtime("delete", "--force", cid)
    reap(pid)
    assert not alive(pid)
    assert not (runtime.root / cid).exists()
    assert not Path(f"/sys/fs/cgroup/memory/pyrt-test/{cid}").exists()
    assert_failed(runtime("state", cid, check=False), "does not exist")


def test_delete_force_never_existed(runtime):
    assert runtime("delete", "--force", "never-was-here", check=False).returncode == 0


def test_delete_missing_fails(runtime):
    assert_failed(runtime("delete", "never-was-here", check=False), "does not exist")


def test_delete_force_half_created(runtime, bundle):
    # a state dir without state.json (e.g. a create that died early) is cleaned up by delete --force
    runtime.root.mkdir(parents=True, exist_ok=True)
    cid = runtime.new_id()
    (runtime.root / cid).mkdir()
    assert runtime("delete", "--force", cid, check=False).returncode == 0
    assert not (runtime.root / cid).exists()


# ================================================================ run

def test_run_exit_code(runtime, bundle):
    set_sh(bundle, "exit 42")
    cid = runtime.new_id()
    proc = runtime.run(bundle, cid, check=False)
    assert proc.returncode == 42
    # run deletes the container afterwards
    assert_failed(runtime("state", cid, check=False), "does not exist")


def test_run_killed_by_signal_gives_128_plus_n(runtime, bundle):
    cid = runtime.new_id()
    set_sh(bundle, "echo ready > /ready; exec sleep 30")
    p = subprocess.Popen(runtime.cmd("run", "--bundle", bundle.path, cid),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_file(bundle.rootfs / "ready")
        wait_for(lambda: runtime("state", cid, check=False).returncode == 0)
        runtime("kill", cid, "9")
        assert p.wait(timeout=10) == 128 + 9
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()


@pytest.mark.parametrize("flag", [[], ["--no-subreaper"], ["-no-subreaper"]])
def test_run_no_subreaper(runtime, bundle, flag):
    # Without a pid namespace an orphan of the container goes to the nearest subreaper: `run`
    # itself, unless --no-subreaper (runc's flag) hands it on to ours. The init stays run's
    # child either way, so its exit status still comes back.
    bundle.config["linux"]["namespaces"] = [{"type": "mount"}, {"type": "uts"}]
    set_sh(bundle, "sh -c 'sleep 5 & echo $! >/orphan'; sleep 0.3; "
                   "ppid=$(sed -n 's/^PPid:\\s*//p' /proc/$(cat /orphan)/status); "
                   "echo $ppid $PPID; kill $(cat /orphan); exit 3")
    proc = runtime.run(bundle, None, *flag, check=False)
    assert proc.returncode == 3, proc.stderr
    orphan_parent, run_pid = map(int, proc.stdout.split())
    if flag:
        assert orphan_parent == os.getpid()
    else:
        assert orphan_parent == run_pid


def test_run_detach(runtime, bundle, tmp_path):
    pidfile = tmp_path / "run.pid"
    set_sh(bundle, "sleep 30")
    cid = runtime.new_id()
    t0 = time.monotonic()
    proc = runtime("run", "--detach", "--bundle", bundle.path, "--pid-file", pidfile, cid,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   capture_output=False)
    assert proc.returncode == 0
    assert time.monotonic() - t0 < 10
    raw = pidfile.read_text()
    assert raw.isdigit()
    st = runtime.state(cid)
    assert st["status"] == "running" and st["pid"] == int(raw)
    assert ppid_of(int(raw)) == os.getpid()
    runtime("kill", cid, "9")
    reap(int(raw))
    runtime.wait_stopped(cid)
    runtime("delete", cid)


def test_run_stdio_passes_through(runtime, bundle):
    set_sh(bundle, "read x; echo out:$x; echo err:$x >&2")
    proc = runtime.run(bundle, input="hello\n")
    assert proc.stdout == "out:hello\n"
    assert "err:hello" in proc.stderr


# ================================================================ preserve-fds

def test_preserve_fds(runtime, bundle, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("preserved-input\n")
    out3 = tmp_path / "fd3.txt"
    set_sh(bundle, "echo to-fd3 >&3; cat <&4; echo LISTEN_FDS=$LISTEN_FDS; "
                   "ls /proc/$$/fd; true")  # not last: sh would exec ls
    cid = runtime.new_id()
    # fds 3 and 4 are preserved; fd 5 is a stray one that must not reach the container
    cmd = " ".join(f"'{c}'" for c in runtime.cmd("run", "--bundle", bundle.path, "--preserve-fds", "2", cid))
    proc = subprocess.run(["sh", "-c", f"exec {cmd} 3>'{out3}' 4<'{src}' 5<'{src}'"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert out3.read_text() == "to-fd3\n"
    assert lines[0] == "preserved-input"
    assert sorted(lines[2:], key=int) == ["0", "1", "2", "3", "4"]
    if is_pyruntime():
        assert lines[1] == "LISTEN_FDS=2"
    else:
        assert lines[1] == "LISTEN_FDS="  # runc only forwards its own LISTEN_FDS (socket activation)


# ================================================================ no proc mounted

def _without_proc(bundle) -> None:
    """The config without its proc mount; the masked and read-only paths under /proc stay
    (there is nothing to cover: each is skipped as missing)."""
    cfg = bundle.config
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/proc"]
    cfg["linux"]["maskedPaths"] = [p for p in cfg["linux"]["maskedPaths"] if p.startswith("/proc/")]


@pytest.mark.skipif(not is_pyruntime(), reason="runc 1.1 fails on it: /proc/self/fd is missing")
def test_a_container_without_proc_runs(runtime, bundle):
    """A config that mounts no proc (crun runs it): the init reopens exec.fifo through a
    proc of its own, reads its bounding set with prctl and sets oomScoreAdj before the
    root switch. Inside, /proc is the rootfs's empty directory; from the host, the process
    has the configured bounding set and score."""
    _without_proc(bundle)
    bundle.config["process"]["oomScoreAdj"] = 123
    cid = create_sleeper(runtime, bundle, "ls -A /proc > /out; echo done >> /out; exec sleep 30")
    runtime("start", cid)
    assert wait_file(bundle.rootfs / "out") == "done\n"
    pid = runtime.state(cid)["pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    caps = {"CAP_AUDIT_WRITE": 29, "CAP_KILL": 5, "CAP_NET_BIND_SERVICE": 10}
    assert f"CapBnd:\t{sum(1 << n for n in caps.values()):016x}" in status
    assert Path(f"/proc/{pid}/oom_score_adj").read_text() == "123\n"
    runtime("delete", "--force", cid)
    set_sh(bundle, "ls -A /proc; echo ran")  # `run`: create and start in one process
    assert runtime.run(bundle).stdout == "ran\n"


@pytest.mark.skipif(not is_pyruntime(), reason="runc 1.1 fails on it: /proc/self/fd is missing")
def test_without_proc_masks_read_only_paths_and_sysctls_apply(runtime, bundle):
    """Without a proc at /proc the steps that reach files through /proc/self/fd take the
    mount API's fds instead, and sysctls go through a proc of the init's own: a masked file
    and dir outside /proc, a read-only path and a sysctl apply, and what the rootfs has at
    /proc (a planted /proc/sys file, /proc/self/fd links to elsewhere) is never used."""
    _without_proc(bundle)
    root = bundle.rootfs
    (root / "secret").write_text("s3cret\n")
    (root / "hidden").mkdir()
    (root / "hidden" / "f").write_text("x\n")
    (root / "ro").mkdir()
    (root / "decoy").write_text("decoy\n")
    planted = root / "proc" / "sys" / "net" / "ipv4" / "ip_forward"
    planted.parent.mkdir(parents=True)
    planted.write_text("0\n")
    (root / "proc" / "self" / "fd").mkdir(parents=True)
    for n in range(3, 40):  # whatever fd numbers the init uses: links to the decoy
        os.symlink("/decoy", root / "proc" / "self" / "fd" / str(n))
    linux = bundle.config["linux"]
    linux["maskedPaths"] += ["/secret", "/hidden"]
    linux["readonlyPaths"] = ["/ro"]
    linux["sysctl"] = {"net.ipv4.ip_forward": "1"}
    cid = create_sleeper(runtime, bundle,
                         "cat /secret > /out; ls /hidden >> /out; touch /ro/x 2>> /out; "
                         "cat /decoy >> /out; echo done >> /out; exec sleep 30")
    pid = runtime.state(cid)["pid"]
    runtime("start", cid)
    out = wait_file(root / "out")
    wait_for(lambda: (root / "out").read_text().endswith("done\n"))
    out = (root / "out").read_text()
    assert out.splitlines()[0].startswith("touch: /ro/x: Read-only file system"), out
    assert out.endswith("decoy\ndone\n"), out  # the decoy was neither masked nor covered
    assert "s3cret" not in out and "f\n" not in out, out
    assert planted.read_text() == "0\n"
    forward = subprocess.run(["nsenter", "-t", str(pid), "-n", "cat",
                              "/proc/sys/net/ipv4/ip_forward"], capture_output=True, text=True)
    assert forward.stdout == "1\n", forward
    runtime("delete", "--force", cid)


# ================================================================ the created init

@pytest.mark.skipif(not is_pyruntime() or os.uname().machine != "x86_64",
                    reason="pyruntime's exec shim (x86_64 code)")
def test_a_created_init_has_taken_its_last_steps(runtime, bundle):
    """Before `start`, the created init is already the exec shim (pyruntime:INIT), waiting
    on exec.fifo with the process's capabilities and no_new_privs, holding only its stdio
    and the fifo: `start` waits for no interpreter. With a startContainer hook (run after
    `start`, in Python) the init waits itself; both then run the process."""
    caps = {"CAP_AUDIT_WRITE": 29, "CAP_KILL": 5, "CAP_NET_BIND_SERVICE": 10}
    for hook in (False, True):
        if hook:
            bundle.config["hooks"] = {"startContainer": [{"path": "/bin/true"}]}
        cid = create_sleeper(runtime, bundle, "echo started > /out; exec sleep 30")
        pid = runtime.state(cid)["pid"]
        if not hook:
            wait_for(lambda: Path(f"/proc/{pid}/comm").read_text() == "pyruntime:INIT\n")
            status = Path(f"/proc/{pid}/status").read_text()
            assert f"CapEff:\t{sum(1 << n for n in caps.values()):016x}" in status
            assert "NoNewPrivs:\t1" in status
            fds = {int(n): os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
            assert sorted(fds)[:3] == [0, 1, 2] and len(fds) == 4, fds
            assert fds[max(fds)].endswith(f"/{cid}/exec.fifo"), fds
        else:
            assert Path(f"/proc/{pid}/comm").read_text() != "pyruntime:INIT\n"
        runtime("start", cid)
        assert wait_file(bundle.rootfs / "out") == "started\n"
        (bundle.rootfs / "out").unlink()
        runtime("delete", "--force", cid)


@pytest.mark.parametrize("hook", [False, True], ids=["shim-waits", "init-waits"])
def test_a_non_root_process_waits_as_its_own_user(runtime, bundle, hook):
    """A process user other than root: exec.fifo is that user's, write-only, so the created
    init waits as the exec shim after the user switch (or, with a startContainer hook, the
    init opens it as root and waits itself); only `start` can open it for reading, not a host
    user of the same uid; the process runs as its user."""
    out = bundle.rootfs / "o"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.config["process"]["capabilities"] = {}
    if hook:
        bundle.config["hooks"] = {"startContainer": [{"path": "/bin/true"}]}
    cid = create_sleeper(runtime, bundle, "id -u > /o/id; exec sleep 30")
    pid = runtime.state(cid)["pid"]
    fifo = os.stat(runtime.root / cid / "exec.fifo")
    assert (fifo.st_uid, fifo.st_gid, fifo.st_mode & 0o777) == (1000, 1000, 0o200)
    if not hook:
        wait_for(lambda: Path(f"/proc/{pid}/comm").read_text() == "pyruntime:INIT\n")
        assert proc_status(pid)["Uid"].split() == ["1000"] * 4
    else:
        assert Path(f"/proc/{pid}/comm").read_text() != "pyruntime:INIT\n"
    child = os.fork()
    if child == 0:  # a host user of the container's uid tries to start it
        try:
            os.setgid(1000)
            os.setuid(1000)
            os.open(runtime.root / cid / "exec.fifo", os.O_RDONLY | os.O_NONBLOCK)
            os._exit(0)
        except PermissionError:
            os._exit(13)
        except BaseException:
            os._exit(1)
    assert os.waitpid(child, 0)[1] >> 8 == 13
    assert runtime.state(cid)["status"] == "created"
    runtime("start", cid)
    assert wait_file(out / "id") == "1000\n"
    runtime("delete", "--force", cid)
