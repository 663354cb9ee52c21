"""The CLI's shape: global flags, --log, --version, spec, list, state."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Bundle, is_pyruntime
from corehelp import assert_failed, assert_no_traceback, parse_rfc3339, set_sh


def raw(runtime, *args, **kw):
    """Run the runtime binary with exactly these args (no automatic --root)."""
    kw.setdefault("capture_output", True)
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([runtime.binary, *map(str, args)], text=True, timeout=60, **kw)


def quiet(**kw):
    """Keyword args for a `create` whose init must not hold our pipes."""
    return dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                capture_output=False, **kw)


# ================================================================ global flags

def test_global_root_flag_forms(runtime, bundle, tmp_path):
    root = tmp_path / "state"   # == runtime.root, so the teardown finds what we leave
    set_sh(bundle, "sleep 30")
    cid = runtime.new_id()
    assert raw(runtime, f"--root={root}", "create", "--bundle", bundle.path, cid, **quiet()).returncode == 0
    assert root.is_dir()
    for form in (["--root", root], [f"--root={root}"], ["-root", root], [f"-root={root}"]):
        proc = raw(runtime, *form, "state", cid)
        assert proc.returncode == 0, (form, proc.stderr)
        assert json.loads(proc.stdout)["id"] == cid
    assert raw(runtime, "-root", root, "delete", "--force", cid).returncode == 0
    assert not (root / cid).exists()


def test_root_is_created_if_missing(runtime, bundle, tmp_path):
    root = tmp_path / "deep" / "er" / "root"
    cid = runtime.new_id()
    proc = raw(runtime, "--root", root, "run", "--bundle", bundle.path, cid)
    assert proc.returncode == 0, proc.stderr
    assert root.is_dir()
    assert list(root.iterdir()) == []


def test_log_json_lines(runtime, tmp_path):
    log = tmp_path / "log.json"
    proc = runtime("state", "no-such-container", check=False,
                   global_args=("--log", log, "--log-format", "json"))
    assert_failed(proc, "does not exist")
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert lines
    for rec in lines:
        assert {"level", "msg", "time"} <= set(rec), rec
        parse_rfc3339(rec["time"])
    errors = [r for r in lines if r["level"] == "error"]
    assert errors and "does not exist" in errors[-1]["msg"]


def test_log_json_with_equals_form(runtime, tmp_path):
    log = tmp_path / "log2.json"
    proc = runtime("kill", "no-such-container", "9", check=False,
                   global_args=(f"--log={log}", "--log-format=json"))
    assert_failed(proc, "does not exist")
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["level"] == "error" and "does not exist" in last["msg"]


def test_log_file_created_on_success(runtime, bundle, tmp_path):
    log = tmp_path / "ok.log"
    runtime.run(bundle, None, global_args=("--log", log, "--log-format", "json"))
    assert log.exists()
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        assert rec["level"] != "error", rec


def test_log_text_format(runtime, tmp_path):
    log = tmp_path / "log.txt"
    proc = runtime("state", "no-such-container", check=False,
                   global_args=("--log", log, "--log-format", "text"))
    assert_failed(proc, "does not exist")
    text = log.read_text()
    assert "does not exist" in text and "level=error" in text


DEBUG_STEPS = ["config.json loaded", "cgroup made", "nsexec container setup",
               "child process in init()", "init: mounting /proc", "init: switching root",
               "init: closing the pipe to signal completion"]


def test_debug_flag_is_accepted(runtime, bundle):
    proc = runtime("run", "--bundle", bundle.path, runtime.new_id(), global_args=("--debug",))
    assert proc.returncode == 0
    assert_no_traceback(proc)


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own step names (runc's differ)")
@pytest.mark.parametrize("fmt", [None, "text", "json"])
def test_debug_lines_for_each_setup_step(runtime, bundle, tmp_path, fmt):
    """runc's --debug: level=debug lines on stderr, or only in --log (text or json)."""
    set_sh(bundle, "echo hello")
    log = tmp_path / "log.out"
    flags = ("--debug",) if fmt is None else ("--debug", "--log", log, "--log-format", fmt)
    proc = runtime("run", "--bundle", bundle.path, runtime.new_id(), global_args=flags)
    assert proc.stdout == "hello\n"
    if fmt is None:
        text = proc.stderr
        records = [dict(kv.split("=", 1) for kv in (line.split(" ", 2)[:2]))
                   for line in text.splitlines()]
        assert records and all(r["level"] == "debug" for r in records), text
    else:
        assert "level=debug" not in proc.stderr and "debug" not in proc.stderr
        text = log.read_text()
        if fmt == "json":
            lines = [json.loads(line) for line in text.splitlines()]
            assert all(r["level"] == "debug" and r["time"] for r in lines)
            assert text.startswith('{"level":"debug","msg":')  # logrus's compact JSON
            text = "\n".join(r["msg"] for r in lines)
        else:
            assert all(" level=debug msg=" in line for line in text.splitlines()), text
    for step in DEBUG_STEPS:
        assert step in text, (step, text)


@pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed")
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_escape_as_runcs(runtime, tmp_path, fmt):
    """A message quoting odd input (here a bundle path: <, non-ASCII, controls, a quote, a
    byte that is not UTF-8, U+2028) is escaped in --log as runc's logrus escapes it."""
    odd = os.fsencode(f"{tmp_path}/no<\u00e9>\x01\t\"q") + b"\xff" + "\u2028".encode()
    logs = {}
    for name, cmd in (("runc", ["runc", "--root", tmp_path / "runc-state"]),
                      ("ours", runtime.cmd())):
        log = tmp_path / f"{name}.log"
        subprocess.run([*map(os.fsencode, cmd), b"--log", os.fsencode(log), b"--log-format",
                        fmt.encode(), b"create", b"--bundle", odd, runtime.new_id().encode()],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        logs[name] = log.read_bytes()
    escaped = {"text": '<\u00e9>\\x01\\t\\"q\\xff\\u2028',
               "json": '\\u003c\u00e9\\u003e\\u0001\\t\\"q\\ufffd\\u2028'}[fmt].encode()
    assert b"/no" + escaped in logs["runc"], logs["runc"]
    assert b"/no" + escaped in logs["ours"], logs["ours"]


NSEXEC_LINE = re.compile(r"nsexec(-[0-2])?\[(\d+)\]: ")


def debug_pids_shape(stderr: str) -> list[tuple[str, int]]:
    """runc's shape of a --debug run's lines: a pid only in the namespace setup's lines, as
    `nsexec-STAGE[pid]: `, none elsewhere (no `[1]` on the init's own lines). Returns the
    (stage, pid) of the nsexec lines."""
    found = []
    for line in stderr.splitlines():
        msg = json.loads(line.split(" msg=", 1)[1].split(" func=", 1)[0])
        m = NSEXEC_LINE.match(msg)
        if m:
            found.append((m.group(1) or "", int(m.group(2))))
        else:
            assert not re.match(r"\[\d+\]", msg), line
    return found


@pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed")
def test_debug_lines_have_runcs_pid_shape(runtime, bundle, tmp_path):
    set_sh(bundle, "true")
    # the check itself, on runc's lines
    runc = subprocess.run(["runc", "--root", tmp_path / "runc-state", "--debug", "run", "--bundle",
                           bundle.path, runtime.new_id()], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, check=True)
    assert ("-2", 1) in debug_pids_shape(runc.stderr), runc.stderr
    proc = runtime("run", "--bundle", bundle.path, runtime.new_id(), global_args=("--debug",))
    nsexec = debug_pids_shape(proc.stderr)
    assert nsexec and "child process in init()" in proc.stderr, proc.stderr
    if is_pyruntime():  # the bootstrap child's own lines carry the pid its parent reports
        child = int(re.search(r"bootstrap child (\d+) put", proc.stderr).group(1))
        assert ("-1", child) in nsexec, proc.stderr


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own step names (runc's differ)")
def test_debug_lines_of_a_terminal_run_in_the_foreground(runtime, bundle):
    """`run` of a terminal container waits for it: the init's lines after `start` still come."""
    set_sh(bundle, "true", terminal=True)
    script = " ".join(f"'{a}'" for a in runtime.cmd("run", "--bundle", bundle.path,
                                                      runtime.new_id(), global_args=("--debug",)))
    proc = subprocess.run(["script", "-qefc", f"{script} 2>&1", "/dev/null"], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout
    assert "init: closing the pipe to signal completion" in proc.stdout, proc.stdout


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own step names (runc's differ)")
def test_debug_lines_of_exec(runtime, bundle, tmp_path):
    set_sh(bundle, "sleep 30")
    cid = runtime.create(bundle)
    runtime("start", cid)
    proc = runtime("exec", cid, "true", global_args=("--debug",), stdin=subprocess.DEVNULL)
    for step in ("nsexec container setup", "child process in init()", "setns_init: about to exec"):
        assert step in proc.stderr, (step, proc.stderr)
    log = tmp_path / "exec.log"
    proc = runtime("exec", cid, "true", global_args=("--debug", "--log", log),
                   stdin=subprocess.DEVNULL)
    assert "debug" not in proc.stderr and "setns_init: about to exec" in log.read_text()
    runtime("delete", "--force", cid)


def test_debug_to_stderr_does_not_hold_the_callers_stderr(runtime, bundle):
    # The init of a terminal container waits for `start` with the console as its stderr: a
    # copy of create's stderr kept for debug lines would keep the caller from seeing EOF.
    from corehelp import ConsoleSocket
    set_sh(bundle, "sleep 30", terminal=True)
    cs = ConsoleSocket()
    try:
        proc = runtime("create", "--bundle", bundle.path, "--console-socket", cs.path,
                       runtime.new_id(), global_args=("--debug",), timeout=20,
                       stdin=subprocess.DEVNULL)
        assert "level=debug" in proc.stderr
    finally:
        cs.close()


def test_version():
    from conftest import runtime_binary
    proc = subprocess.run([runtime_binary(), "--version"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("runc version "), lines
    assert len(lines[0].split()) >= 3
    assert any(line.startswith("commit:") for line in lines[1:]), lines
    spec = [line for line in lines if line.startswith("spec: ")]
    assert spec, lines
    if is_pyruntime():
        assert lines[1].startswith("commit:")
        assert spec[0] == "spec: 1.3.0"


def test_unknown_subcommand_and_flag(runtime):
    assert_failed(runtime("frobnicate", check=False))
    assert_failed(runtime("state", "--no-such-flag", "x", check=False))


def test_help_in_runcs_shape(runtime):
    # urfave/cli's layout, as runc prints it: runc's help.bats and tools read these lines
    for args in (["-h"], ["--help"], ["help"]):
        proc = raw(runtime, *args)
        assert proc.returncode == 0, (args, proc.stderr)
        lines = proc.stdout.splitlines()
        assert lines[0] == "NAME:" and "runc - Open Container Initiative runtime" in lines[1]
        assert ["spec", "create a new specification file"] in [ln.split(None, 1) for ln in lines]
    commands = ["checkpoint", "create", "delete", "events", "exec", "kill", "list", "pause", "ps",
                "restore", "resume", "run", "spec", "start", "state", "update"]
    for cmd in commands:
        for args in ([cmd, "-h"], [cmd, "--help"], ["help", cmd]):
            proc = raw(runtime, *args)
            assert proc.returncode == 0, (args, proc.stderr)
            lines = proc.stdout.splitlines()
            assert lines[0] == "NAME:" and lines[1].startswith(f"   runc {cmd} - "), (args, lines)
            assert lines[3] == "USAGE:"
    lst = raw(runtime, "list", "--help").stdout
    assert "   --quiet, -q " in lst and '--format value, -f value  select one of' in lst
    for args in (["foo", "-h"], ["help", "foo"], ["foo"]):
        proc = raw(runtime, *args)
        assert proc.returncode == 3 and "No help topic for 'foo'" in proc.stderr, args


def test_missing_container_id(runtime):
    for cmd in ("state", "start", "delete", "kill"):
        assert_failed(runtime(cmd, check=False))


# ================================================================ spec

def test_spec_default(runtime, tmp_path):
    d = tmp_path / "specdir"
    d.mkdir()
    proc = raw(runtime, "spec", cwd=d)
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["process"]["args"] == ["sh"]
    assert cfg["process"]["terminal"] is True
    assert cfg["root"] == {"path": "rootfs", "readonly": True}
    # exactly runc's: a cgroup namespace only on a cgroup2-only host
    unified = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    assert [n["type"] for n in cfg["linux"]["namespaces"]] == \
        ["pid", "network", "ipc", "uts", "mount"] + ["cgroup"] * unified
    assert [m["destination"] for m in cfg["mounts"]][:6] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"]
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"]
    assert "/proc/sys" in cfg["linux"]["readonlyPaths"]
    assert cfg["process"]["capabilities"]["bounding"] == ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    assert cfg["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert cfg["process"]["noNewPrivileges"] is True
    if is_pyruntime():
        assert cfg["ociVersion"] == "1.3.0"
    # a second spec refuses to overwrite
    again = raw(runtime, "spec", cwd=d)
    assert_failed(again, "exists")


def test_spec_rootless_and_bundle(runtime, tmp_path):
    d = tmp_path / "rootless"
    d.mkdir()
    proc = raw(runtime, "spec", "--rootless", "--bundle", d)
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((d / "config.json").read_text())
    types = [n["type"] for n in cfg["linux"]["namespaces"]]
    assert "user" in types and "network" not in types
    assert cfg["linux"]["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert cfg["linux"]["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    assert "resources" not in cfg["linux"]


def test_spec_output_runs(runtime, bundle):
    """The default spec, with a non-terminal process, runs the busybox rootfs."""
    d = bundle.path
    (d / "config.json").unlink()
    assert raw(runtime, "spec", "-b", d).returncode == 0
    cfg = json.loads((d / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["sh", "-c", "hostname; touch /x 2>/dev/null || echo readonly"]
    bundle.write(cfg)
    out = runtime.run(bundle).stdout.split()
    assert out[1] == "readonly"
    if not is_pyruntime():
        assert out[0] == "runc"


# ================================================================ list and state

def test_list_formats(runtime, bundle):
    set_sh(bundle, "sleep 30")
    a = runtime.create(bundle)
    b = runtime.create(bundle)
    runtime("start", b)

    table = runtime("list").stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert set(rows) == {a, b}
    assert rows[a][2] == "created" and rows[b][2] == "running"
    assert rows[a][1] == str(runtime.state(a)["pid"])
    assert rows[a][3] == str(bundle.path)

    assert sorted(runtime("list", "-q").stdout.split()) == sorted([a, b])

    out = runtime("list", "--format", "json").stdout
    js = json.loads(out)
    # runc's shape: compact, its field order, empty annotations left out
    assert out.startswith('[{"ociVersion":"') and '"annotations"' not in out
    assert list(js[0]) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created",
                           "owner"]
    by_id = {c["id"]: c for c in js}
    assert set(by_id) == {a, b}
    assert by_id[b]["status"] == "running"
    for c in js:
        for key in ("id", "pid", "status", "bundle", "rootfs", "created", "owner"):
            assert key in c
        assert c["bundle"] == str(bundle.path)
        assert c["rootfs"] == str(bundle.rootfs)
        assert c["owner"] == "root"
        parse_rfc3339(c["created"])
    assert rows[a][5] == "root"
    js2 = json.loads(runtime("list", "--format=json").stdout)
    assert {c["id"] for c in js2} == {a, b}
    runtime("delete", "--force", a)
    runtime("delete", "--force", b)


TRICKY = "x<y>&z \u2028\u2029 \u00e9 \b\f\x7f\x01 \t\n\"\\ \U0001f600 \ufffd"
# runc 1.1.5's bytes for TRICKY (Go's encoding/json: UTF-8, HTML-safe, \u00XX controls)
TRICKY_GO = ('"x\\u003cy\\u003e\\u0026z \\u2028\\u2029 \u00e9 \\u0008\\u000c\x7f\\u0001 '
             '\\t\\n\\"\\\\ \U0001f600 \ufffd"')


@pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed")
def test_list_and_state_json_strings_as_runc_writes_them(runtime, tmp_path, rootfs_template):
    """list --format json and state escape <, >, & (in annotations, the bundle path) and write
    non-ASCII as UTF-8, byte for byte as runc does for the same container."""
    bundle = Bundle(tmp_path / "b<&>", rootfs_template)
    bundle.config["annotations"] = {"k<&>": TRICKY}
    set_sh(bundle, "sleep 30")
    runc_root = tmp_path / "runc-state"
    runc_id = runtime.new_id()
    mine = runtime.create(bundle)
    subprocess.run(["runc", "--root", runc_root, "create", "--bundle", bundle.path, runc_id],
                   check=True, timeout=60, **quiet())

    def out(cmd):
        return subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout

    def norm(raw: bytes, cid: str) -> bytes:
        """Only what differs by nature: id, pid, creation time, runtime version."""
        js = json.loads(raw)
        for c in js if isinstance(js, list) else [js]:
            for key, value in (("id", cid), ("pid", 0), ("created", ""), ("ociVersion", "")):
                raw = raw.replace(json.dumps(c[key]).encode(), json.dumps(value).encode(), 1)
        return raw

    try:
        theirs = out(["runc", "--root", runc_root, "list", "--format", "json"])
        ours = out(runtime.cmd("list", "--format", "json"))
        assert TRICKY_GO.encode() in theirs, theirs
        assert norm(ours, "c") == norm(theirs, "c")
        theirs = out(["runc", "--root", runc_root, "state", runc_id])
        ours = out(runtime.cmd("state", mine))
        # runc's state has no newline and no owner; the rest is the same
        ours = ours.rstrip(b"\n").replace(b'"owner": "root"', b'"owner": ""')
        assert norm(ours, "c") == norm(theirs, "c")
    finally:
        subprocess.run(["runc", "--root", runc_root, "delete", "--force", runc_id],
                       capture_output=True, timeout=60)
        runtime("delete", "--force", mine)


def test_list_empty(runtime):
    out = runtime("list").stdout.splitlines()
    assert out[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert out[1:] == []
    assert runtime("list", "--format", "json").stdout == "null\n"   # runc's shape
    assert runtime("list", "-q").stdout.strip() == ""


def test_list_skips_foreign_dirs(runtime, bundle):
    set_sh(bundle, "sleep 30")
    cid = runtime.create(bundle)
    junk = runtime.root / "not-a-container"
    junk.mkdir()
    bad = runtime.root / "bad-state"
    bad.mkdir()
    (bad / "state.json").write_text("{not json")
    try:
        proc = runtime("list", "-q", check=False)
        assert proc.returncode == 0, proc.stderr
        assert_no_traceback(proc)
        assert proc.stdout.split() == [cid]
        js = runtime("list", "--format", "json", check=False)
        assert js.returncode == 0
        assert [c["id"] for c in json.loads(js.stdout)] == [cid]
        assert runtime.state(cid)["status"] == "created"
    finally:
        junk.rmdir()
        (bad / "state.json").unlink()
        bad.rmdir()
    runtime("delete", "--force", cid)


def test_state_of_each_status(runtime, bundle):
    set_sh(bundle, "read x")  # blocks until stdin (our pipe) is closed
    cid = runtime.new_id()
    r, w = os.pipe()
    try:
        runtime.create(bundle, cid, stdin=r)
        st = runtime.state(cid)
        assert st["status"] == "created" and st["pid"] > 0
        runtime("start", cid)
        st = runtime.state(cid)
        assert st["status"] == "running"
        pid = st["pid"]
        assert Path(f"/proc/{pid}").exists()
    finally:
        os.close(r)
        os.close(w)
    st = runtime.wait_stopped(cid)
    assert st["status"] == "stopped"
    assert st["pid"] == 0
    runtime("delete", cid)


def test_state_owner(runtime, bundle):
    set_sh(bundle, "sleep 30")
    cid = runtime.create(bundle)
    st = runtime.state(cid)
    assert st["owner"] in ("", "root")
    if is_pyruntime():
        assert st["owner"] == "root"
    runtime("delete", "--force", cid)


@pytest.mark.skipif(not is_pyruntime(), reason="`validate` is pyruntime's own command")
def test_validate_through_the_installed_launcher(runtime, bundle):
    # The launcher runs without `site`: jsonschema must still be found (it lives in site-packages).
    r = runtime("validate", "--bundle", bundle.path)
    assert r.stdout.strip() == "config.json is valid"
    bundle.config["linux"]["namespaces"].append({"type": "pidd"})
    bundle.write()
    r = runtime("validate", "--bundle", bundle.path, check=False)
    assert r.returncode == 1 and "linux.namespaces[" in r.stdout and "pidd" in r.stdout, r
    assert "Traceback" not in r.stderr
