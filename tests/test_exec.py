"""`exec` into a running container: every runc flag, checked from inside the new process."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import CGROUP_ROOT, is_pyruntime, reap_zombies
from corehelp import (ConsoleSocket, assert_failed, assert_in_cgroup_everywhere, cap_mask,
                      parse_status, wait_for)


@pytest.fixture
def running(runtime, bundle):
    """A running container (sleep) with its own cgroup; returns (id, init pid)."""
    cid = runtime.new_id()
    bundle.config["process"]["args"] = ["sleep", "300"]
    bundle.config["process"]["noNewPrivileges"] = False
    bundle.config["linux"]["cgroupsPath"] = f"/pyrt-test/{cid}"
    bundle.write()
    runtime.create(bundle, cid)
    runtime("start", cid)
    return cid, runtime.state(cid)["pid"]


def sh(runtime, cid, script, *flags, check=True):
    return runtime("exec", *flags, cid, "sh", "-c", script, check=check, stdin=subprocess.DEVNULL)


def test_output_and_exit_code(runtime, running):
    cid, _ = running
    proc = sh(runtime, cid, "echo out; echo err >&2; exit 7", check=False)
    assert proc.returncode == 7
    assert proc.stdout == "out\n" and "err" in proc.stderr


def test_joins_every_namespace_and_lands_in_the_pid_namespace(runtime, running):
    cid, pid = running
    out = sh(runtime, cid, "for n in mnt net ipc uts pid cgroup; do readlink /proc/self/ns/$n; done; "
                           "grep NSpid /proc/self/status; cat /proc/1/cmdline | tr '\\0' ' '").stdout.split("\n")
    for i, n in enumerate(("mnt", "net", "ipc", "uts", "pid")):
        assert out[i] == os.readlink(f"/proc/{pid}/ns/{n}"), n
    assert int(out[6].split()[-1]) > 1, out[6]  # inside the pid namespace, not its init
    assert out[7].startswith("sleep 300")


def test_joins_the_cgroup(runtime, running, tmp_path):
    """In every hierarchy, seen from inside and from outside (while it runs)."""
    cid, _ = running
    pid_file = tmp_path / "exec.pid"
    p = subprocess.Popen(runtime.cmd("exec", "--pid-file", pid_file, cid, "sh", "-c",
                                     "cat /proc/self/cgroup; echo END; read x"),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        inside = "".join(iter(p.stdout.readline, "END\n"))
        wait_for(lambda: pid_file.exists() and pid_file.read_text())
        assert_in_cgroup_everywhere(int(pid_file.read_text()), f"/pyrt-test/{cid}", inside)
    finally:
        p.communicate("\n", timeout=30)
    assert p.returncode == 0


def test_env_cwd_user_and_groups(runtime, running):
    cid, _ = running
    out = sh(runtime, cid, 'echo "$FOO $HOME"; pwd; id -u; id -g; id -G',
             "--env", "FOO=bar", "--env", "HOME=/tmp", "--cwd", "/tmp", "--user", "1000:1001",
             "--additional-gids", "5", "--additional-gids", "6").stdout.split("\n")
    assert out[0] == "bar /tmp"
    assert out[1] == "/tmp"
    assert out[2:4] == ["1000", "1001"]
    assert set(out[4].split()) == {"1001", "5", "6"}


def test_cap_adds_a_capability(runtime, running):
    cid, _ = running
    plain = parse_status(sh(runtime, cid, "cat /proc/self/status").stdout)
    more = parse_status(sh(runtime, cid, "cat /proc/self/status", "--cap", "CAP_NET_RAW").stdout)
    raw = cap_mask(["CAP_NET_RAW"])
    assert not int(plain["CapEff"], 16) & raw
    assert int(more["CapEff"], 16) & raw and int(more["CapBnd"], 16) & raw


def test_no_new_privs_flag(runtime, running):
    cid, _ = running
    assert parse_status(sh(runtime, cid, "cat /proc/self/status").stdout)["NoNewPrivs"] == "0"
    out = sh(runtime, cid, "cat /proc/self/status", "--no-new-privs").stdout
    assert parse_status(out)["NoNewPrivs"] == "1"


def test_process_json(runtime, running, tmp_path):
    cid, _ = running
    spec = {"args": ["sh", "-c", 'echo "$X"; pwd; id -u'], "env": ["X=from-json", "PATH=/bin"],
            "cwd": "/dev", "user": {"uid": 7, "gid": 7}, "terminal": False}
    (tmp_path / "process.json").write_text(json.dumps(spec))
    out = runtime("exec", "--process", tmp_path / "process.json", cid, stdin=subprocess.DEVNULL).stdout
    assert out.split() == ["from-json", "/dev", "7"]


def detached(runtime, tmp_path, *args):
    """exec --detach with no pipe the detached process could hold open (we'd wait on it)."""
    with open(tmp_path / "exec.err", "w") as err:
        proc = runtime("exec", "--detach", *args, check=False, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, capture_output=False, stderr=err)
    assert proc.returncode == 0, (tmp_path / "exec.err").read_text()


def test_detach_pid_file_and_reparenting(runtime, running, tmp_path):
    cid, _ = running
    pidfile = tmp_path / "exec.pid"
    detached(runtime, tmp_path, "--pid-file", pidfile, cid, "sleep", "30")
    text = pidfile.read_text()
    assert text.isdigit(), repr(text)  # no newline
    pid = int(text)
    with open(f"/proc/{pid}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid()  # a child of the caller
    with open(f"/proc/{pid}/cmdline") as f:
        assert f.read().startswith("sleep\0" "30")
    assert pid in json.loads(runtime("ps", "--format", "json", cid).stdout)
    os.kill(pid, 9)
    os.waitpid(pid, 0)  # ours to reap, as the shim reaps what it execs


def test_preserve_fds(runtime, running, tmp_path):
    cid, _ = running
    (tmp_path / "three").write_text("passed along\n")
    cmd = " ".join(f"'{c}'" for c in runtime.cmd("exec", "--preserve-fds", "1", cid, "sh", "-c",
                                                 'cat <&3; echo "LISTEN_FDS=$LISTEN_FDS"; ls /proc/self/fd'))
    proc = subprocess.run(["sh", "-c", f"exec 3<'{tmp_path}/three' 4<'{tmp_path}/three'; exec {cmd}"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:3] == ["passed", "along", "LISTEN_FDS=1"] or \
        (not is_pyruntime() and proc.stdout.split()[:2] == ["passed", "along"])


def test_tty_with_console_socket(runtime, running, tmp_path):
    cid, _ = running
    cs = ConsoleSocket()
    try:
        detached(runtime, tmp_path, "--tty", "--console-socket", cs.path, cid, "sh", "-c",
                 "tty; test -t 0 && test -t 1 && echo is-a-tty; sleep 1")
        assert len(cs.fds) == 1 and cs.messages == 1
        out = b""
        os.set_blocking(cs.master, True)
        import select
        while b"is-a-tty" not in out:
            r, _, _ = select.select([cs.master], [], [], 10)
            assert r, f"no output from the pty: {out!r}"
            try:
                chunk = os.read(cs.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        assert b"/dev/pts/" in out and b"is-a-tty" in out, out
        wait_for(lambda: reap_zombies() or len(json.loads(runtime("ps", "--format", "json", cid).stdout)) == 1)
    finally:
        cs.close()


def test_paused_container_needs_ignore_paused(runtime, running, tmp_path):
    """Refused while paused; with --ignore-paused the process joins the frozen cgroup and
    runs once the container is resumed."""
    cid, _ = running
    runtime("pause", cid)
    try:
        refused = sh(runtime, cid, "true", check=False)
        assert_failed(refused, "paused")
        assert refused.returncode == 255  # exec's own failure, unlike any exit of its process
        late = subprocess.Popen(runtime.cmd("exec", "--ignore-paused", cid, "echo", "ran"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            late.wait(0.5)  # frozen with the rest of the container
    finally:
        runtime("resume", cid)
    out, err = late.communicate(timeout=30)
    assert late.returncode == 0 and out == "ran\n", err


def test_cgroup_flag_joins_a_sub_cgroup(runtime, running):
    cid, _ = running
    dirs = [h / "pyrt-test" / cid for h in CGROUP_ROOT.iterdir() if (h / "pyrt-test" / cid).is_dir()]
    assert dirs
    for d in dirs:
        (d / "sub").mkdir()
        if (d / "cpuset.cpus").exists():  # an empty cpuset takes no process
            for f in ("cpuset.cpus", "cpuset.mems"):
                (d / "sub" / f).write_text((d / f).read_text())
    try:
        out = sh(runtime, cid, "cat /proc/self/cgroup", "--cgroup", "sub").stdout
        assert f"/pyrt-test/{cid}/sub" in out
        # per controller, as runc's flag takes it: the others stay in the container's cgroup
        out = sh(runtime, cid, "cat /proc/self/cgroup", "--cgroup", "memory:sub",
                 "--cgroup", "pids,freezer:/sub").stdout
        where = {line.split(":")[1]: line.split(":")[2] for line in out.split()}
        for ctrl in ("memory", "pids", "freezer"):
            assert where[ctrl] == f"/pyrt-test/{cid}/sub", out
        assert where["devices"] == f"/pyrt-test/{cid}", out
        for bad, words in ((["--cgroup", ".."], ".. is not a sub cgroup path"),
                           (["--cgroup", "none"], "/none/cgroup.procs: no such file"),
                           (["--cgroup", "cpu:none"], "/none/cgroup.procs: no such file"),
                           (["--cgroup", "whaaat:/"], "unknown controller whaaat"),
                           (["--cgroup", "a", "--cgroup", "b"], "invalid --cgroup argument")):
            proc = sh(runtime, cid, "true", *bad, check=False)
            assert proc.returncode == 255
            assert_failed(proc, words)
    finally:
        for d in dirs:
            wait_for(lambda: not (d / "sub" / "cgroup.procs").read_text().strip())
            (d / "sub").rmdir()


def test_pid_file_in_a_missing_dir(runtime, running, tmp_path):
    cid, _ = running
    marker = "pidfile-probe-" + cid
    proc = runtime("exec", "--detach", "--pid-file", tmp_path / "no" / "such" / "pid", cid,
                   "sleep", "300", marker, check=False, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, capture_output=False)
    assert proc.returncode == 255
    assert_failed(proc, "no such file or directory")
    assert "internal error" not in proc.stderr
    # the process nobody knows the pid of is not left running
    reap_zombies()
    assert len(json.loads(runtime("ps", "--format", "json", cid).stdout)) == 1
    assert not list(tmp_path.glob("**/*.tmp"))


def test_errors(runtime, running, bundle):
    cid, _ = running
    missing = runtime("exec", cid, "no-such-program", check=False, stdin=subprocess.DEVNULL)
    assert_failed(missing, "executable file not found")
    assert missing.returncode == 255
    gone = runtime("exec", "nope-" + cid, "true", check=False)
    assert_failed(gone, "does not exist")
    assert gone.returncode == 255
    assert sh(runtime, cid, "exit 1", check=False).returncode == 1
    runtime("kill", cid, "KILL")
    # (an ns init is only gone once the ns's other processes are reaped: we are their subreaper)
    wait_for(lambda: reap_zombies() or runtime.state(cid)["status"] == "stopped")
    assert_failed(runtime("exec", cid, "true", check=False, stdin=subprocess.DEVNULL),
                  "not running", "stopped")


def test_sub_cgroups_parses_runcs_forms():
    from pyruntime.errors import RuntimeFailure
    from pyruntime.lifecycle.exec import sub_cgroups
    assert sub_cgroups(["sub"]) == {"": "sub"}
    assert sub_cgroups(["memory:a", "cpu,cpuacct:/b"]) == {"memory": "a", "cpu": "/b",
                                                          "cpuacct": "/b"}
    for bad in (["a:b:c"], ["a", "b"], ["memory:a", "b"]):
        with pytest.raises(RuntimeFailure, match="invalid --cgroup argument"):
            sub_cgroups(bad)
