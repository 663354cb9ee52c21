"""A seeded fuzz of what a user can hand the CLI: damaged config.json and state files.

The mutator (no dependency: random.Random with a fixed seed, so a failure replays) starts from
a real, working config and state file and makes: a wrong type at every JSON path, truncation at
every byte offset, unicode and NUL bytes in strings, huge numbers, strings and nesting, missing
files and symlink loops. Every case goes through the CLI (`create`, `validate`, `state`,
`list`, `delete`) and fails the test on a traceback, an "internal error", a message of more
than one line, exit 0 for input that is invalid, or anything left behind (state dir, cgroup,
process: the leak check).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import CGROUP_ROOT, is_pyruntime

SEED = int(os.environ.get("PYRUNTIME_FUZZ_SEED", "13"))
pytestmark = pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own error contract")

# Values of every JSON type; for a path, the ones of another type than the value there.
_OF_TYPE = {
    str: ["", "x" * 300, "\u00e9\u4e2d\U0001f600", "a\u0000b", "\ud800"],
    bool: [True, False],
    int: [-1, 0, 2 ** 64, -(2 ** 63) - 1, 10 ** 40],
    float: [1.5, -0.0, 1e308],
    list: [[], [None], [[[]]]],
    dict: [{}, {"": None}],
    type(None): [None],
}


def json_paths(obj, path=()):
    """Every path to every value, the root excluded, parents before children."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield path + (k,), v
        yield from json_paths(v, path + (k,))


def replaced(obj, path, value):
    obj = json.loads(json.dumps(obj))
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return obj


def deleted(obj, path):
    obj = json.loads(json.dumps(obj))
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    del parent[path[-1]]
    return obj


def wrong_types(value, rng: random.Random) -> list:
    """One value of each JSON type the value does not have (bool and int are apart)."""
    out = []
    for t, samples in _OF_TYPE.items():
        if type(value) is t or (t is float and type(value) is int) or \
                (t is int and type(value) is float):
            continue
        out.append(rng.choice(samples))
    return out


def config_cases(cfg: dict, rng: random.Random):
    """(name, text, must_fail) for config.json."""
    text = json.dumps(cfg, indent=1)
    raw = text.encode()
    for off in range(0, len(raw)):  # truncation at every byte offset: never valid JSON
        yield f"truncated@{off}", raw[:off], True
    for path, value in json_paths(cfg):
        for bad in wrong_types(value, rng):
            # Every field has one type in the runtime-spec schema: refuse another one. null
            # reads as absent (as Go's decoder, runc's, reads it), so it may pass.
            yield f"type {path}={bad!r:.40}", json.dumps(replaced(cfg, path, bad)).encode(), \
                bad is not None
    strings = [(p, v) for p, v in json_paths(cfg) if isinstance(v, str)]
    for path, _ in rng.sample(strings, min(40, len(strings))):
        for s in ("\u00e9t\u00e9", "a\u0000b", "\ud83d", "x" * 5000):
            yield f"string {path}={s[:10]!r}", json.dumps(replaced(cfg, path, s)).encode(), False
    for path, _ in rng.sample(list(json_paths(cfg)), 30):
        yield f"deleted {path}", json.dumps(deleted(cfg, path)).encode(), False
    yield "deep", ("[" * 100000).encode(), True
    yield "deep-valid", json.dumps(replaced(cfg, ("annotations",), {"a": "b"})).encode()[:-1] + \
        b', "x": ' + b"[" * 50000 + b"]" * 50000 + b"}", False
    yield "huge-number", json.dumps(cfg).encode()[:-1] + b', "n": 1' + b"0" * 6000 + b"}", True
    yield "not-utf8", b'{"ociVersion": "\xff\xfe"}', True
    yield "nul", b"\x00" * 64, True
    yield "array", b"[]", True
    yield "bom", b"\xef\xbb\xbf" + json.dumps(cfg).encode(), True


def run_cli(binary, *args, cwd=None) -> subprocess.CompletedProcess:
    """stderr through a file: a `create` that succeeds leaves an init holding it."""
    with tempfile.TemporaryFile("w+b") as out, tempfile.TemporaryFile("w+b") as err:
        proc = subprocess.run([binary, *map(str, args)], stdout=out, stderr=err,
                              stdin=subprocess.DEVNULL, timeout=60, cwd=cwd)
        out.seek(0)
        err.seek(0)
        proc.stdout = out.read().decode(errors="replace")
        proc.stderr = err.read().decode(errors="replace")
    return proc


def check_clean_failure(name, proc, must_fail=True, lines_out=False):
    """One line on stderr (validate: its report on stdout), no traceback, no internal error,
    non-zero when the input is bad."""
    problems = []
    err = proc.stderr + (proc.stdout if lines_out else "")
    if "Traceback" in err or "internal error" in err:
        problems.append("traceback/internal error")
    if must_fail and proc.returncode == 0:
        problems.append("exit 0 for invalid input")
    if proc.returncode not in (0, 1):
        problems.append(f"exit {proc.returncode}")
    lines = [ln for ln in err.splitlines() if ln and "warning:" not in ln]
    if proc.returncode != 0 and (len(lines) != 1 if not lines_out else not lines):
        problems.append(f"{len(lines)} error lines")
    return [f"{name}: {p}: rc={proc.returncode} {err.strip()[:300]!r}" for p in problems]


def _leftover_cgroups(prefix: str) -> list[str]:
    found = []
    for hier in CGROUP_ROOT.iterdir():
        if hier.is_dir():
            for dirpath, dirnames, _ in os.walk(hier):
                found += [os.path.join(dirpath, d) for d in dirnames if d.startswith(prefix)]
    return found


FILE_CASES = [("config.json missing", lambda d: None),
              ("config.json a dir", lambda d: (d / "config.json").mkdir()),
              ("config.json a symlink loop", lambda d: os.symlink("config.json", d / "config.json")),
              ("config.json empty", lambda d: (d / "config.json").write_text("")),
              ("rootfs missing", lambda d: (d / "rootfs").unlink()),
              ("rootfs a symlink loop", lambda d: ((d / "rootfs").unlink(),
                                                   os.symlink("rootfs", d / "rootfs"))),
              ("rootfs a file", lambda d: ((d / "rootfs").unlink(),
                                           (d / "rootfs").write_text("")))]


def file_cases(runtime, bundle, tmp_path, prefix) -> list[str]:
    """Missing files, symlink loops and files of the wrong kind in a bundle."""
    problems = []
    for i, (name, damage) in enumerate(FILE_CASES):
        d = tmp_path / f"files{i}"
        d.mkdir()
        os.symlink(bundle.rootfs, d / "rootfs")
        if "config.json" not in name:
            (d / "config.json").write_text(json.dumps(bundle.config))
        damage(d)
        for cmd in (("create", "--bundle", d, f"{prefix}f{i}"), ("validate", "--bundle", d)):
            proc = run_cli(runtime.binary, "--root", runtime.root, *cmd, cwd=d)
            problems += check_clean_failure(f"{name} {cmd[0]}", proc, True,
                                            lines_out=cmd[0] == "validate")
    return problems


def test_fuzz_config(runtime, bundle, tmp_path):
    """create and validate on a few thousand damaged configs (two at a time)."""
    rng = random.Random(SEED)
    cfg = bundle.config
    cases = list(config_cases(cfg, rng))
    prefix = f"fz{os.getpid()}-"
    bundles = []
    for w in range(2):  # one bundle dir per worker thread, sharing the rootfs
        d = tmp_path / f"b{w}"
        d.mkdir()
        os.symlink(bundle.rootfs, d / "rootfs")
        bundles.append(d)

    def one(i_case):
        i, (name, data, must_fail) = i_case
        d = bundles[i % 2]
        cid = f"{prefix}{i}"
        (d / "config.json").write_bytes(data)
        cmd = ("validate",) if i % 10 == 9 else ("create", "--bundle", d, cid)
        proc = run_cli(runtime.binary, "--root", runtime.root, *cmd, cwd=d)
        problems = check_clean_failure(name, proc, must_fail, lines_out=cmd[0] == "validate")
        if proc.returncode == 0 and cmd[0] == "create":
            d2 = run_cli(runtime.binary, "--root", runtime.root, "delete", "--force", cid)
            problems += check_clean_failure(f"{name} (delete)", d2, False)
        return problems

    # per worker, cases alternate between the two bundle dirs: i % 2 == worker
    def worker(w):
        out = []
        for i in range(w, len(cases), 2):
            out += one((i, cases[i]))
        return out

    with ThreadPoolExecutor(2) as pool:
        problems = sum(pool.map(worker, range(2)), [])
    problems += file_cases(runtime, bundle, tmp_path, prefix)
    cases += FILE_CASES
    left = runtime.state_dirs()
    cgroups = _leftover_cgroups(prefix)
    print(f"fuzz: {len(cases)} config cases, {len(problems)} failures")
    if problems and os.environ.get("PYRUNTIME_FUZZ_REPORT"):
        Path(os.environ["PYRUNTIME_FUZZ_REPORT"]).write_text("\n".join(problems))
    assert not left, f"state dirs left: {left[:10]}"
    assert not cgroups, f"cgroups left: {cgroups[:10]}"
    assert not problems, f"{len(problems)} of {len(cases)} cases:\n" + "\n".join(problems[:40])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def state_cases(text: bytes, state: dict, rng: random.Random):
    """(name, bytes, must_fail) for a container's state file."""
    for off in range(0, len(text), 3):
        yield f"truncated@{off}", text[:off], True
    for path, value in json_paths(state):
        # The fields every command relies on are type-checked when the file is read; what lies
        # inside hooks, annotations, config_process and seccomp is read only where used.
        checked = len(path) == 1 or path[0] == "cgroup" and len(path) <= 3
        for bad in wrong_types(value, rng):
            yield f"type {path}={bad!r:.40}", json.dumps(replaced(state, path, bad)).encode(), \
                checked and not (bad is None and path[-1] == "unified_mount")  # none on v1
    yield "deep", b"[" * 100000, True
    yield "garbage", bytes(rng.randrange(256) for _ in range(300)), True
    yield "empty", b"", True
    yield "unknown field", json.dumps(dict(state, surprise=1)).encode(), True


def test_fuzz_state_file(runtime, bundle, tmp_path):
    """state/list on a live container whose state file is damaged in every way; then
    delete --force from the damaged file kills its init and removes everything."""
    rng = random.Random(SEED)
    bundle.config["process"]["args"] = ["sleep", "600"]
    bundle.write()
    cid = runtime.create(bundle)
    other = runtime.create(bundle)
    path = runtime.root / cid / "pyruntime.json"
    good = path.read_bytes()
    state = json.loads(good)
    pid = state["pid"]
    cases = list(state_cases(good, state, rng))

    def one(i, name, data, must_fail):
        path.write_bytes(data)
        problems = []
        cmds = [("state", cid)] + ([("list",)] if i % 20 == 0 else []) + \
            ([("kill", cid, "0")] if i % 20 == 10 else []) + \
            ([("delete", cid)] if i % 20 == 5 else [])
        for cmd in cmds:
            proc = run_cli(runtime.binary, "--root", runtime.root, *cmd)
            if cmd[0] == "list":  # the damaged one shows as such, the others as they are
                problems += check_clean_failure(f"{name} list", proc, False)
                if other not in proc.stdout:
                    problems.append(f"{name}: list lost the undamaged container")
                continue
            # delete without --force: refused, damaged or not (the container is not stopped)
            problems += check_clean_failure(f"{name} {cmd[0]}", proc,
                                            must_fail and cmd[0] == "state" or cmd[0] == "delete")
        return problems

    problems = []
    for i, (name, data, must_fail) in enumerate(cases):
        problems += one(i, name, data, must_fail)
    for name, damage in (("a symlink loop", lambda: os.symlink(path.name, path)),
                         ("a directory", lambda: path.mkdir()),
                         ("missing", lambda: None)):
        path.unlink()
        damage()
        for cmd in (("state", cid), ("kill", cid, "0"), ("delete", cid)):
            proc = run_cli(runtime.binary, "--root", runtime.root, *cmd)
            problems += check_clean_failure(f"state file {name}: {cmd[0]}", proc, True)
        lst = run_cli(runtime.binary, "--root", runtime.root, "list")
        problems += check_clean_failure(f"state file {name}: list", lst, False)
        if name != "missing" and "damaged" not in lst.stdout:
            problems.append(f"state file {name}: list does not show it as damaged")
        if path.is_dir():
            path.rmdir()
        elif path.is_symlink():
            path.unlink()
        path.write_bytes(good)
        cases.append(name)
    path.write_bytes(good)
    assert _alive(pid)
    # Damaged for good: list says so, delete without --force refuses, --force cleans up.
    path.write_bytes(good[:len(good) // 2])
    lst = run_cli(runtime.binary, "--root", runtime.root, "list")
    assert lst.returncode == 0 and "damaged" in lst.stdout and other in lst.stdout, lst
    d = run_cli(runtime.binary, "--root", runtime.root, "delete", cid)
    problems += check_clean_failure("delete of a damaged state", d, True)
    d = run_cli(runtime.binary, "--root", runtime.root, "delete", "--force", cid)
    assert d.returncode == 0, d.stderr
    assert not _alive(pid), "delete --force left the init of a damaged state running"
    assert not (runtime.root / cid).exists()
    assert not _leftover_cgroups(cid)
    runtime("delete", "--force", other)
    print(f"fuzz: {len(cases)} state-file cases, {len(problems)} failures")
    assert not problems, f"{len(problems)} of {len(cases)} cases:\n" + "\n".join(problems[:40])
