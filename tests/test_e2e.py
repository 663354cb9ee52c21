"""End to end: Docker, containerd (ctr) and podman drive pyruntime, with runc as the reference.

The harness, conformance/e2e/run, runs once per pytest session (with -n, the first worker that
needs it runs it while the others wait for its results file); each of its scenarios is a test
here that passes when pyruntime behaved as runc did. It installs what is missing with apt,
starts a private containerd and dockerd, and takes a couple of minutes.

The tests are skipped, with the harness's reason, only when the daemons cannot run on this
machine (not root, the packages cannot be installed, a daemon does not start), or when
PYRUNTIME_E2E=0 asks for it.

With PYRUNTIME_TEST_SERVER=1 (conftest.py) the harness runs in server mode (`run --server`): a
warm `pyruntime server` for every --root the engines use; test_e2e_servers then checks that the
servers served, and adds their tally to the suite's server log.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SERVER_LOG, SERVER_MODE

HARNESS = Path(__file__).resolve().parent.parent / "conformance" / "e2e" / "run"
UNAVAILABLE = 77
TIMEOUT = 1500  # apt installs included


def _scenario_names() -> list[str]:
    r = subprocess.run([str(HARNESS), "--list"], capture_output=True, text=True, timeout=60)
    if r.returncode:
        raise RuntimeError(f"{HARNESS} --list: {r.stderr.strip()}")
    return r.stdout.splitlines()


NAMES = _scenario_names()


@pytest.fixture(scope="session")
def e2e_results(tmp_path_factory) -> dict:
    if os.environ.get("PYRUNTIME_E2E", "1") == "0":
        pytest.skip("PYRUNTIME_E2E=0: the end-to-end harness is disabled")
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by every worker of this session
    out, log = base / "e2e-results.json", base / "e2e-output.txt"
    with open(base / "e2e.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.exists():
            data = _run_harness(out, log, "w")
            if data.get("docker_deadlock"):
                # docker's own bug (daemons.LIBNETWORK_DEADLOCK), not the runtime's: the
                # scenarios after it could not run; one more run, with fresh daemons
                data = _run_harness(out, log, "a")
            out.write_text(json.dumps(data))
        data = _load(out)
    data["log"] = str(log)
    return data


def _run_harness(out: Path, log: Path, mode: str) -> dict:
    with open(log, mode) as f:
        try:
            server = ["--server"] if SERVER_MODE else []
            rc = subprocess.run([str(HARNESS), "--json", str(out), *server], stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                timeout=TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    data = _load(out)
    data["rc"] = rc
    return data


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"results": []}


@pytest.mark.parametrize("name", NAMES)
def test_e2e(e2e_results, name):
    if e2e_results.get("unavailable"):
        pytest.skip(f"end to end unavailable on this machine: {e2e_results['unavailable']}")
    by_name = {r["name"]: r for r in e2e_results.get("results", [])}
    res = by_name.get(name)
    if res is None:
        tail = Path(e2e_results["log"]).read_text(errors="replace")[-3000:] \
            if os.path.exists(e2e_results["log"]) else ""
        pytest.fail(f"the harness did not run {name!r} (exit {e2e_results.get('rc')}); its "
                    f"output ends with:\n{tail}", pytrace=False)
    if res.get("skipped"):
        pytest.skip(res["why"])
    if not res["passed"]:
        expect = f"\n  expected: {res['expect']}" if res.get("expect") else ""
        info = "".join(f"\n  {rt} info: {res[rt + '_info']}" for rt in ("pyruntime", "runc")
                       if res.get(rt + "_info"))
        pytest.fail(f"{name}: {res['why']}\n  pyruntime: {res['pyruntime']}\n"
                    f"  runc:      {res['runc']}{expect}{info}", pytrace=False)


@pytest.mark.skipif(not SERVER_MODE, reason="PYRUNTIME_TEST_SERVER=1 runs the harness with servers")
def test_e2e_servers(e2e_results, request):
    """The engines' creates went through the servers: they served some, stopped cleanly."""
    if e2e_results.get("unavailable"):
        pytest.skip(f"end to end unavailable on this machine: {e2e_results['unavailable']}")
    summary = e2e_results.get("servers")
    if summary is None:
        pytest.fail(f"the harness reported no servers (exit {e2e_results.get('rc')}): see "
                    f"{e2e_results['log']}", pytrace=False)
    served = sum(s["served"] for s in summary)
    refused = sum(sum(s["refused"].values()) for s in summary)
    with open(SERVER_LOG, "a") as f:
        f.write(f"served={served} refused={refused} {request.node.nodeid}\n")
    detail = "; ".join(f"{s['engine']} {s['root']}: served {s['served']}, failed {s['failed']}, "
                       f"refused {s['refused']}" for s in summary)
    assert not e2e_results.get("server_verdict"), f"{e2e_results['server_verdict']} ({detail})"
    assert served > 0, detail


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
