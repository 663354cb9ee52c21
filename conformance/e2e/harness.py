"""pyruntime end to end: Docker, containerd (ctr) and podman drive pyruntime, with runc as the
reference. See conformance/e2e/README.md. Run as root: conformance/e2e/run [--help]."""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemons  # noqa: E402
import images  # noqa: E402
import scenarios  # noqa: E402
import servers  # noqa: E402
import checkpoint_scenarios  # noqa: E402,F401  (registers its scenarios)
from scenarios import SCENARIOS, Ctx, Runtime  # noqa: E402

UNAVAILABLE = 77  # exit status when the daemons cannot run here (the reason is printed)


class Harness:
    def __init__(self, d: daemons.Daemons, imgs: dict):
        self.d, self.images, self.env = d, imgs, d.env
        self.shared: dict = {}
        self.shared_lock = threading.Lock()
        self.late_cleanup: list[str] = []
        self.podman_base, self.podman_env = d.podman_base, d.podman_env


def runtimes(pyruntime: str) -> list[Runtime]:
    runc = shutil.which("runc") or "/usr/sbin/runc"
    return [Runtime("pyruntime", "py", "pyruntime", "pyruntime-cfg", pyruntime, 4000),
            Runtime("runc", "rc", "runc", "runc", runc, 4001)]


def observe(h: Harness, rt: Runtime, scn) -> tuple[str, str]:
    c = Ctx(h, rt, scn)
    try:
        res = scn.fn(c)
        obs, info = res if isinstance(res, tuple) else (res, "")
    except scenarios.Fail as e:
        obs, info = f"error: {e}", ""
    except Exception as e:
        obs, info = f"harness error: {type(e).__name__}: {e}", traceback.format_exc(limit=3)
    finally:
        c.close()
    return obs, info


def satisfies(expect, obs: str) -> bool:
    if expect is None:
        return True
    return expect(obs) if callable(expect) else obs == expect


def run_scenario(h: Harness, rts: list[Runtime], scn, srv=None) -> dict:
    t0 = time.monotonic()
    results: dict = {}
    mark = srv.mark() if srv else None

    def one(rt):
        results[rt.name] = observe(h, rt, scn)
    threads = [threading.Thread(target=one, args=(rt,)) for rt in rts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (py, py_info), (rc, rc_info) = results["pyruntime"], results["runc"]
    why = ""
    if scn.expect is not None and satisfies(scn.expect, py) and not satisfies(scn.expect, rc):
        # The reference missed what pyruntime did, which ctr's known output race can cause
        # (a short-lived task's stdout lost before ctr attaches, containerd#770). runc gets a
        # second try; pyruntime never does: a flake of ours fails.
        first = rc
        rc, rc_info = observe(h, next(rt for rt in rts if rt.name == "runc"), scn)
        why = f"runc's first try gave {first!r}; "
    ok = py == rc and satisfies(scn.expect, py)
    if not ok:
        if py != rc:
            why += "pyruntime differs from runc"
        else:
            why += "both differ from the expected " + (repr(scn.expect) if isinstance(scn.expect, str)
                                                      else "condition")
    return {"name": scn.name, "group": scn.group, "passed": ok, "pyruntime": py, "runc": rc,
            "pyruntime_info": py_info, "runc_info": rc_info, "why": why,
            "expect": scn.expect if isinstance(scn.expect, str) else None,
            "secs": round(time.monotonic() - t0, 2),
            **({"server": srv.since(mark)} if srv else {})}


def short(text: str, n: int = 160) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= n else text[:n - 3] + "..."


def line_for(res: dict) -> str:
    def side(rt):
        info = res[f"{rt}_info"]
        return f"{rt}: {short(res[rt])}" + (f" [{short(info, 40)}]" if info and "\n" not in info
                                             else "")
    status = "PASS" if res["passed"] else "FAIL"
    if res.get("skipped"):
        status = "SKIP"
    tail = f" -- {res['why']}" if res.get("why") else ""
    srv = "".join(f" [{e} server: served {t['served']}"
                  + "".join(f", refused {n}: {why}" for why, n in t["refused"].items())
                  + (f", failed {t['failed']}" if t["failed"] else "")
                  + "".join(f", {o}" for o in t["other"]) + "]"
                  for e, t in res.get("server", {}).items())
    return f"{status} {res['name']} ({side('pyruntime')}, {side('runc')}){tail}{srv}"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="conformance/e2e/run", description=__doc__)
    p.add_argument("--pyruntime", default=os.environ.get("PYRUNTIME", "/usr/local/bin/pyruntime"),
                   help="the runtime binary the daemons get (default /usr/local/bin/pyruntime)")
    p.add_argument("--dir", default=os.environ.get("PYRUNTIME_E2E_DIR", "/var/tmp/pyruntime-e2e"),
                   help="private directory for the daemons' state (default %(default)s)")
    p.add_argument("--only", default="", help="run only scenarios whose name matches this regex")
    p.add_argument("--group", action="append", default=[],
                   help="docker, ctr, podman, tutorial (repeatable; default all)")
    p.add_argument("--jobs", "-j", type=int, default=2,
                   help="scenarios run at the same time, each with both runtimes (default 2)")
    p.add_argument("--list", action="store_true", help="print the scenario names and exit")
    p.add_argument("--json", default="", help="also write the results to this file")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install anything")
    p.add_argument("--keep", action="store_true",
                   help="leave the daemons running at the end (stop them with --stop)")
    p.add_argument("--stop", action="store_true", help="stop daemons a --keep run left, and exit")
    p.add_argument("--server", action="store_true",
                   default=os.environ.get("PYRUNTIME_E2E_SERVER") == "1",
                   help="server mode (also PYRUNTIME_E2E_SERVER=1): a `pyruntime server` for "
                        "every --root the engines use (servers.py); fails if they serve nothing")
    p.add_argument("--add-runtime", action="append", default=[], metavar="NAME=PATH",
                   help="register one more runtime with dockerd (daemon.json)")
    return p.parse_args(argv)


def selected(opts) -> list:
    out = []
    for s in SCENARIOS:
        if opts.group and s.group not in opts.group:
            continue
        if opts.only and not re.search(opts.only, s.name):
            continue
        out.append(s)
    return out


def write_json(path: str, data: dict) -> None:
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.rename(tmp, path)


def main(argv=None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    if opts.list:
        for s in selected(opts):
            print(s.name)
        return 0
    t_start = time.monotonic()
    if os.geteuid() != 0:
        return unavailable(opts, "needs root (the daemons and the runtimes run as root)")
    os.makedirs(opts.dir, exist_ok=True)
    lock = open(os.path.join(opts.dir, "lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"e2e: waiting for another run (lock {opts.dir}/lock)", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    extra = dict(r.split("=", 1) for r in opts.add_runtime)
    d = daemons.Daemons(opts.dir, opts.pyruntime, extra)
    daemons.start_orphan_reaper()
    if opts.stop:
        d.cleanup_stale()
        return 0
    if not os.access(opts.pyruntime, os.X_OK):  # a setup error, not a machine limit
        print(f"e2e: {opts.pyruntime} is not installed (run tests/setup.sh)", flush=True)
        return 2
    # Ctrl-C and SIGTERM still stop the daemons
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        try:
            if not opts.no_install:
                daemons.install()
            for tool in ("dockerd", "containerd", "ctr", "docker", "runc"):
                if not shutil.which(tool):
                    raise daemons.Unavailable(f"{tool} is not installed")
            d.start()
        except daemons.Unavailable as e:
            d.stop()
            return unavailable(opts, str(e))
        return run_all(opts, d, t_start)
    except KeyboardInterrupt:
        print("e2e: interrupted", flush=True)
        return 130
    finally:
        if opts.keep:
            print(f"e2e: daemons left running: DOCKER_HOST={d.env['DOCKER_HOST']} "
                  f"ctr -a {d.containerd_sock} -n e2e; stop with: conformance/e2e/run --stop")
        else:
            d.stop()


def unavailable(opts, reason: str) -> int:
    print(f"e2e: unavailable: {reason}", flush=True)
    write_json(opts.json, {"unavailable": reason, "results": []})
    return UNAVAILABLE


def run_all(opts, d: daemons.Daemons, t_start: float) -> int:
    work = os.path.join(d.dir, "images")
    os.makedirs(work, exist_ok=True)
    t0 = time.monotonic()
    imgs = images.import_all(d, work)
    h = Harness(d, imgs)
    setup_notes = []
    scns = selected(opts)
    if any(s.group == "podman" for s in scns):
        r = daemons.sh([*h.podman_base, "import", imgs["podman-tar"],
                        "localhost/e2e-busybox:latest"], env=h.podman_env)
        if r.returncode:
            setup_notes.append(f"podman import failed: {r.stderr.strip()[-200:]}")
    if any(s.group == "tutorial" for s in scns):
        if "python" in imgs:
            try:
                imgs["tutorial"] = scenarios.build_tutorial_image(h)
            except RuntimeError as e:
                setup_notes.append(str(e))
        else:
            setup_notes.append("no /usr/bin/python3.11 on the host: the tutorial is skipped")
    print(f"e2e: daemons up and images built in {t0 - t_start:.1f}s + {time.monotonic() - t0:.1f}s"
          + "".join(f"; {n}" for n in setup_notes), flush=True)
    rts = runtimes(opts.pyruntime)
    results = []
    out_lock = threading.Lock()
    srv = None
    if opts.server:
        try:
            srv = servers.Servers(d, opts.pyruntime)
        except daemons.Unavailable as e:
            print(f"e2e: server mode: {e}", flush=True)
            return 1
        print("e2e: server mode: " + ", ".join(f"{s.engine} {s.root}" for s in srv.servers),
              flush=True)

    def one(scn):
        if scn.group == "tutorial" and "tutorial" not in imgs:
            res = {"name": scn.name, "group": scn.group, "passed": False, "skipped": True,
                   "pyruntime": "", "runc": "", "pyruntime_info": "", "runc_info": "",
                   "why": "no tutorial image", "expect": None, "secs": 0}
        else:
            res = run_scenario(h, rts, scn, srv)
        with out_lock:
            results.append(res)
            print(line_for(res), flush=True)
            write_json(opts.json, {"results": results, "done": False})
    # Scenarios run --jobs at a time, each with both runtimes side by side.
    pool = ThreadPoolExecutor(max(1, opts.jobs))
    summary, verdict = [], ""
    try:
        list(pool.map(one, scns))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: no new scenario starts
        if srv:
            summary = srv.stop()
            verdict = servers.verdict(summary)
            for s in summary:
                print(f"e2e: {s['engine']} server ({s['root']}): served {s['served']}, failed "
                      f"{s['failed']}, refused {sum(s['refused'].values())}"
                      + "".join(f" ({n}: {why})" for why, n in s["refused"].items())
                      + "".join(f"; {o}" for o in s["other"]) + f"; exit {s['exit']}",
                      flush=True)
            if verdict:
                print(f"e2e: server mode FAILED: {verdict}", flush=True)
    failed = sum(not r["passed"] and not r.get("skipped") for r in results)
    deadlock = d.docker_deadlocked() if failed else None
    if deadlock:
        print(f"e2e: {deadlock}: the failures after it are docker's, whatever the runtime",
              flush=True)
    for n in h.late_cleanup if not deadlock else ():
        daemons.sh([daemons.DOCKER, "rm", "-f", "-v", n], env=h.env)
    passed = sum(r["passed"] for r in results)
    skipped = sum(bool(r.get("skipped")) for r in results)
    total = time.monotonic() - t_start
    print(f"e2e: {passed} passed, {failed} failed"
          + (f", {skipped} skipped" if skipped else "") + f" ({total:.0f}s)", flush=True)
    write_json(opts.json, {"results": results, "done": True, "secs": round(total, 1),
                           "setup_notes": setup_notes, "docker_deadlock": deadlock,
                           **({"servers": summary, "server_verdict": verdict} if srv else {})})
    return 0 if failed == 0 and not verdict else 1


if __name__ == "__main__":
    sys.exit(main())
