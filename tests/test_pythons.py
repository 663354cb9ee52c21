"""Every Python that pyproject.toml's classifiers list runs real containers here: a launcher
written for it runs a container under Docker's default seccomp profile, and an exec into it.
.ci/run also runs the lifecycle, seccomp, exec and hot-path tests through each launcher."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import pythons
from conftest import is_pyruntime

from pyruntime.cli import launcher

DOCKER_PROFILE = os.path.join(os.path.dirname(__file__), "seccomp", "docker-default.json")

pytestmark = pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own interpreters")


def test_the_classifiers_list_the_pythons_we_claim():
    assert pythons.versions() == ["3.11", "3.12", "3.13"]


@pytest.mark.parametrize("version", pythons.versions())
def test_a_container_with_docker_seccomp_profile_runs_on(version, runtime, bundle):
    python = pythons.interpreter(version)
    assert python, f"Python {version} is in pyproject.toml's classifiers but not on this machine"
    dest = pythons.LAUNCHER.format(version=version)  # tests/setup.sh writes one per Python
    assert os.access(dest, os.X_OK), f"{dest} missing: run tests/setup.sh"
    with open(dest) as f:
        assert os.path.realpath(f.readline()[2:].split()[0]) == os.path.realpath(python)
        assert repr(launcher.PACKAGE_PARENT) in f.read(), f"{dest} runs another tree"
    runtime.binary = dest
    with open(DOCKER_PROFILE) as f:
        bundle.config["linux"]["seccomp"] = json.load(f)
    bundle.config["process"]["args"] = ["sleep", "30"]
    bundle.write()
    cid = runtime.create(bundle)
    runtime("start", cid)
    status = runtime("exec", cid, "cat", "/proc/self/status").stdout
    assert "\nSeccomp:\t2\n" in status  # the filter holds in the exec'd process
    assert runtime.state(cid)["status"] == "running"
    runtime("delete", "--force", cid)


def test_the_seccomp_cache_key_is_the_same_on_every_python():
    """Whichever interpreter (and so whichever hash and JSON module) computed it."""
    code = (f"import sys; sys.path.insert(0, {launcher.PACKAGE_PARENT!r}); "
            "from pyruntime.seccomp import compile as seccomp; import json; "
            f"print(seccomp._cache_path('/c', json.load(open({DOCKER_PROFILE!r}))))")
    keys = {v: subprocess.run([pythons.interpreter(v), "-IS", "-c", code], capture_output=True,
                              text=True, timeout=60, check=True).stdout
            for v in pythons.versions()}
    assert len(set(keys.values())) == 1, keys


def test_the_interpreter_running_the_tests_is_a_listed_one():
    assert "%d.%d" % sys.version_info[:2] in pythons.versions()


@pytest.mark.parametrize("version", pythons.versions())
def test_every_module_compiles_and_imports_on(version):
    """Each Python compiles the package itself (3.13 encodes docstrings it dedents, so a lone
    surrogate in one fails there only); optional dependencies come from the launcher's dirs."""
    launcher_file = pythons.LAUNCHER.format(version=version)
    with open(launcher_file) as f:
        paths = "".join(line for line in f if line.startswith(("import sys", "sys.path")))
    code = paths + (
        "import pkgutil, pyruntime\n"
        "for m in pkgutil.walk_packages(pyruntime.__path__, 'pyruntime.'):\n"
        "    __import__(m.name)\n")
    p = subprocess.run([pythons.interpreter(version), "-IS", "-B", "-c", code],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
