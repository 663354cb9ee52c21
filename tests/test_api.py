"""The Python API (pyruntime.Runtime): real containers driven through the public API only
(the checks read /proc and cgroupfs), its doctests, and what it leaves behind: nothing."""
from __future__ import annotations

import doctest
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import pyruntime
from conftest import _cgroups_named, is_pyruntime
from pyruntime.errors import (BundleError, ConfigError, ContainerExists, ContainerNotFound,
                              ContainerNotRunning, ContainerStateError, RuntimeFailure)

pytestmark = pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own Python API")

REPO = Path(__file__).resolve().parent.parent


class Api:
    """A Runtime with a private root; the ids it handed out, for the leak check."""

    def __init__(self, root: Path):
        self.rt = pyruntime.Runtime(root=str(root))
        self.root = root
        self.ids: list[str] = []

    def new_id(self) -> str:
        cid = f"api-{uuid.uuid4().hex[:12]}"
        self.ids.append(cid)
        return cid


@pytest.fixture
def api(tmp_path):
    a = Api(tmp_path / "state")
    yield a
    for cid in a.ids:  # what a failed test left: its own leak check still reports it
        try:
            a.rt.delete(cid, force=True)
        except RuntimeFailure:
            pass
    left = [p.name for p in a.root.iterdir() if p.name != ".cache"] if a.root.exists() else []
    cgroups = [d for cid in a.ids for d in _cgroups_named(cid)]
    assert not left and not cgroups, f"left behind: state {left}, cgroups {cgroups}"


def sh(bundle, script: str, cid: str | None = None) -> str:
    """The bundle running script; its cgroup is the default one, named after the id (a
    shared parent such as /pyrt-test can be removed under us by another test session)."""
    bundle.config["process"]["args"] = ["sh", "-c", script]
    bundle.write()
    return str(bundle.path)


def cgroup_file(pid: int, controller: str, name: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                return f"/sys/fs/cgroup/{controller}{path}/{name}"
    raise AssertionError(f"{pid} has no {controller} cgroup")


# ================================================================ the lifecycle

def test_create_start_state_exec_kill_delete(api, bundle):
    cid = api.new_id()
    bundle.config["annotations"] = {"org.example/k": "v"}
    b = sh(bundle, "sleep 30", cid)
    st = api.rt.create(cid, b)
    assert isinstance(st, pyruntime.ContainerState)
    assert (st.id, st.status, st.bundle) == (cid, "created", b)
    assert st.pid > 0 and st.annotations == {"org.example/k": "v"} and st.owner == "root"
    assert time.strptime(st.created[:19], "%Y-%m-%dT%H:%M:%S")
    assert os.getpid() == int(open(f"/proc/{st.pid}/stat").read().rsplit(")", 1)[1].split()[1])
    api.rt.start(cid)
    assert api.rt.state(cid).status == "running"
    r = api.rt.exec(cid, ["sh", "-c", "hostname; cat /proc/1/cmdline; echo oops >&2; exit 5"],
                    capture_output=True)
    assert (r.exit_code, r.stdout, r.stderr) == (5, b"pyruntime\nsleep\x0030\0", b"oops\n")
    r = api.rt.exec(cid, ["id", "-u"], user="65534", capture_output=True)
    assert r.stdout == b"65534\n"
    r = api.rt.exec(cid, ["sh", "-c", "sleep 5 & echo $!"], capture_output=False,
                    stdout=subprocess.DEVNULL, detach=True)
    os.waitpid(r.pid, 0)  # sh exits at once; its sleep lives on in the container
    pids = api.rt.ps(cid)
    assert st.pid in pids and len(pids) == 2, pids
    api.rt.kill(cid)  # SIGTERM: a PID 1 without a handler ignores it
    api.rt.kill(cid, signal.SIGKILL)
    assert api.rt.wait(cid) == 128 + signal.SIGKILL
    assert api.rt.state(cid).status == "stopped"
    api.rt.delete(cid)
    with pytest.raises(ContainerNotFound) as e:
        api.rt.state(cid)
    assert e.value.id == cid and str(e.value) == f"container does not exist: {cid}"


def test_run_returns_exit_code_and_output(api, bundle):
    cid = api.new_id()
    b = sh(bundle, "echo out; echo err >&2; exit 7", cid)
    r = api.rt.run(cid, b, capture_output=True)
    assert (r.exit_code, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    assert api.rt.list() == []  # deleted: the fixture checks the state dir and cgroup too


def test_run_to_a_file_and_keep(api, bundle, tmp_path):
    cid = api.new_id()
    b = sh(bundle, "echo to-file; exit 9", cid)
    with open(tmp_path / "out", "wb") as out:
        r = api.rt.run(cid, b, stdout=out, keep=True)
    assert r.exit_code == 9 and r.stdout is None
    assert (tmp_path / "out").read_bytes() == b"to-file\n"
    assert api.rt.state(cid).status == "stopped"
    api.rt.delete(cid)


def test_list(api, bundle):
    ids = sorted(api.new_id() for _ in range(2))
    for cid in ids:
        api.rt.create(cid, sh(bundle, "sleep 30", cid))
    api.rt.start(ids[1])
    assert [(s.id, s.status) for s in api.rt.list()] == [(ids[0], "created"), (ids[1], "running")]
    for cid in ids:
        api.rt.delete(cid, force=True)
    assert api.rt.list() == []


def test_pause_resume(api, bundle):
    cid = api.new_id()
    api.rt.create(cid, sh(bundle, "while :; do sleep 0.05; done", cid))
    api.rt.start(cid)
    api.rt.pause(cid)
    st = api.rt.state(cid)
    assert st.status == "paused"
    assert open(cgroup_file(st.pid, "freezer", "freezer.state")).read().strip() == "FROZEN"
    with pytest.raises(ContainerStateError) as e:
        api.rt.exec(cid, ["true"])
    assert e.value.status == "paused"
    api.rt.resume(cid)
    assert api.rt.state(cid).status == "running"
    assert api.rt.exec(cid, ["true"]).exit_code == 0
    with pytest.raises(ContainerStateError, match="container not paused"):
        api.rt.resume(cid)
    api.rt.delete(cid, force=True)


def test_update(api, bundle):
    cid = api.new_id()
    st = api.rt.create(cid, sh(bundle, "sleep 30", cid))
    api.rt.start(cid)
    api.rt.update(cid, {"pids": {"limit": 17}, "memory": {"limit": 64 << 20},
                        "devices": [{"allow": True, "access": "rwm"}]})  # devices: not updatable
    assert open(cgroup_file(st.pid, "pids", "pids.max")).read().strip() == "17"
    assert int(open(cgroup_file(st.pid, "memory", "memory.limit_in_bytes")).read()) == 64 << 20
    api.rt.update(cid, {"pids": {"limit": 0}})  # 0: unchanged, as runc
    assert open(cgroup_file(st.pid, "pids", "pids.max")).read().strip() == "17"
    # seen from inside: an 18th process cannot be made
    r = api.rt.exec(cid, ["sh", "-c", "for i in $(seq 20); do sleep 1 & done; wait"],
                    capture_output=True)
    assert b"fork" in r.stderr, r
    api.rt.delete(cid, force=True)


def test_stats_and_events(api, bundle):
    cid = api.new_id()
    api.rt.create(cid, sh(bundle, "sleep 30", cid))
    api.rt.start(cid)
    stats = api.rt.stats(cid)
    assert stats["pids"]["current"] == 1, stats
    events = api.rt.events(cid, interval=0.05)
    first = next(events)
    assert isinstance(first, pyruntime.Event)
    assert (first.type, first.id, first.data["pids"]["current"]) == ("stats", cid, 1)
    assert json.loads(json.dumps(first.to_dict()))["type"] == "stats"
    api.rt.kill(cid, "KILL")
    deadline = time.monotonic() + 10
    for ev in events:  # the stream ends once the container stops
        assert ev.type == "stats" and time.monotonic() < deadline
    assert api.rt.wait(cid) == 137
    with pytest.raises(ContainerNotRunning, match="is not running"):
        api.rt.stats(cid)
    api.rt.delete(cid)


def test_exec_detached_is_the_callers_child(api, bundle):
    cid = api.new_id()
    api.rt.create(cid, sh(bundle, "sleep 30", cid))
    api.rt.start(cid)
    r = api.rt.exec(cid, ["sh", "-c", "exit 4"], detach=True)
    assert r.exit_code is None and r.pid > 0
    _, status = os.waitpid(r.pid, 0)  # the caller's to reap, as documented
    assert os.waitstatus_to_exitcode(status) == 4
    r = api.rt.exec(cid, process={"args": ["sh", "-c", "echo $A"], "env": ["A=from-json"],
                                  "cwd": "/"}, capture_output=True)
    assert r.stdout == b"from-json\n"
    api.rt.delete(cid, force=True)


# ================================================================ errors

def test_typed_errors_keep_runcs_wording():
    """containerd and Docker match these words: the classes change what Python code can
    catch, never what the CLI prints."""
    assert str(ContainerNotFound("a")) == "container does not exist: a"
    assert str(ContainerExists("a")) == "container with given ID already exists: a"
    e = ContainerNotRunning("a")
    assert (str(e), e.id, e.status) == ("container not running", "a", "stopped")
    assert isinstance(e, ContainerStateError) and isinstance(e, RuntimeFailure)
    e = ContainerStateError("a", "paused", "container paused")
    assert (str(e), e.status) == ("container paused", "paused")


def test_unknown_id(api):
    for call in (lambda: api.rt.state("nope"), lambda: api.rt.start("nope"),
                 lambda: api.rt.kill("nope"), lambda: api.rt.delete("nope"),
                 lambda: api.rt.exec("nope", ["true"]), lambda: api.rt.pause("nope"),
                 lambda: api.rt.update("nope", {}), lambda: api.rt.stats("nope")):
        with pytest.raises(ContainerNotFound, match="container does not exist: nope"):
            call()
    api.rt.delete("nope", force=True)  # force: no error, as runc's


def test_bad_bundle(api, bundle, tmp_path):
    cid = api.new_id()
    with pytest.raises(BundleError, match="config.json not found"):
        api.rt.create(cid, str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeFailure, match="stdio: -5 is not an open file"):
        api.rt.create(cid, sh(bundle, "true"), stdout=-5)
    bundle.config["linux"]["namespaces"][2]["type"] = "pidd"
    with pytest.raises(ConfigError) as e:
        api.rt.create(cid, sh(bundle, "true", cid))
    assert e.value.path == "linux.namespaces[2].type" and e.value.value == "pidd"
    assert str(e.value).startswith('config.json: linux.namespaces[2].type: "pidd" is not a '
                                   'namespace type')


def test_no_pid_namespace_is_refused_not_reexecuted(api, bundle):
    """The CLI re-executes itself from a sealed interpreter for such a container; the API must
    not replace its caller's process: it refuses, leaving nothing behind."""
    cid = api.new_id()
    ns = bundle.config["linux"]["namespaces"]
    ns[:] = [n for n in ns if n["type"] != "pid"]
    with pytest.raises(ConfigError, match="no new pid namespace"):
        api.rt.create(cid, sh(bundle, "true", cid))


def test_duplicate_id(api, bundle):
    cid = api.new_id()
    b = sh(bundle, "sleep 30", cid)
    first = api.rt.create(cid, b)
    with pytest.raises(ContainerExists) as e:
        api.rt.create(cid, b)
    assert e.value.id == cid and "container with given ID already exists" in str(e.value)
    assert api.rt.state(cid) == first  # untouched
    api.rt.delete(cid, force=True)


def test_status_errors(api, bundle):
    cid = api.new_id()
    api.rt.create(cid, sh(bundle, "sleep 30", cid))
    api.rt.start(cid)
    with pytest.raises(ContainerStateError) as e:
        api.rt.start(cid)
    assert e.value.status == "running"
    with pytest.raises(ContainerStateError, match="container still running") as e:
        api.rt.delete(cid)
    assert e.value.status == "running"
    api.rt.kill(cid, "KILL")
    api.rt.wait(cid)
    for call in (lambda: api.rt.kill(cid), lambda: api.rt.exec(cid, ["true"]),
                 lambda: api.rt.pause(cid), lambda: api.rt.update(cid, {})):
        with pytest.raises(ContainerNotRunning, match="container not running"):
            call()
    with pytest.raises(ContainerNotRunning, match="reaped already"):
        api.rt.wait(cid)
    with pytest.raises(RuntimeFailure, match="invalid signal"):
        api.rt.kill(cid, "SIGNOPE")
    api.rt.delete(cid)


# ================================================================ the caller's side

SUBREAPER_SCRIPT = """
import ctypes, os, sys, pyruntime
def subreaper():
    flag = ctypes.c_int()
    assert ctypes.CDLL(None).prctl(37, ctypes.byref(flag), 0, 0, 0) == 0  # PR_GET_CHILD_SUBREAPER
    return flag.value
assert not subreaper()
rt = pyruntime.Runtime(root=sys.argv[2])
assert not subreaper()  # not before a container needs it
r = rt.run(sys.argv[3], sys.argv[1], capture_output=True)
print(r.exit_code, r.stdout.decode().strip(), subreaper())
try:
    os.waitpid(-1, os.WNOHANG)
    print("children left")
except ChildProcessError:
    print("no children left")
"""


def test_runtime_makes_its_caller_the_subreaper(bundle, tmp_path):
    """In a fresh process (pytest's worker is a subreaper already): `run` reaps the init
    because the Runtime made the process a child subreaper, and leaves no child."""
    b = sh(bundle, "echo $$")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cid = f"api-{uuid.uuid4().hex[:12]}"
    p = subprocess.run([sys.executable, "-c", SUBREAPER_SCRIPT, b, str(tmp_path / "state"), cid],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["0 1 1", "no children left"], p.stdout
    assert not _cgroups_named(cid) and not os.listdir(tmp_path / "state")


def test_import_pyruntime_does_not_load_the_api():
    code = ("import sys, pyruntime; assert 'pyruntime.api' not in sys.modules; "
            "pyruntime.Runtime; assert 'pyruntime.api' in sys.modules")
    subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                    + code], check=True, timeout=30)


def test_docstring_examples_run():
    """The examples in pyruntime/api.py's docstrings, as doctests (root and a busybox)."""
    from pyruntime import api
    result = doctest.testmod(api, optionflags=doctest.ELLIPSIS, raise_on_error=False)
    assert result.attempted >= 20 and result.failed == 0, result
