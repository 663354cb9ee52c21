"""The launcher script (pyruntime/cli/launcher.py): which interpreter it runs, and that what it writes
works. Every other test goes through the launcher tests/setup.sh installed."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pyruntime.cli import launcher

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
    code = open(dest).read().replace("\nrun()\n", "\nimport jsonschema, jeepney\n")
    probe = subprocess.run([python, "-IS", "-c", code], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr


@pytest.mark.skipif(not os.access(DISTRO_PYTHON, os.X_OK),
                    reason=f"no distribution build of Python {sys.version_info[0]}.{sys.version_info[1]} here")
def test_prefers_the_distribution_build_of_the_same_minor_version(monkeypatch):
    if os.path.realpath(DISTRO_PYTHON) == os.path.realpath(sys.executable):
        pytest.skip("the tests run on the distribution's python: there is no other to prefer")
    assert launcher.choose_interpreter()[0] == os.path.realpath(DISTRO_PYTHON)
    # one that cannot import pyruntime and its dependencies is passed over
    real = launcher.inspect

    def inspect(python):
        if python == os.path.realpath(DISTRO_PYTHON):
            raise launcher.Unusable("no")
        return real(python)
    monkeypatch.setattr(launcher, "inspect", inspect)
    assert launcher.choose_interpreter()[0] == os.path.realpath(sys.executable)


def test_refuses_what_is_not_a_python(tmp_path, capsys):
    dest = tmp_path / "pyruntime"
    assert launcher.main(["--python", "/bin/false", str(dest)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"launcher: {os.path.realpath('/bin/false')} is not a Python pyruntime can use")
    assert err.count("\n") == 1
    assert launcher.main(["--python", str(tmp_path / "nosuch"), str(dest)]) == 1
    assert "nosuch: No such file or directory" in capsys.readouterr().err
    assert not dest.exists()


def test_names_the_module_an_interpreter_lacks(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(launcher, "PROBE", launcher.PROBE + ("pyruntime_no_such_dependency",))
    dest = tmp_path / "pyruntime"
    assert launcher.main(["--python", sys.executable, str(dest)]) == 1
    err = capsys.readouterr().err
    assert "cannot import pyruntime_no_such_dependency" in err and sys.executable in err, err
    assert err.count("\n") == 1 and not dest.exists()


def test_a_launcher_whose_package_is_gone_says_so_in_one_line(tmp_path):
    dest = tmp_path / "pyruntime"
    launcher.write(str(dest), os.path.realpath(sys.executable))
    text = open(dest).read().replace(repr(launcher.PACKAGE_PARENT), repr(str(tmp_path / "gone")))
    dest.write_text(text)
    p = subprocess.run([str(dest), "state", "x"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert p.stderr.startswith("pyruntime: ") and "cannot import pyruntime" in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1, p.stderr


def test_refuses_a_python_older_than_the_package_needs(tmp_path, capsys):
    old = os.path.expanduser("~/.pyenv/versions/3.10.13/bin/python3")
    if not os.access(old, os.X_OK):
        pytest.skip("no Python 3.10 on this machine")
    assert launcher.main(["--python", old, str(tmp_path / "pyruntime")]) == 1
    assert "is Python 3.10; pyruntime needs 3.11 or newer" in capsys.readouterr().err
