"""OCI hooks: the six kinds, their order, namespaces, the state on stdin, args, env, timeout, failures."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import is_pyruntime
from corehelp import assert_failed, ns_link, set_sh, wait_file

KINDS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]

# Every hook appends "<kind> <args...>" to hooks.log in the rootfs, saves its stdin (the state) and
# its environment and namespaces beside it. Host hooks reach the rootfs by its host path; the
# startContainer hook runs in the container (after pivot_root), where the rootfs is "/".
HOOK_BODY = """\
kind="$1"; shift
echo "$kind $*" >> "$D/hooks.log"
cat > "$D/state-$kind.json"
env > "$D/env-$kind"
echo "$(readlink /proc/self/ns/uts) $(readlink /proc/self/ns/mnt)" > "$D/ns-$kind"
if [ -n "$HOOK_SLEEP" ]; then exec sleep "$HOOK_SLEEP"; fi
exit "${HOOK_EXIT:-0}"
"""


def write_hook(path: Path, rootfs_dir: str) -> Path:
    path.write_text(f"#!/bin/sh\nD={rootfs_dir}\n" + HOOK_BODY)
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def hooked(bundle, tmp_path):
    """The bundle with a recording hook for each of the six kinds."""
    host_hook = write_hook(tmp_path / "hook.sh", str(bundle.rootfs))
    write_hook(bundle.rootfs / "hook.sh", "")

    def add(kind, *args, env=None, timeout=None, exit_code=0, sleep=None):
        path = "/hook.sh" if kind == "startContainer" else str(host_hook)
        e = list(env or ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        if exit_code:
            e.append(f"HOOK_EXIT={exit_code}")
        if sleep:
            e.append(f"HOOK_SLEEP={sleep}")
        h = {"path": path, "args": ["hook.sh", kind, *args], "env": e}
        if timeout is not None:
            h["timeout"] = timeout
        bundle.config.setdefault("hooks", {}).setdefault(kind, []).append(h)

    bundle.add_hook = add
    return bundle


def log_lines(bundle) -> list[str]:
    p = bundle.rootfs / "hooks.log"
    return p.read_text().splitlines() if p.exists() else []


def hook_state(bundle, kind) -> dict:
    return json.loads((bundle.rootfs / f"state-{kind}.json").read_text())


def test_all_six_hooks_in_order_with_state(runtime, hooked, tmp_path):
    for kind in KINDS:
        hooked.add_hook(kind, "arg-1", "arg two")
    cid = runtime.new_id()
    hooked.config["annotations"] = {"hook.test": "yes"}
    set_sh(hooked, "echo ran >> /hooks.log")
    pidfile = tmp_path / "pid"
    runtime.create(hooked, cid, "--pid-file", pidfile)
    pid = int(pidfile.read_text())
    at_create = [line.split()[0] for line in log_lines(hooked)]
    if is_pyruntime():
        assert at_create == ["prestart", "createRuntime", "createContainer"]
    else:
        # runc 1.1 runs poststart hooks at create time, not after start
        assert at_create == ["prestart", "createRuntime", "createContainer", "poststart"]
    runtime("start", cid)
    wait_file(hooked.rootfs / "state-poststart.json")
    runtime.wait_stopped(cid)
    runtime("delete", cid)

    lines = log_lines(hooked)
    order = [line.split()[0] for line in lines]
    if is_pyruntime():
        # poststart runs after the process started (before or after it wrote "ran")
        assert order in (
            ["prestart", "createRuntime", "createContainer", "startContainer", "ran", "poststart", "poststop"],
            ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "ran", "poststop"])
    else:
        assert order == ["prestart", "createRuntime", "createContainer", "poststart", "startContainer",
                         "ran", "poststop"]
    # args after argv[0] reach the hook
    assert lines[0] == "prestart arg-1 arg two"

    expected_status = {"prestart": "created", "createRuntime": "created", "createContainer": "created",
                       "startContainer": "running", "poststart": "running", "poststop": "stopped"}
    if not is_pyruntime():
        # runc 1.1 reports "creating" while it runs the create-time hooks, "created" in
        # startContainer and in poststart (which it runs at create)
        expected_status.update(prestart="creating", createRuntime="creating",
                               createContainer="creating", startContainer="created",
                               poststart="created")
    for kind in KINDS:
        st = hook_state(hooked, kind)
        assert st["id"] == cid, kind
        assert st["status"] == expected_status[kind], (kind, st)
        assert st["ociVersion"], kind
        assert st["annotations"] == {"hook.test": "yes"}, kind
        if kind != "startContainer":
            assert st["bundle"] == str(hooked.path), kind
    for kind in ("prestart", "createRuntime", "poststart"):
        assert hook_state(hooked, kind)["pid"] == pid, kind


def test_hook_namespaces(runtime, hooked):
    for kind in KINDS:
        hooked.add_hook(kind)
    hooked.write()
    runtime.run(hooked)
    host = f"{ns_link('uts')} {ns_link('mnt')}"
    for kind in ("prestart", "createRuntime", "poststart", "poststop"):
        assert (hooked.rootfs / f"ns-{kind}").read_text().strip() == host, kind
    container = (hooked.rootfs / "ns-startContainer").read_text().split()
    assert container[0] != ns_link("uts") and container[1] != ns_link("mnt")
    assert (hooked.rootfs / "ns-createContainer").read_text().split() == container


def test_create_container_hook_runs_in_the_rootfs(runtime, bundle):
    """As runc's: the createContainer hook's cwd is the container's rootfs (runc's hooks.bats
    binds a library with `mount --bind ... ./lib/...`)."""
    bundle.config["hooks"] = {"createContainer": [
        {"path": "/bin/sh", "args": ["sh", "-c", "pwd > ./hook-cwd; touch ./lib-from-hook"]}]}
    set_sh(bundle, "ls /lib-from-hook")
    assert runtime.run(bundle, None, stdin=subprocess.DEVNULL).stdout == "/lib-from-hook\n"
    assert (bundle.rootfs / "hook-cwd").read_text().strip() == str(bundle.rootfs)


def test_hook_env_is_exactly_the_configured_env(runtime, hooked):
    hooked.add_hook("prestart", env=["PATH=/bin:/usr/bin", "HOOKVAR=xyz"])
    hooked.write()
    env = dict(os.environ, PYRT_RUNTIME_ONLY="leak")
    runtime.run(hooked, env=env)
    hook_env = (hooked.rootfs / "env-prestart").read_text()
    assert "HOOKVAR=xyz" in hook_env.splitlines()
    assert "PYRT_RUNTIME_ONLY" not in hook_env


def test_hook_timeout(runtime, hooked):
    hooked.add_hook("prestart", timeout=1, sleep=8)
    hooked.write()
    cid = runtime.new_id()
    t0 = time.monotonic()
    proc = runtime("create", "--bundle", hooked.path, cid, check=False, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - t0
    assert_failed(proc)
    assert elapsed < 5, elapsed
    assert not (runtime.root / cid).exists()


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_create_time_hook_failure_fails_create_and_cleans_up(runtime, hooked, kind):
    hooked.add_hook(kind, exit_code=3)
    hooked.config["linux"]["cgroupsPath"] = f"/pyrt-test/{runtime.new_id()}"
    cid = runtime.ids[-1]
    set_sh(hooked, "echo ran >> /hooks.log")
    proc = runtime("create", "--bundle", hooked.path, cid, check=False, stdin=subprocess.DEVNULL)
    assert_failed(proc)
    assert not (runtime.root / cid).exists()
    assert_failed(runtime("state", cid, check=False), "does not exist")
    assert "ran" not in log_lines(hooked)
    # (the leak check verifies no process, mount or cgroup is left)


def test_start_container_hook_failure(runtime, hooked):
    hooked.add_hook("startContainer", exit_code=3)
    set_sh(hooked, "echo ran >> /hooks.log")
    cid = runtime.create(hooked)
    proc = runtime("start", cid, check=False)
    assert "Traceback" not in proc.stderr
    if is_pyruntime():
        assert proc.returncode != 0   # runc 1.1's start does not report it
    st = runtime.wait_stopped(cid)
    assert st["status"] == "stopped"
    assert "ran" not in log_lines(hooked)
    runtime("delete", "--force", cid)


def test_start_container_hook_runs_under_the_seccomp_filter(runtime, bundle):
    """A startContainer hook runs in the container: it must not be a way around the
    container's seccomp filter (runc's seccomp.bats, where mkdir kills)."""
    bundle.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL"}]}
    bundle.config["hooks"] = {"startContainer": [
        {"path": "/bin/sh", "args": ["sh", "-c", "mkdir /dev/shm/foo"]}]}
    bundle.config["process"]["args"] = ["/bin/true"]
    bundle.write()
    proc = runtime.run(bundle, None, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert_failed(proc, "error running hook")
    assert "bad system call" in proc.stderr


def test_start_container_hook_runs_as_the_process(runtime, hooked):
    """As runc runs it: after the switch to process.user, with the process's capabilities."""
    hooked.config["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": [
        "sh", "-c", "id -u > /tmp/hook-id; grep CapEff /proc/self/status >> /tmp/hook-id"]}]}
    set_sh(hooked, "id -u; grep CapEff /proc/self/status", user={"uid": 1000, "gid": 1000})
    (hooked.rootfs / "tmp").chmod(0o1777)
    out = runtime.run(hooked, None, stdin=subprocess.DEVNULL).stdout
    assert (hooked.rootfs / "tmp" / "hook-id").read_text() == out
    assert out.split()[0] == "1000"


def test_poststart_failure_is_only_a_warning(runtime, hooked):
    hooked.add_hook("poststart", exit_code=3)
    hooked.add_hook("poststart", "second")
    set_sh(hooked, "echo ran >> /hooks.log; sleep 30")
    cid = runtime.new_id()
    if is_pyruntime():
        runtime.create(hooked, cid)
        proc = runtime("start", cid, check=False)
        assert proc.returncode == 0, proc.stderr
        assert runtime.state(cid)["status"] == "running"
        assert "poststart second" in log_lines(hooked)
        runtime("delete", "--force", cid)
    else:
        # runc 1.1 runs poststart at create, and a failure fails the create
        proc = runtime("create", "--bundle", hooked.path, cid, check=False, stdin=subprocess.DEVNULL)
        assert_failed(proc, "error running hook")
        assert not (runtime.root / cid).exists()


def test_poststop_failure_does_not_fail_delete(runtime, hooked):
    hooked.add_hook("poststop", exit_code=3)
    hooked.add_hook("poststop", "second")
    cid = runtime.new_id()
    hooked.write()
    runtime.create(hooked, cid)
    runtime("start", cid)
    runtime.wait_stopped(cid)
    proc = runtime("delete", cid, check=False)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 0 or not is_pyruntime(), proc.stderr
    assert not (runtime.root / cid).exists()
    lines = log_lines(hooked)
    assert lines[0].startswith("poststop")
    if is_pyruntime():
        assert "poststop second" in lines


def test_poststop_runs_on_delete_force(runtime, hooked):
    hooked.add_hook("poststop")
    set_sh(hooked, "sleep 30")
    cid = runtime.create(hooked)
    runtime("start", cid)
    runtime("delete", "--force", cid)
    assert [line.split()[0] for line in log_lines(hooked)] == ["poststop"]
    assert hook_state(hooked, "poststop")["status"] == "stopped"


def test_missing_hook_binary_fails_create(runtime, bundle, tmp_path):
    bundle.config["hooks"] = {"prestart": [{"path": str(tmp_path / "no-such-hook")}]}
    bundle.write()
    cid = runtime.new_id()
    proc = runtime("create", "--bundle", bundle.path, cid, check=False, stdin=subprocess.DEVNULL)
    assert_failed(proc)
    assert not (runtime.root / cid).exists()
