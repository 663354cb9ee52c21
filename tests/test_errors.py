"""Errors: clear one-line messages naming the config path and value, runc's wording where callers
match on it, never a traceback, and nothing left behind by a failed create."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import is_pyruntime
from corehelp import assert_failed


def failed_create(runtime, bundle, *extra, log=None):
    """Run a create that must fail; check it left nothing behind; return the CompletedProcess."""
    cid = runtime.new_id()
    bundle.config.setdefault("linux", {})["cgroupsPath"] = f"/pyrt-test/{cid}"
    bundle.write()
    g = ("--log", log, "--log-format", "json") if log else ()
    proc = runtime("create", "--bundle", bundle.path, *extra, cid, check=False,
                   stdin=subprocess.DEVNULL, global_args=g)
    assert_failed(proc)
    assert not (runtime.root / cid).exists(), "a failed create left its state dir"
    assert cid not in runtime("list", "-q").stdout.split()
    for hier in ("memory", "pids", "devices", "freezer"):
        assert not Path(f"/sys/fs/cgroup/{hier}/pyrt-test/{cid}").exists(), f"cgroup left in {hier}"
    # (the leak check verifies no process or mount is left either)
    return proc


# ================================================================ config errors name the JSON path

def test_bad_namespace_type_names_path_and_value(runtime, bundle):
    bundle.config["linux"]["namespaces"][2]["type"] = "pidd"
    proc = failed_create(runtime, bundle)
    if is_pyruntime():
        assert 'config.json: linux.namespaces[2].type: "pidd"' in proc.stderr, proc.stderr
    else:
        assert "pidd" in proc.stderr


def test_unknown_rlimit_is_an_error(runtime, bundle):
    bundle.config["process"]["rlimits"].append({"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1})
    proc = failed_create(runtime, bundle)
    assert "RLIMIT_BOGUS" in proc.stderr
    if is_pyruntime():
        assert 'process.rlimits[1].type: "RLIMIT_BOGUS"' in proc.stderr, proc.stderr


def test_unknown_capability(runtime, bundle):
    bundle.config["process"]["capabilities"]["bounding"].append("CAP_BOGUS")
    bundle.config["process"]["args"] = ["true"]
    if is_pyruntime():
        proc = failed_create(runtime, bundle)
        assert 'process.capabilities.bounding[3]: "CAP_BOGUS"' in proc.stderr, proc.stderr
    else:
        # runc 1.1 only warns about an unknown capability and goes on
        bundle.write()
        proc = runtime.run(bundle, check=False)
        assert proc.returncode == 0
        assert "CAP_BOGUS" in proc.stderr


def test_capability_outside_bounding_set(runtime, bundle):
    if "CAP_SYS_RESOURCE" not in _host_bounding():
        names = ["CAP_SYS_RESOURCE"]
    else:
        pytest.skip("this host's bounding set has every capability")
    for k in ("bounding", "effective", "permitted"):
        bundle.config["process"]["capabilities"][k] += names
    proc = failed_create(runtime, bundle)
    if is_pyruntime():
        assert "CAP_SYS_RESOURCE" in proc.stderr, proc.stderr
    else:
        assert "operation not permitted" in proc.stderr


def _host_bounding() -> set[str]:
    from corehelp import CAPS
    bnd = int([line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("CapBnd:")][0], 16)
    return {name for name, bit in CAPS.items() if bnd & (1 << bit)}


def test_invalid_json(runtime, bundle):
    (bundle.path / "config.json").write_text('{"ociVersion": "1.3.0", "process": ')
    cid = runtime.new_id()
    proc = runtime("create", "--bundle", bundle.path, cid, check=False, stdin=subprocess.DEVNULL)
    if is_pyruntime():
        assert_failed(proc, "config.json")
    else:
        assert_failed(proc, "unexpected EOF")
    assert not (runtime.root / cid).exists()


def test_missing_config(runtime, bundle):
    (bundle.path / "config.json").unlink()
    cid = runtime.new_id()
    proc = runtime("create", "--bundle", bundle.path, cid, check=False, stdin=subprocess.DEVNULL)
    assert_failed(proc, "config.json")
    assert not (runtime.root / cid).exists()


def test_wrong_type_names_path(runtime, bundle):
    bundle.config["process"]["user"]["uid"] = "zero"
    proc = failed_create(runtime, bundle)
    if is_pyruntime():
        assert 'config.json: process.user.uid: "zero"' in proc.stderr, proc.stderr


def test_missing_rootfs(runtime, bundle):
    bundle.config["root"]["path"] = "no-such-rootfs"
    proc = failed_create(runtime, bundle)
    assert "no-such-rootfs" in proc.stderr


def test_hostname_without_uts_namespace(runtime, bundle):
    bundle.config["linux"]["namespaces"] = [n for n in bundle.config["linux"]["namespaces"]
                                            if n["type"] != "uts"]
    before = os.uname().nodename
    proc = failed_create(runtime, bundle)
    assert "hostname" in proc.stderr.lower() or "uts" in proc.stderr.lower()
    assert os.uname().nodename == before


# ================================================================ the entrypoint, checked at create

@pytest.mark.parametrize("args", [["/bin/no-such-binary"], ["no-such-binary"]])
def test_missing_entrypoint_fails_at_create(runtime, bundle, args):
    bundle.config["process"]["args"] = args
    proc = failed_create(runtime, bundle)
    assert "executable file not found" in proc.stderr or "no such file or directory" in proc.stderr, \
        proc.stderr


def test_non_executable_entrypoint_fails_at_create(runtime, bundle):
    (bundle.rootfs / "not-exec").write_text("#!/bin/sh\necho hi\n")
    os.chmod(bundle.rootfs / "not-exec", 0o644)
    bundle.config["process"]["args"] = ["/not-exec"]
    proc = failed_create(runtime, bundle)
    assert "permission denied" in proc.stderr, proc.stderr


def test_entrypoint_is_a_directory(runtime, bundle):
    bundle.config["process"]["args"] = ["/etc"]
    proc = failed_create(runtime, bundle)
    assert "permission denied" in proc.stderr or "is a directory" in proc.stderr, proc.stderr


def test_entrypoint_found_on_host_only_is_not_used(runtime, bundle):
    # python3 exists on the host PATH but not in the busybox rootfs
    bundle.config["process"]["args"] = ["python3", "-c", "print(1)"]
    proc = failed_create(runtime, bundle)
    assert "executable file not found" in proc.stderr or "no such file or directory" in proc.stderr


def test_missing_entrypoint_error_reaches_the_log(runtime, bundle, tmp_path):
    log = tmp_path / "log.json"
    bundle.config["process"]["args"] = ["/bin/no-such-binary"]
    failed_create(runtime, bundle, log=log)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    errors = [r for r in records if r.get("level") == "error"]
    assert errors, records
    last = errors[-1]["msg"]
    assert "no such file or directory" in last or "executable file not found" in last, last
    # runc's wording, which Docker and containerd show and people match on
    assert "unable to start container process: " in last, last


# ================================================================ lookups of unknown containers

@pytest.mark.parametrize("cmd", [["state"], ["start"], ["kill"], ["delete"], ["kill", "--all"]])
def test_unknown_container(runtime, cmd):
    runtime.root.mkdir(parents=True, exist_ok=True)
    args = [*cmd, "ghost"] + (["9"] if cmd[0] == "kill" else [])
    assert_failed(runtime(*args, check=False), "does not exist")


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", ""])
def test_invalid_container_id(runtime, bundle, tmp_path, bad):
    proc = runtime("create", "--bundle", bundle.path, bad, check=False, stdin=subprocess.DEVNULL)
    assert_failed(proc)
    assert not (tmp_path / "escape").exists()
    if runtime.root.exists():
        assert runtime.state_dirs() == []


def test_failed_create_with_every_resource_leaves_nothing(runtime, bundle, tmp_path):
    """A failure late in the init (after namespaces, cgroup, mounts) still cleans up everything."""
    src = tmp_path / "src"
    src.mkdir()
    bundle.config["mounts"].append({"destination": "/data", "type": "bind", "source": str(src),
                                    "options": ["rbind"]})
    bundle.config["process"]["args"] = ["/no/such/entrypoint"]
    failed_create(runtime, bundle, "--pid-file", tmp_path / "pid")


def test_a_pid_file_that_cannot_be_written_undoes_the_create(runtime, bundle, tmp_path):
    """As runc: nobody would learn the init's pid, so the container must not stay."""
    proc = failed_create(runtime, bundle, "--pid-file", tmp_path / "no" / "such" / "pid")
    assert "no such file or directory" in proc.stderr.lower(), proc.stderr
    assert not list(tmp_path.glob("**/*.tmp"))


def test_bad_mount_fails_cleanly(runtime, bundle, tmp_path):
    bundle.config["mounts"].append({"destination": "/data", "type": "bind",
                                    "source": str(tmp_path / "no-such-source"), "options": ["rbind"]})
    proc = failed_create(runtime, bundle)
    assert "no-such-source" in proc.stderr or "no such file or directory" in proc.stderr


def test_no_traceback_on_garbage_arguments(runtime, bundle):
    for args in (["create"], ["kill", "x", "99999"], ["run", "--bundle", "/nonexistent/bundle", "x"],
                 ["create", "--preserve-fds", "notanumber", "x"], ["list", "--format", "yaml"],
                 ["--log-format", "xml", "list"]):
        proc = runtime(*args, check=False, stdin=subprocess.DEVNULL)
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr + proc.stdout, args


# ================================================================ typed errors, for a Python caller

_TYPED = """
import json, sys
from pyruntime.errors import RuntimeFailure
from pyruntime.lifecycle import container
root, cid, bundle = sys.argv[1:]
try:
    container.create(root, cid, bundle)
    container.start(root, cid)
except RuntimeFailure as e:
    print(json.dumps([str(e), e.errno, e.path, e.step]))
finally:
    container.delete(root, cid, force=True)
"""


def typed_failure(runtime, bundle) -> list:
    """[message, errno, path, step] of what a Python caller of create and start catches."""
    cid = runtime.new_id()
    bundle.config.setdefault("linux", {})["cgroupsPath"] = f"/pyrt-test/{cid}"
    bundle.write()
    proc = subprocess.run([sys.executable, "-c", _TYPED, str(runtime.root), cid, str(bundle.path)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0 and proc.stdout, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's Python errors")
def test_a_failure_in_the_init_reaches_the_caller_typed(runtime, bundle):
    bundle.config["linux"]["sysctl"] = {"fs.mqueue.no_such_knob": "1"}
    msg, err, path, step = typed_failure(runtime, bundle)
    assert msg == ("unable to start container process: linux.sysctl.fs.mqueue.no_such_knob: "
                   "'1': No such file or directory")
    assert (err, path, step) == (2, "linux.sysctl.fs.mqueue.no_such_knob", "process")


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's Python errors")
def test_a_failed_execve_reaches_start_typed(runtime, bundle):
    bad = bundle.path / "rootfs" / "not-a-program"
    bad.write_bytes(b"\x00\x01 neither ELF nor #!")
    bad.chmod(0o755)
    bundle.config["process"]["args"] = ["/not-a-program"]
    msg, err, path, step = typed_failure(runtime, bundle)
    assert msg == 'exec: "/not-a-program": exec format error'
    assert (err, path, step) == (8, None, "exec")  # ENOEXEC, from the exec shim or execve
