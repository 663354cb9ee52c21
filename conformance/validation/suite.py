#!/usr/bin/env python3
"""Run the built runtime-tools validation programs against one runtime and count.

Called by ./run once the suite is built (stdlib only). It makes itself a child
subreaper, so container inits that `create` orphans land here and get reaped (PID 1
on this kind of machine never reaps), runs each program with the build dir as cwd
(the programs expect `runtimetest` and `rootfs-amd64.tar.gz` there), and after each
one: force-deletes the containers it left, unmounts what it left mounted under the
private TMPDIR, kills stray processes. Then writes <results>/<name>/summary.{txt,json}.

Counting (the shared reference runner's rules, plus EMPTY):
* only top-level TAP lines count; plans are summed (a program may print several);
* a program that exits non-zero (CRASH) or times out (TIMEOUT) counts as 1 failure
  and its "ok" lines are dropped;
* 0 assertions with a YAML "error" block (the hook programs) is 1 failure (ERROR);
  0 assertions without one is 1 pass, provided a TAP stream was printed at all: no
  output is 1 failure (EMPTY), because an "inside" program whose container stdout got
  lost prints nothing and exits 0 (the process_*_fail programs, silent on success,
  are exempt);
* assertions != summed plan adds 1 failure (BADPLAN);
* `# SKIP` and `not ok ... # TODO` count as skipped.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
MNT_DETACH = 2
CGROUP_ROOT = Path("/sys/fs/cgroup")
TEST_CGROUP_DIRS = ("cgrouptest", "testdir")

libc = ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> None:
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def reap(statuses: dict[int, int] | None = None) -> None:
    """Reap every exited child; remember the wait statuses of the pids asked about."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if statuses is not None:
            statuses[pid] = status


def my_children() -> list[int]:
    me = os.getpid()
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            kids.append(int(entry))
    return kids


def mounts_under(prefix: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4]
            target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), target)
            if target.startswith(prefix + "/"):
                out.append(target)
    return out


def umount_all_under(prefix: str) -> list[str]:
    """Unmount everything below prefix, deepest first; return what was mounted."""
    found = mounts_under(prefix)
    for _ in range(5):
        left = mounts_under(prefix)
        if not left:
            break
        for target in sorted(left, key=lambda t: (t.count("/"), t), reverse=True):
            b = os.fsencode(target)
            if libc.umount2(b, 0) != 0:
                libc.umount2(b, MNT_DETACH)
    return found


def clean_tmpdir(tmpdir: Path) -> list[str]:
    found = umount_all_under(str(tmpdir))
    if tmpdir.exists():
        if mounts_under(str(tmpdir)):
            print(f"warning: mounts remain under {tmpdir}; not removing it", file=sys.stderr)
        else:
            # never cross into a file system that is still mounted below
            subprocess.run(["rm", "-rf", "--one-file-system", str(tmpdir)], check=False)
    return found


def runtime_list(runtime: str) -> set[str] | None:
    try:
        p = subprocess.run([runtime, "list", "-q"], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    return {line.strip() for line in p.stdout.splitlines() if line.strip()}


def force_delete(runtime: str, ids: set[str]) -> None:
    for cid in sorted(ids):
        try:
            subprocess.run([runtime, "delete", "--force", cid], capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            pass


def kill_strays() -> int:
    """Kill whatever is still parented to us (container processes a program left)."""
    n = 0
    deadline = time.monotonic() + 2
    while True:
        reap()
        kids = my_children()
        if not kids or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
            n += 1
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while my_children() and time.monotonic() < deadline:
        reap()
        time.sleep(0.02)
    reap()
    return n


def remove_test_cgroups() -> list[str]:
    """rmdir the (empty) cgroups the cgroup programs create and never remove."""
    removed = []
    if not CGROUP_ROOT.is_dir():
        return removed
    for hier in sorted(CGROUP_ROOT.iterdir()):
        for top in TEST_CGROUP_DIRS:
            base = hier / top
            if not base.is_dir():
                continue
            for dirpath, _dirs, _files in os.walk(base, topdown=False):
                try:
                    os.rmdir(dirpath)
                    removed.append(dirpath)
                except OSError:
                    pass
    return removed


def run_program(prog: Path, cwd: Path, env: dict, out: Path, err: Path,
                timeout: float) -> tuple[int, float]:
    """Run one program to completion while reaping everything; return (rc, seconds)."""
    t0 = time.monotonic()
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([str(prog)], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=fo, stderr=fe, start_new_session=True)
    statuses: dict[int, int] = {}
    term_at = t0 + timeout
    kill_at = None
    timed_out = False
    while proc.pid not in statuses:
        reap(statuses)
        if proc.pid in statuses:
            break
        now = time.monotonic()
        if not timed_out and now > term_at:
            timed_out = True
            kill_at = now + 10
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        elif kill_at is not None and now > kill_at:
            kill_at = None
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)
    proc.returncode = 0  # reaped by us; keep Popen from waiting again
    elapsed = time.monotonic() - t0
    status = statuses[proc.pid]
    if timed_out:
        rc = 124
    elif os.WIFSIGNALED(status):
        rc = 128 + os.WTERMSIG(status)
    else:
        rc = os.WEXITSTATUS(status)
    return rc, elapsed


OK_RE = re.compile(r"^ok [0-9]+")
NOT_OK_RE = re.compile(r"^not ok [0-9]+")
PLAN_RE = re.compile(r"^1\.\.([0-9]+)")
SKIP_RE = re.compile(r" # (SKIP|skip)")
TODO_RE = re.compile(r" # (TODO|todo)")
YAML_ERROR_RE = re.compile(r'^    "error": ".+"')


def count(tap: str, rc: int, name: str = "") -> dict:
    p = f = s = n = plan = 0
    err = False
    has_header = False
    for line in tap.splitlines():
        if line.startswith("TAP version"):
            has_header = True
        if OK_RE.match(line):
            n += 1
            if SKIP_RE.search(line):
                s += 1
            else:
                p += 1
        elif NOT_OK_RE.match(line):
            n += 1
            if TODO_RE.search(line):
                s += 1
            else:
                f += 1
        elif PLAN_RE.match(line):
            plan += int(PLAN_RE.match(line).group(1))
        elif YAML_ERROR_RE.match(line):
            err = True
    extra = 0
    status = "PASS"
    if rc in (124, 137):
        status, p, s, extra = "TIMEOUT", 0, 0, 1
    elif rc != 0:
        status, p, s, extra = "CRASH", 0, 0, 1
    elif n == 0:
        if err:
            status, extra = "ERROR", 1
        elif not has_header and not name.endswith("_fail"):
            # nothing at all: an "inside" program whose runtimetest output (the
            # container's stdout) never arrived exits 0 and prints nothing. Only the
            # process_*_fail programs are silent on success (create failed as it must).
            status, extra = "EMPTY", 1
        else:
            p = 1
    elif plan != n:
        status, extra = "BADPLAN", 1
    elif f:
        status = "FAIL"
    elif not p:
        status = "SKIP"
    return {"status": status, "passed": p, "failed": f + extra, "skipped": s, "rc": rc,
            "assertions": n, "plan": plan}


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    osname = "unknown"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {"kernel": platform.release(), "cpu": cpu, "nproc": os.cpu_count(), "os": osname}


def runtime_version(runtime: str) -> str:
    try:
        p = subprocess.run([runtime, "--version"], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        return (p.stdout.strip().splitlines() or ["?"])[0]
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def status_cell(r: dict) -> str:
    return f"CRASH(rc={r['rc']})" if r["status"] == "CRASH" else r["status"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runtime", required=True, help="absolute path of the runtime binary")
    ap.add_argument("--name", help="results name (default: basename of --runtime)")
    ap.add_argument("--build-dir", required=True, type=Path)
    ap.add_argument("--results", required=True, type=Path)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--tests", default="", help="space-separated program names (default: all)")
    ap.add_argument("--budget", type=float, default=0,
                    help="seconds for the whole suite; programs not started by then count "
                         "as NOTRUN failures (default: no limit)")
    a = ap.parse_args()

    if os.geteuid() != 0:
        print("suite.py: must run as root", file=sys.stderr)
        return 2
    become_subreaper()
    name = a.name or os.path.basename(a.runtime)
    build = a.build_dir.resolve()
    bindir = build / "bin"
    available = sorted(p.name for p in bindir.iterdir() if p.is_file() and os.access(p, os.X_OK))
    tests = a.tests.split() or available
    unknown = [t for t in tests if t not in available]
    if unknown:
        print(f"suite.py: unknown programs: {' '.join(unknown)}", file=sys.stderr)
        return 2

    raw = build / "results" / name
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    tmpdir = build / "tmp"
    env = dict(os.environ, RUNTIME=a.runtime, TMPDIR=str(tmpdir))
    env.pop("TESTS", None)

    version = runtime_version(a.runtime)
    print(f"runtime: {a.runtime} ({version}); raw output in {raw}", flush=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    programs: dict[str, dict] = {}
    notes: list[str] = []
    for t in tests:
        if a.budget and time.monotonic() - t0 > a.budget:
            r = {"status": "NOTRUN", "passed": 0, "failed": 1, "skipped": 0, "rc": None,
                 "assertions": 0, "plan": 0, "seconds": 0.0}
            programs[t] = r
            print(f"{t:<32} {0:4d} ok {1:4d} fail {0:4d} skip  {'NOTRUN':<12} {0:5.1f}s",
                  flush=True)
            continue
        clean_tmpdir(tmpdir)
        tmpdir.mkdir(parents=True, exist_ok=True)
        before = runtime_list(a.runtime)
        rc, secs = run_program(bindir / t, build, env, raw / f"{t}.tap", raw / f"{t}.err",
                               a.timeout)
        after = runtime_list(a.runtime)
        left = sorted(after - before) if before is not None and after is not None else []
        force_delete(a.runtime, set(left))
        strays = kill_strays()
        leaked = clean_tmpdir(tmpdir)
        r = count((raw / f"{t}.tap").read_text(errors="replace"), rc, t)
        r["seconds"] = round(secs, 2)
        r["leftover_containers"] = len(left)
        r["stray_processes_killed"] = strays
        r["leaked_mounts"] = len(leaked)
        programs[t] = r
        if leaked:
            notes.append(f"{t} left {len(leaked)} mounts in the host mount namespace (unmounted)")
        if left:
            notes.append(f"{t} left {len(left)} containers (force-deleted)")
        if strays:
            notes.append(f"{t} left {strays} processes running (killed)")
        print(f"{t:<32} {r['passed']:4d} ok {r['failed']:4d} fail {r['skipped']:4d} skip  "
              f"{status_cell(r):<12} {secs:5.1f}s", flush=True)
    clean_tmpdir(tmpdir)
    notrun = [t for t, r in programs.items() if r["status"] == "NOTRUN"]
    if notrun:
        notes.append(f"{len(notrun)} programs not run: the {a.budget:.0f}s budget ran out")
    removed = remove_test_cgroups()
    if removed:
        notes.append(f"removed {len(removed)} empty test cgroups")
    wall = time.monotonic() - t0

    passing = sorted(t for t, r in programs.items() if r["status"] == "PASS")
    tot = {k: sum(r[k] for r in programs.values()) for k in ("passed", "failed", "skipped")}
    summary = {
        "runtime": name,
        "binary": a.runtime,
        "version": version,
        "date": started.isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 1),
        "machine": machine_info(),
        "subset": bool(a.tests.split()),
        "programs_total": len(programs),
        "programs_passing": len(passing),
        "programs_all_skipped": sum(r["status"] == "SKIP" for r in programs.values()),
        "assertions": tot,
        "notes": notes,
        "programs": programs,
    }
    out = a.results / name
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"{t:<32} {r['passed']:4d} ok {r['failed']:4d} fail {r['skipped']:4d} skip  "
             f"{status_cell(r):<12} {r['seconds']:5.1f}s" for t, r in programs.items()]
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, out / "summary.json")

    for n in notes:
        print(f"note: {n}")
    print(f"runtime {name}: {wall:.0f}s, summary in {out / 'summary.json'}")
    print(f"programs: {len(passing)}/{len(programs)} fully passing, "
          f"{summary['programs_all_skipped']} all-skipped")
    print(f"conformance totals: {tot['passed']} passed, {tot['failed']} failed, "
          f"{tot['skipped']} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
