"""`pip install pyruntime` as a new user does it: a wheel built from this tree, installed into a
fresh venv with its declared dependencies only, gives a CLI that runs a container (`demo`)."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

from conftest import children_of, reap_zombies

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, **kw):
    p = subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)
    assert p.returncode == 0, f"{args}: rc={p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def test_a_wheel_in_a_fresh_venv_runs_a_container(tmp_path):
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), ROOT)
    wheel, = glob.glob(str(tmp_path / "dist" / "pyruntime-*.whl"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    # the declared dependencies come from the package index, as for a user; nothing else
    run(str(venv / "bin" / "pip"), "install", "-q", wheel)
    listed = run(str(venv / "bin" / "pip"), "list", "--format=freeze").stdout.lower()
    for dist in ("jsonschema", "jeepney", "pyroute2", "protobuf"):  # and nothing by hand
        assert dist in listed, listed
    p = run(str(venv / "bin" / "pyruntime"), "--root", str(tmp_path / "state"), "demo", "cat",
            "/proc/self/status")
    assert "NoNewPrivs:\t1" in p.stdout and "CapEff:" in p.stdout, p.stdout
    assert os.listdir(tmp_path / "state") in ([], [".cache"])
    reap_zombies()
    assert not children_of(os.getpid())
