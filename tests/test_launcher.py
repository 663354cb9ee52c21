"""The launcher script (pyruntime/launcher.py): which interpreter it runs, and that what it writes
works. Every other test goes through the launcher tests/setup.sh installed."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pyruntime import launcher

DISTRO_PYTHON = "/usr/bin/python%d.%d" % sys.version_info[:2]


def shebang(path) -> str:
    with open(path) as f:
        return f.readline()


def test_written_launcher_runs_the_cli(tmp_path):
    dest = tmp_path / "pyruntime"
    python = launcher.write(str(dest), os.path.realpath(sys.executable))
    assert shebang(dest) == f"#!{python} -IS\n"
    p = subprocess.run([str(dest), "--version"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "pyruntime" in p.stdout, p.stderr
    # the dependencies come from the installing environment's site-packages, without `site`
    code = open(dest).read().replace("from pyruntime.cli import run\nrun()\n",
                                     "import jsonschema, jeepney\n")
    probe = subprocess.run([python, "-IS", "-c", code], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr


def test_prefers_the_distribution_build_of_the_same_minor_version(monkeypatch):
    assert os.access(DISTRO_PYTHON, os.X_OK), "tests/setup.sh installs Debian's python3"
    if os.path.realpath(DISTRO_PYTHON) == os.path.realpath(sys.executable):
        pytest.skip("the tests run on the distribution's python: there is no other to prefer")
    site = launcher.site_dirs()
    assert launcher.choose_interpreter(site) == os.path.realpath(DISTRO_PYTHON)
    # one that cannot import pyruntime and its dependencies is passed over
    monkeypatch.setattr(launcher, "can_run", lambda python, site: False)
    assert launcher.choose_interpreter(site) == os.path.realpath(sys.executable)


def test_refuses_an_interpreter_that_cannot_run_pyruntime(tmp_path, capsys):
    dest = tmp_path / "pyruntime"
    assert launcher.main(["--python", "/bin/false", str(dest)]) == 1
    assert "cannot import pyruntime" in capsys.readouterr().err
    assert not dest.exists()
