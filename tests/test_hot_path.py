"""The lifecycle commands' lean building blocks (options.py, jsonio.py, records.py), and a guard
on what the hot path imports: no timing here (bench/ measures speed), only which modules load."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

import pytest

from conftest import SERVER_MODE, is_pyruntime, runtime_binary

from pyruntime.lean import jsonio
from pyruntime.cli.options import REMAINDER, Parser
from pyruntime.lean.records import asdict, field, record

# Modules whose import the hot path was cut loose from (each costs milliseconds a call).
HEAVY = {"argparse", "json", "re", "enum", "dataclasses", "inspect", "socket", "signal",
         "collections", "jsonschema", "pyroute2", "jeepney", "subprocess", "shutil", "importlib",
         "google.protobuf", "pyruntime.criu", "prctl", "_prctl"}


def imported_by(*args: str) -> tuple[int, set[str]]:
    """(exit status, modules imported) of a CLI call, from -X importtime, with the launcher's
    interpreter and flags. stderr goes to a file: a `create` leaves an init holding it."""
    binary = runtime_binary()
    with open(binary) as f:
        interp = f.readline()[2:].split()[0]
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.run([interp, "-IS", "-X", "importtime", binary, *args], stderr=err,
                           stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=30)
        err.seek(0)
        text = err.read()
    return p.returncode, {line.rsplit("|", 1)[1].strip() for line in text.splitlines()
                          if line.startswith("import time:") and "|" in line} - {"imported package"}


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own import graph")
def test_the_lifecycle_imports_nothing_heavy(runtime, bundle):
    """Each call of a real container's lifecycle, checked on its own import graph."""
    bundle.config["process"]["args"] = ["sleep", "30"]
    bundle.write()
    cid = runtime.new_id()
    for args in (("create", "--bundle", str(bundle.path), cid), ("state", cid), ("start", cid),
                 ("exec", cid, "true"), ("list",), ("kill", cid, "KILL"),
                 ("delete", "--force", cid)):
        rc, mods = imported_by("--root", str(runtime.root), *args)
        assert rc == 0, args
        if args[0] in ("create", "exec"):  # the warm server's client; the CLI if not served
            assert "pyruntime.server.client" in mods
            assert ("pyruntime.cli.main" in mods) is not SERVER_MODE
        else:
            assert "pyruntime.cli" in mods  # the probe works
        # the launcher tries the lean path only for the commands that have one
        assert ("pyruntime.cli.fast" in mods) == (args[0] in ("state", "start", "list", "kill",
                                                              "delete")), args[0]
        assert not mods & HEAVY, (args[0], sorted(mods & HEAVY))


# ---------------------------------------------------------------- the lean path (cli/fast.py)

LEAN = {"pyruntime", "pyruntime.cli", "pyruntime.cli.fast", "pyruntime.lifecycle",
        "pyruntime.lifecycle.layout", "pyruntime.lifecycle.execfifo"}


def _interpreter() -> str:
    with open(runtime_binary()) as f:
        return f.readline()[2:].split()[0]


def _interpreter_facts() -> tuple[set[str], set[str]]:
    """(what the bare interpreter imports at start, its builtin modules)."""
    code = "import sys; print(' '.join(sys.builtin_module_names))"
    p = subprocess.run([_interpreter(), "-IS", "-X", "importtime", "-c", code],
                       capture_output=True, text=True, check=True)
    start = {line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines()
             if line.startswith("import time:") and "|" in line} - {"imported package"}
    return start, set(p.stdout.split())


def call(runtime, *args, lean=True, global_args=()):
    """(rc, stdout, stderr, modules imported) of a CLI call; lean=False: the full path."""
    env = dict(os.environ)
    env.pop("PYRUNTIME_NO_LEAN", None)
    if not lean:
        env["PYRUNTIME_NO_LEAN"] = "1"
    p = subprocess.run([_interpreter(), "-IS", "-X", "importtime", runtime.binary,
                        *runtime.cmd(*args, global_args=global_args)[1:]],
                       capture_output=True, stdin=subprocess.DEVNULL, env=env, timeout=30)
    err = p.stderr.decode(errors="replace").splitlines(keepends=True)
    mods = {line.rsplit("|", 1)[1].strip() for line in err
            if line.startswith("import time:") and "|" in line} - {"imported package"}
    return (p.returncode, p.stdout.decode(),
            "".join(line for line in err if not line.startswith("import time:")), mods)


def assert_lean(mods, what) -> None:
    """Only builtins, the lean path's own modules, and fcntl/_json/select where a build has
    them as shared C extensions (pyenv's); never the full CLI."""
    start, builtin = _interpreter_facts()
    extensions = {"fcntl", "_json", "select"} - builtin
    assert "pyruntime.cli.main" not in mods, f"{what}: fell back to the full path"
    assert mods - start - LEAN <= builtin | extensions, (what, sorted(mods - start - LEAN - builtin))


def _cgroups_of(cid: str) -> list[str]:
    return [os.path.join(dp, d) for h in ("/sys/fs/cgroup",) for dp, ds, _ in os.walk(h)
            for d in ds if d == cid]


def _wait_stopped(runtime, cid):
    from conftest import reap_zombies
    deadline = time.monotonic() + 10
    while json.loads(call(runtime, "state", cid)[1])["status"] != "stopped":
        assert time.monotonic() < deadline
        reap_zombies()
        time.sleep(0.02)


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own lean path")
def test_lean_lifecycle_imports_only_builtins(runtime, bundle):
    bundle.config["process"]["args"] = ["sleep", "30"]
    bundle.write()
    cid = runtime.create(bundle)
    assert _cgroups_of(cid)
    for args in (("state", cid), ("list",), ("start", cid), ("state", cid),
                 ("list", "--format", "json"), ("list", "-q"), ("kill", cid, "KILL")):
        rc, out, err, mods = call(runtime, *args)
        assert (rc, err) == (0, ""), args
        assert_lean(mods, args)
    _wait_stopped(runtime, cid)
    rc, out, err, mods = call(runtime, "delete", cid)
    assert (rc, out, err) == (0, "", "")
    assert_lean(mods, "delete")
    assert not (runtime.root / cid).exists()
    assert _cgroups_of(cid) == []  # every dir the full code removes


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own lean path")
@pytest.mark.parametrize("global_args", [(), ("--log-format", "json")])
def test_lean_outputs_equal_the_full_paths(runtime, bundle, tmp_path, global_args):
    """Read-only commands on one container, both paths; start/kill/delete on twins."""
    bundle.config["process"]["args"] = ["sleep", "30"]
    bundle.config["annotations"] = {"org.example/a": "1", "b": "two words"}
    bundle.write()
    log = tmp_path / "log"
    g = ("--log", str(log), *global_args)
    twins = [runtime.create(bundle), runtime.create(bundle)]
    reads = [("state", twins[0]), ("list",), ("list", "-q"), ("list", "--format=json"),
             ("list", "-f", "table"), ("list", "-format", "json", "-quiet")]
    for args in reads:
        lean, full = call(runtime, *args, global_args=g), \
            call(runtime, *args, lean=False, global_args=g)
        assert_lean(lean[3], args)
        assert lean[:3] == full[:3] and lean[0] == 0, args
    for step in (("start",), ("kill", "KILL")):
        results = []
        for cid, lean in zip(twins, (True, False)):
            rc, out, err, mods = call(runtime, *step[:1], cid, *step[1:], lean=lean, global_args=g)
            assert ("pyruntime.cli.main" not in mods) is lean
            results.append((rc, out, err))
            if step[0] == "start":
                assert json.loads(call(runtime, "state", cid)[1])["status"] == "running"
        assert results[0] == results[1] == (0, "", ""), step
        if step[0] == "kill":  # the reads below must not race the deaths
            for cid in twins:
                _wait_stopped(runtime, cid)
        for args in reads[1:]:
            assert call(runtime, *args, global_args=g)[:3] == \
                call(runtime, *args, lean=False, global_args=g)[:3], args
    results = []
    for cid, lean in zip(twins, (True, False)):
        _wait_stopped(runtime, cid)
        assert call(runtime, "state", cid, global_args=g)[:3] == \
            call(runtime, "state", cid, lean=False, global_args=g)[:3]
        rc, out, err, mods = call(runtime, "delete", cid, lean=lean, global_args=g)
        assert ("pyruntime.cli.main" not in mods) is lean
        results.append((rc, out, err, (runtime.root / cid).exists(), _cgroups_of(cid)))
    assert results[0] == results[1] == (0, "", "", False, [])
    assert log.read_text() == ""


def _hook(path) -> list[dict]:
    return [{"path": "/bin/sh", "args": ["sh", "-c", f"echo ran >> {path}"]}]


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own lean path")
def test_lean_falls_back_for_hooks(runtime, bundle, tmp_path):
    bundle.config["process"]["args"] = ["sleep", "30"]
    bundle.config["hooks"] = {"poststart": _hook(tmp_path / "poststart"),
                              "poststop": _hook(tmp_path / "poststop")}
    bundle.write()
    cid = runtime.create(bundle)
    assert_lean(call(runtime, "state", cid)[3], "state of a container with hooks")
    rc, out, err, mods = call(runtime, "start", cid)
    assert (rc, err, "pyruntime.cli.main" in mods) == (0, "", True)
    assert (tmp_path / "poststart").read_text() == "ran\n"
    assert_lean(call(runtime, "kill", cid, "9")[3], "kill of a container with hooks")
    _wait_stopped(runtime, cid)
    rc, out, err, mods = call(runtime, "delete", cid)
    assert (rc, err, "pyruntime.cli.main" in mods) == (0, "", True)
    assert (tmp_path / "poststop").read_text() == "ran\n"
    assert _cgroups_of(cid) == []


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own lean path")
def test_lean_falls_back_for_a_paused_container(runtime, bundle):
    bundle.config["process"]["args"] = ["sleep", "30"]
    bundle.write()
    cid = runtime.create(bundle)
    runtime("start", cid)
    runtime("pause", cid)
    for args in (("state", cid), ("list", "--format", "json"), ("delete", cid)):
        lean, full = call(runtime, *args), call(runtime, *args, lean=False)
        assert "pyruntime.cli.main" in lean[3], args
        assert lean[:3] == full[:3], args
    assert json.loads(call(runtime, "state", cid)[1])["status"] == "paused"
    rc, out, err, mods = call(runtime, "kill", cid, "KILL")  # the full code thaws it too
    assert (rc, err, "pyruntime.cli.main" in mods) == (0, "", True)
    _wait_stopped(runtime, cid)
    assert call(runtime, "delete", cid)[:3] == (0, "", "")
    assert _cgroups_of(cid) == []


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own lean path")
def test_lean_falls_back_with_the_full_paths_errors(runtime, bundle):
    """Unknown ids, damaged or missing state files, refusals, unknown flags: the full path's
    exact error lines and exit codes."""
    bundle.config["process"]["args"] = ["sleep", "30"]
    bundle.write()
    cid = runtime.create(bundle)
    runtime.root.mkdir(exist_ok=True)
    (runtime.root / "corrupt").mkdir()
    (runtime.root / "corrupt" / "pyruntime.json").write_text('{"pid": "x"}')
    (runtime.root / "nofile").mkdir()
    (runtime.root / "bad").mkdir()
    (runtime.root / "bad" / "pyruntime.json").write_text('{"pid": 1} trailing')
    cases = [(cmd, x) for cmd in ("state", "start", "kill", "delete")
             for x in ("nope", "corrupt", "nofile", "bad", "../x", "")]
    cases += [("kill", cid, "NOSUCH"), ("kill", cid, "99"), ("kill", cid, "SIG_DFL"),
              ("delete", cid), ("start", cid, "extra"), ("state", "--nope", cid),
              ("list", "--format", "yaml"), ("list", "extra"), ("list", "-f=json"),
              ("list", "--f", "json"), ("delete", "--f", cid), ("list",)]
    for args in cases:
        lean, full = call(runtime, *args), call(runtime, *args, lean=False)
        assert "pyruntime.cli.main" in lean[3], args
        assert lean[:3] == full[:3], args
        assert lean[0] != 0 or args[0] == "list", args  # list of a damaged root: full path
    for g in (("--debug",), ("--systemd-cgroup",), ("--nope",), ("--log-format", "xml")):
        lean, full = call(runtime, "state", cid, global_args=g), \
            call(runtime, "state", cid, lean=False, global_args=g)
        assert "pyruntime.cli.main" in lean[3] and lean[:3] == full[:3], g
    for d in ("corrupt", "nofile", "bad"):
        assert call(runtime, "delete", "--force", d)[0] == 0
    assert set(runtime.state_dirs()) <= {cid}


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own lean path")
def test_lean_reads_the_init_by_pid_and_start_time(runtime):
    """A state naming a live process of ours: with its start time it is our init (created,
    and start blocks on exec.fifo until interrupted: 130 as the full path); with another
    start time the pid was recycled (stopped, pid 0), on both paths."""
    import shutil
    import signal
    from pyruntime.lifecycle.state import proc_start_time
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        start = proc_start_time(sleeper.pid)
        d = runtime.root / "fake"
        d.mkdir(parents=True)
        os.mkfifo(d / "exec.fifo")
        for init_start, status in ((start, "created"), (start + 1, "stopped")):
            (d / "pyruntime.json").write_text(json.dumps(
                {"id": "fake", "pid": sleeper.pid, "init_start": init_start,
                 "status": "created", "owner": "root"}))
            lean, full = call(runtime, "state", "fake"), call(runtime, "state", "fake", lean=False)
            assert_lean(lean[3], "state")
            assert lean[:3] == full[:3]
            st = json.loads(lean[1])
            assert (st["status"], st["pid"]) == (status, sleeper.pid if status == "created" else 0)
        (d / "pyruntime.json").write_text(json.dumps(
            {"id": "fake", "pid": sleeper.pid, "init_start": start, "status": "created"}))
        for lean in (True, False):
            env = {k: v for k, v in os.environ.items() if k != "PYRUNTIME_NO_LEAN"}
            if not lean:
                env["PYRUNTIME_NO_LEAN"] = "1"
            p = subprocess.Popen(runtime.cmd("start", "fake"), env=env, stderr=subprocess.PIPE)
            time.sleep(1)
            assert p.poll() is None  # blocked on the fifo, as the full path
            p.send_signal(signal.SIGINT)
            assert (p.wait(10), p.stderr.read()) == (130, b""), lean
            p.stderr.close()
    finally:
        sleeper.kill()
        sleeper.wait()
        shutil.rmtree(runtime.root / "fake", ignore_errors=True)


def test_the_lean_path_shares_the_full_codes_constants():
    from pyruntime.cgroups import delegation
    from pyruntime.cli import fast
    from pyruntime.cli import main
    from pyruntime.lifecycle import rootless
    assert fast.CGROUP2_RECORD == delegation.RECORD
    assert fast.Ctx.root == rootless.default_root({})  # the root's when no XDG_RUNTIME_DIR
    assert set(fast.GLOBAL_VALUE_FLAGS) == main.GLOBAL_VALUE_FLAGS
    assert set(fast.GLOBAL_BOOL_FLAGS) == main.GLOBAL_BOOL_FLAGS


def test_the_lean_path_leaves_an_xdg_default_root_to_the_full_code(monkeypatch):
    """rootless.default_root may pick $XDG_RUNTIME_DIR/pyruntime; only an explicit --root
    (what Docker, containerd and podman pass) stays on the lean path."""
    import posix
    from pyruntime.cli import fast
    monkeypatch.setitem(posix.environ, b"XDG_RUNTIME_DIR", b"/run/user/1000")
    with pytest.raises(fast.Fallback):
        fast._split(["state", "x"])
    ctx, name, _ = fast._split(["--root", "/run/r", "state", "x"])
    assert (ctx.root, name) == ("/run/r", "state")


# ---------------------------------------------------------------- jsonio

SAMPLES = [{}, [], "x", 0, -1.5, None, True, 10 ** 30,
           {"a": [1, 2.5, {"b": None, "c": False}], "é": "ü\n\"\\\t\u2028", "e": [], "f": {}},
           [[[]], [{}], {"k": [1]}], {"n": float("inf"), "m": -0.0}]


@pytest.mark.parametrize("obj", SAMPLES)
@pytest.mark.parametrize("indent", [None, 2])
def test_jsonio_writes_what_json_writes(obj, indent):
    assert jsonio.dumps(obj, indent) == json.dumps(obj, indent=indent)
    assert repr(jsonio.loads(json.dumps(obj))) == repr(obj)
    if indent is None:
        assert jsonio.dumps(obj, sort_keys=True) == json.dumps(obj, sort_keys=True)
        assert jsonio.dumps(obj, tight=True) == json.dumps(obj, separators=(",", ":"))


def test_jsonio_go_dumps_writes_what_go_writes():
    # runc's bytes (Go's encoding/json) for these strings: UTF-8 kept, HTML-safe escapes,
    # \u00XX for controls but \n \r \t, DEL raw, a lone surrogate (U+FFFD to Go) as U+FFFD
    s = "<a>&b \u2028\u2029 \u00e9 \b\f\x7f\x01\x1f \t\n\r\"\\ \U0001f600 \ud800"
    want = ('"\\u003ca\\u003e\\u0026b \\u2028\\u2029 \u00e9 \\u0008\\u000c\x7f\\u0001\\u001f '
            '\\t\\n\\r\\"\\\\ \U0001f600 \ufffd"')
    assert jsonio.go_quote(s) == want
    assert jsonio.go_quote("/p\udcff") == '"/p\\ufffd"'  # an undecodable byte: Go's escape
    assert jsonio.go_dumps([{"k&": s, "n": None, "i": 1, "l": [], "m": {}}]) == \
        '[{"k\\u0026":' + want + ',"n":null,"i":1,"l":[],"m":{}}]'
    assert jsonio.go_dumps({"a": {"b": "<"}}, indent=2) == '{\n  "a": {\n    "b": "\\u003c"\n  }\n}'
    assert json.loads(jsonio.go_dumps(SAMPLES[8])) == SAMPLES[8]


def test_log_text_quotes_as_go_q():
    from pyruntime.log import go_q
    assert go_q("plain é <&>") == '"plain é <&>"'
    assert go_q('a"\\\n\x01\x7f\u00a0\u2028\U000e0001\udcff\ud800') == \
        '"a\\"\\\\\\n\\x01\\x7f\\u00a0\\u2028\\U000e0001\\xff\\ufffd"'


@pytest.mark.parametrize("bad", ["", "   ", "{", "[1,]", "1 2", '{"a": 1} x', "{'a': 1}", "nul"])
def test_jsonio_rejects_what_json_rejects(bad):
    with pytest.raises(ValueError) as mine:
        jsonio.loads(bad)
    with pytest.raises(ValueError) as theirs:
        json.loads(bad)
    assert str(mine.value) == str(theirs.value)


def test_jsonio_refuses_unknown_types():
    for indent in (None, 2):
        with pytest.raises(TypeError, match="set is not JSON serializable"):
            jsonio.dumps({"a": {1}}, indent)


# ---------------------------------------------------------------- options

def parser() -> Parser:
    p = Parser("pyruntime exec", "run a process")
    p.add_argument("--env", "-e", action="append", default=[], help="KEY=value")
    p.add_argument("--tty", "-t", action="store_true")
    p.add_argument("--preserve-fds", type=int, default=0)
    p.add_argument("--format", "-f", choices=("table", "json"), default="table")
    p.add_argument("--cwd")
    p.add_argument("container_id")
    p.add_argument("command", nargs=REMAINDER)
    return p


def test_options_like_argparse():
    o = parser().parse_args(["-e", "A=1", "--env=B=2", "-eC=3", "--tty", "--preserve-fds", "2",
                             "id", "sh", "-c", "--tty", "x"])
    assert (o.env, o.tty, o.preserve_fds, o.format, o.cwd) == (["A=1", "B=2", "C=3"], True, 2,
                                                               "table", None)
    assert o.container_id == "id" and o.command == ["sh", "-c", "--tty", "x"]
    o = parser().parse_args(["--", "id", "--cwd"])
    assert o.container_id == "id" and o.command == ["--cwd"]
    assert parser().parse_args(["id"]).command == []


def test_options_optional_and_star_positionals():
    p = Parser("pyruntime kill")
    p.add_argument("--all", "-a", action="store_true")
    p.add_argument("container_id")
    p.add_argument("signal", nargs="?", default="SIGTERM")
    assert vars(p.parse_args(["c"])) == {"all": False, "container_id": "c", "signal": "SIGTERM"}
    assert vars(p.parse_args(["c", "KILL", "--all"])) == {"all": True, "container_id": "c",
                                                          "signal": "KILL"}
    p = Parser("pyruntime demo")
    p.add_argument("command", nargs="*")
    assert p.parse_args([]).command == [] and p.parse_args(["a", "b"]).command == ["a", "b"]


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: container_id"),
    (["--nope", "id"], "unrecognized arguments: --nope"),
    (["--preserve-fds", "x", "id"], "argument --preserve-fds: invalid int value: 'x'"),
    (["--format", "yaml", "id"], "argument --format/-f: invalid choice: 'yaml'"),
    (["id", "--cwd"], None),  # after the id it is the command's: no error
    (["--cwd"], "argument --cwd: expected one argument"),
    (["--tty=yes", "id"], "argument --tty/-t: ignored explicit argument 'yes'"),
])
def test_options_errors_exit_2_with_a_usage_line(argv, message, capsys):
    if message is None:
        parser().parse_args(argv)
        return
    with pytest.raises(SystemExit) as e:
        parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: pyruntime exec ") and f"error: {message}" in err


def test_options_help(capsys):
    with pytest.raises(SystemExit) as e:
        parser().parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "run a process" in out and "--env value, -e value" in out and "KEY=value" in out


# ---------------------------------------------------------------- records

@record
class Inner:
    a: int
    tags: list[str] = field(default_factory=list)


@record
class Outer:
    name: str
    inner: Inner
    more: list[Inner] = field(default_factory=list)
    note: str | None = None


def test_records_behave_like_dataclasses():
    x, y = Inner(1), Inner(a=1)
    assert x == y and x is not y and x.tags == [] and x.tags is not y.tags
    x.tags.append("t")
    assert x != y and repr(x) == "Inner(a=1, tags=['t'])"
    o = Outer("n", x, [Inner(2)])
    assert asdict(o) == {"name": "n", "inner": {"a": 1, "tags": ["t"]},
                         "more": [{"a": 2, "tags": []}], "note": None}
    with pytest.raises(TypeError, match="missing argument 'a'"):
        Inner()
    with pytest.raises(TypeError, match="unexpected arguments"):
        Inner(1, b=2)
    with pytest.raises(TypeError, match="multiple values"):
        Inner(1, a=2)
    with pytest.raises(TypeError):
        hash(x)
