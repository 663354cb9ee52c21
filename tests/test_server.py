"""The warm server (`pyruntime server`, pyruntime/server/): what it serves, that the init stays
the caller's child, that it is safe to talk to and safe to kill, and that clients fall back."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import SERVER_MODE, Server, children_of, is_pyruntime
from corehelp import assert_in_cgroup_everywhere, ppid_of, set_sh

pytestmark = pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own server")


@pytest.fixture
def server(runtime, tmp_path, request):
    """A server for the test's --root (the one SERVER_MODE starts anyway, else our own)."""
    if SERVER_MODE:
        pytest.skip("PYRUNTIME_TEST_SERVER starts a server for every test: these start their own")
    s = Server(runtime, tmp_path / "own-server.log")
    yield s
    if s.proc.poll() is None:
        s.stop(request.node.nodeid)


def served(s: Server, expect: int = 0) -> list[str]:
    """The server's "served" lines, waited for until there are `expect` of them: the server
    writes one after its client has had the answer, and may have exited."""
    deadline = time.monotonic() + 5
    while True:
        lines = [ln for ln in s.out.read_text(errors="replace").splitlines()
                 if ": served in " in ln]
        if len(lines) >= expect or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def request(sock_path, payload: bytes) -> dict | None:
    """One raw message to the server; its answer (None at EOF)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as c:
        c.connect(str(sock_path))
        c.send(payload)
        c.settimeout(10)
        data = c.recv(1 << 16)
    return json.loads(data) if data else None


def create_msg(runtime, bundle, cid, over=None) -> bytes:
    from pyruntime.server import wire
    msg = {"type": wire.CREATE, "version": wire.VERSION, "id": cid, "root": str(runtime.root),
           "bundle": str(bundle.path), "preserve_fds": 0, "no_new_keyring": False,
           "console": False, "command": "create", "client_cwd": "/"}
    msg.update(over or {})
    return json.dumps(msg).encode()


def test_serves_create_and_the_init_is_the_callers_child(runtime, bundle, server):
    set_sh(bundle, "sleep 30")
    cid = runtime.create(bundle)
    assert len(served(server, 1)) == 1
    pid = runtime.state(cid)["pid"]
    # the client forked it and exited: it went to our reaper (pytest is a subreaper), never
    # to the server
    assert ppid_of(pid) == os.getpid()
    assert ppid_of(pid) != server.proc.pid
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    assert "NSpid:" in status and status.split("NSpid:")[1].split()[1] == "1"  # PID 1 inside
    runtime("start", cid)
    runtime("kill", cid, "KILL")
    runtime.wait_stopped(cid)
    runtime("delete", cid)


def test_run_inherits_the_callers_stdio_and_exit_code(runtime, bundle, server):
    set_sh(bundle, "echo out-$(hostname); echo err >&2; exit 7")
    proc = runtime.run(bundle, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "out-pyruntime\n", "err\n")
    assert len(served(server, 1)) == 1


def test_preserved_fds_and_listen_fds_reach_the_init(runtime, bundle, server, tmp_path):
    set_sh(bundle, 'echo "$LISTEN_FDS $(cat /proc/self/fd/3)"')
    r, w = os.pipe()
    os.write(w, b"through-fd-3")
    os.close(w)
    try:  # a shell makes the pipe the client's fd 3 (ours belongs to pytest)
        proc = subprocess.run(["bash", "-c", f'exec 3<&{r} {r}<&-; exec "$@"', "bash",
                               *runtime.cmd("run", "--preserve-fds", "1", "--bundle",
                                            bundle.path, runtime.new_id())],
                              pass_fds=(r,), capture_output=True, text=True, timeout=60)
    finally:
        os.close(r)
    assert proc.stdout == "1 through-fd-3\n", proc.stderr
    assert len(served(server, 1)) == 1


def test_what_it_does_not_serve_runs_in_process(runtime, bundle, server):
    bundle.config["linux"]["namespaces"] = [n for n in bundle.config["linux"]["namespaces"]
                                            if n["type"] != "pid"]
    set_sh(bundle, "echo in-process")
    assert runtime.run(bundle).stdout == "in-process\n"
    log = server.out.read_text()
    assert served(server) == [] and ": refused: no new pid namespace" in log


def test_config_errors_are_the_in_process_ones(runtime, bundle, server, tmp_path):
    bundle.config["mounts"][0]["options"] = ["rrox"]
    bundle.write()
    cid = runtime.new_id()
    ours = runtime("create", "--bundle", bundle.path, cid, check=False)
    alone = runtime("create", "--bundle", bundle.path, cid, check=False,
                    env=dict(os.environ, PYRUNTIME_NO_SERVER="1"))
    assert ours.returncode == alone.returncode == 1
    assert ours.stderr == alone.stderr and "rrox" in ours.stderr
    assert ": failed: " in server.out.read_text()
    assert runtime.state_dirs() == []


def test_socket_is_root_only(runtime, server):
    d = server.sock.parent
    assert (d.stat().st_mode & 0o777, d.stat().st_uid) == (0o700, os.geteuid())
    assert server.sock.stat().st_mode & 0o777 == 0o600


def test_refuses_a_peer_of_another_uid(runtime, bundle, server):
    """SO_PEERCRED: even where the socket could be reached (here through a hard link in a
    directory anyone may enter, the socket's mode loosened on purpose), another user gets
    REFUSED and nothing is made."""
    import tempfile
    os.chmod(server.sock, 0o666)
    msg = create_msg(runtime, bundle, runtime.new_id())
    reach = tempfile.mkdtemp(prefix="pyrt-peer-")
    os.chmod(reach, 0o755)
    link = os.path.join(reach, "sock")
    os.link(server.sock, link)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            answer = request(link, msg)
            os.write(w, json.dumps(answer).encode())
        except BaseException as e:
            os.write(w, json.dumps({"type": "child failed", "reason": repr(e)}).encode())
        finally:
            os._exit(0)
    os.close(w)
    answer = json.loads(os.read(r, 1 << 16) or b"null")
    os.close(r)
    os.waitpid(pid, 0)
    os.unlink(link)
    os.rmdir(reach)
    assert answer["type"] == "refused" and "uid 65534" in answer["reason"], answer
    assert runtime.state_dirs() == []


@pytest.mark.parametrize("payload", [
    b"\xff\xfe not json", b"[1, 2]", b'{"type": "create"}', b'{"type": "nonsense"}',
    "version", "id", "bundle", "preserve_fds"])
def test_malformed_or_foreign_messages_are_refused(runtime, bundle, server, payload):
    """Another version, garbage, wrong types: REFUSED or a closed connection, nothing made, and
    the server goes on serving."""
    cid = runtime.new_id()
    if isinstance(payload, str):  # one field of a good message spoilt
        payload = create_msg(runtime, bundle, cid, {
            "version": {"version": "0.0.0/0/cpython-00"}, "id": {"id": 7},
            "bundle": {"bundle": "relative/path"}, "preserve_fds": {"preserve_fds": -1},
        }[payload])
    answer = request(server.sock, payload)
    assert answer is None or answer["type"] == "refused", answer
    assert runtime.state_dirs() == []
    set_sh(bundle, "echo still-serving")
    assert runtime.run(bundle).stdout == "still-serving\n"
    assert len(served(server, 1)) == 1
    assert "internal error" not in server.out.read_text()


def test_a_stale_socket_is_replaced_and_clients_fall_back_meanwhile(runtime, bundle, server,
                                                                     tmp_path, request):
    server.proc.kill()  # no chance to clean up: its socket stays
    server.proc.wait()
    assert server.sock.exists()
    set_sh(bundle, "echo fell-back")
    assert runtime.run(bundle).stdout == "fell-back\n"  # ECONNREFUSED: in-process
    again = Server(runtime, tmp_path / "again.log")
    try:
        assert runtime.run(bundle).stdout == "fell-back\n"
        assert len(served(again)) == 1
        second = subprocess.run([runtime.binary, "--root", str(runtime.root), "server"],
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert second.stderr.strip().endswith(f"a server already serves {runtime.root} "
                                              f"({again.sock})")
    finally:
        again.stop(request.node.nodeid)


def test_concurrent_creates(runtime, bundle, server):
    set_sh(bundle, "sleep 30")
    ids = [runtime.new_id() for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda cid: runtime.create(bundle, cid), ids))
    assert len(served(server, 6)) == 6
    pids = {runtime.state(cid)["pid"] for cid in ids}
    assert len(pids) == 6
    for cid in ids:
        assert runtime.state(cid)["status"] == "created"
        runtime("delete", "--force", cid)


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.01, 0.02, 0.04, 0.08])
def test_killing_the_server_mid_create_leaves_the_container_whole_or_gone(runtime, bundle, server,
                                                                           tmp_path, delay):
    """kill -9 the server at some instant of a create (a createRuntime hook holds it for a
    while): the client says nothing and runs the create in-process, after removing what the
    dead server made; the container is then fully there, and startable, or fully gone."""
    hook = tmp_path / "slow-hook.sh"
    hook.write_text("#!/bin/sh\nsleep 0.1\n")
    hook.chmod(0o755)
    bundle.config["hooks"] = {"createRuntime": [{"path": str(hook)}]}
    set_sh(bundle, "echo started")
    cid = runtime.new_id()
    bundle.config["linux"]["cgroupsPath"] = f"/pyrt-test/{cid}"
    bundle.write()
    with open(tmp_path / "create.err", "w") as err:
        client = subprocess.Popen(runtime.cmd("create", "--bundle", bundle.path, cid),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        time.sleep(delay)
        server.proc.send_signal(signal.SIGKILL)
        # Meanwhile reap what the dead server's children leave us, as a shim's reaper does
        # (we are the subreaper): the preparer in the init's pid namespace goes to us, and
        # the init's end waits until it is reaped.
        deadline = time.monotonic() + 60
        while client.poll() is None:
            assert time.monotonic() < deadline, "create hung"
            for kid in children_of(os.getpid()):
                if kid not in (client.pid, server.proc.pid):
                    try:
                        os.waitpid(kid, os.WNOHANG)
                    except ChildProcessError:
                        pass
            time.sleep(0.005)
        rc = client.returncode
    server.proc.wait()
    state = runtime("state", cid, check=False)
    err = (tmp_path / "create.err").read_text()
    if rc == 0:
        assert json.loads(state.stdout)["status"] == "created"
        runtime("start", cid)
        runtime.wait_stopped(cid)
        runtime("delete", cid)
    else:
        assert state.returncode != 0, err
    assert runtime.state_dirs() == [], (rc, err, state.stderr)
    assert err == ""
    # (the leak check: no process, cgroup or mount of it left)


@pytest.mark.parametrize("delay", [0.004, 0.008, 0.012, 0.016, 0.024, 0.04])
def test_killing_the_server_mid_exec_leaves_nothing(runtime, bundle, server, tmp_path, delay):
    """kill -9 the server at some instant of an `exec`: the exec either ran (served, or in
    process after the server went before its GO) or exits 255 with one line, as for exec's
    own failures; either way the container runs on with nothing of the exec left in it."""
    cid = runtime.new_id()
    bundle.config["linux"]["cgroupsPath"] = f"/pyrt-test/{cid}"
    set_sh(bundle, "sleep 30")
    runtime.create(bundle, cid)
    runtime("start", cid)
    init = runtime.state(cid)["pid"]
    with open(tmp_path / "exec.err", "w") as err:
        client = subprocess.Popen(runtime.cmd("exec", cid, "sh", "-c", "exit 3"),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        time.sleep(delay)
        server.proc.send_signal(signal.SIGKILL)
        rc = client.wait(timeout=60)
    server.proc.wait()
    err = (tmp_path / "exec.err").read_text()
    assert rc in (3, 255), (rc, err)
    assert "Traceback" not in err and len(err.splitlines()) == (rc == 255), err
    procs = f"/sys/fs/cgroup/pids/pyrt-test/{cid}/cgroup.procs"
    deadline = time.monotonic() + 5
    while open(procs).read().split() != [str(init)]:
        assert time.monotonic() < deadline, open(procs).read()
        time.sleep(0.01)
    assert runtime.state(cid)["status"] == "running"
    runtime("delete", "--force", cid)
    assert runtime.state_dirs() == []


def test_stops_on_sigterm_and_leaves_nothing(runtime, server, request):
    server.stop(request.node.nodeid)
    assert not server.sock.parent.exists()
    assert runtime.state_dirs() == []


def test_serves_exec_with_runcs_exit_codes(runtime, bundle, server, tmp_path):
    cid = runtime.new_id()
    bundle.config["linux"]["cgroupsPath"] = f"/pyrt-test/{cid}"
    set_sh(bundle, "sleep 30")
    runtime.create(bundle, cid)
    runtime("start", cid)
    proc = runtime("exec", cid, "sh", "-c", "echo in-$(hostname); exit 5", check=False)
    assert (proc.returncode, proc.stdout) == (5, "in-pyruntime\n")
    missing = runtime("exec", cid, "no-such-program", check=False)
    alone = runtime("exec", cid, "no-such-program", check=False,
                    env=dict(os.environ, PYRUNTIME_NO_SERVER="1"))
    assert missing.returncode == alone.returncode == 255  # exec's own failure, as runc
    assert missing.stderr == alone.stderr
    pid_file = tmp_path / "exec.pid"
    runtime("exec", "--detach", "--pid-file", pid_file, cid, "sleep", "30",
            capture_output=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)  # (it holds what it is given: no pipe of ours)
    pid = int(pid_file.read_text())
    assert ppid_of(pid) == os.getpid()  # our subreaper's: never the server's
    assert_in_cgroup_everywhere(pid, f"/pyrt-test/{cid}")
    assert len(served(server, 3)) == 3  # create, exec, exec --detach
    runtime("delete", "--force", cid)


def test_hooks_run_in_the_callers_cwd(runtime, bundle, server, tmp_path):
    """prestart and createRuntime run in the server, in the client's cwd, as in-process."""
    out = tmp_path / "hook-cwd"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\npwd >> {out}\n")
    hook.chmod(0o755)
    bundle.config["hooks"] = {"prestart": [{"path": str(hook)}],
                              "createRuntime": [{"path": str(hook)}]}
    set_sh(bundle, "true")
    where = tmp_path / "elsewhere"
    where.mkdir()
    runtime.run(bundle, cwd=where)
    assert out.read_text() == f"{where}\n{where}\n"
    assert len(served(server, 1)) == 1


def test_the_preparer_holds_no_other_requests_fds(runtime, bundle, server, tmp_path):
    """The preparer is forked from a thread of the server, which holds its listening socket,
    the client's connection, the init's channel and any other request's: it keeps only its
    own channel of those, seen from a createContainer hook (the preparer is its parent)."""
    out = tmp_path / "preparer-fds"
    hook = tmp_path / "hook.sh"
    # cwd: the rootfs, whose /proc is the container's, where $PPID (the preparer) is 2
    hook.write_text(f"#!/bin/sh\nls -l ./proc/$PPID/fd > {out}\n")
    hook.chmod(0o755)
    bundle.config["hooks"] = {"createContainer": [{"path": str(hook)}]}
    set_sh(bundle, "true")
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    idle.connect(str(server.sock))  # a request in flight: one more connection in the server
    try:
        runtime.run(bundle)
    finally:
        idle.close()
    assert len(served(server, 1)) == 1
    links = [ln.split(" -> ")[1] for ln in out.read_text().splitlines() if " -> " in ln]
    assert len(links) >= 3, out.read_text()  # stdio and the channel at least
    assert sum(link.startswith("socket:") for link in links) == 1, out.read_text()


@pytest.mark.parametrize("hook", [False, True], ids=["preparer-first", "createContainer-hook"])
def test_the_containers_proc_is_its_pid_namespaces(runtime, bundle, server, tmp_path, hook):
    """Without createContainer hooks the preparer is forked before the init, outside its pid
    namespace, and mounts /proc from a context the init made inside it (its data options
    too); with one, the preparer is forked into that namespace, as the hook must run there.
    Either way the container's /proc shows its own processes, PID 1 first."""
    proc = next(m for m in bundle.config["mounts"] if m["type"] == "proc")
    proc["options"] = ["nosuid", "noexec", "nodev", "hidepid=2"]
    if hook:
        script = tmp_path / "hook.sh"
        script.write_text("#!/bin/sh\ntrue\n")
        script.chmod(0o755)
        bundle.config["hooks"] = {"createContainer": [{"path": str(script)}]}
    set_sh(bundle, "echo $(ls /proc | grep -c '^[0-9]') $(cut -d' ' -f1,2 /proc/1/stat); "
                   "grep ' /proc ' /proc/mounts")
    out = runtime.run(bundle).stdout
    assert out.split("\n")[0] in ("3 1 (sh)", "4 1 (sh)"), out  # sh, ls, grep (and cut)
    assert out.split("\n")[1].startswith("proc /proc proc rw,nosuid,nodev,noexec"), out
    assert "hidepid" in out, out
    assert len(served(server, 1)) == 1
    log = server.out.read_text()
    expect = "into the init's pid namespace" if hook else "before the init, outside"
    assert f"forked {expect}" in log, log[-2000:]
