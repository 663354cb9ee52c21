#!/usr/bin/env python3
"""The Pythons pyruntime supports (pyproject.toml's classifiers) and where they are here.

    tests/pythons.py list      one line per version: VERSION INTERPRETER LAUNCHER
    tests/pythons.py install   install the project into each one and write its launcher

tests/setup.sh runs `install`; .ci/run runs the lifecycle tests through each launcher; and
tests/test_pythons.py fails when a listed version has no interpreter or cannot run containers.
The distribution's build is preferred (see pyruntime/cli/launcher.py), then pyenv's newest patch.
"""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = "/usr/local/bin/pyruntime-{version}"


def versions() -> list[str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        classifiers = tomllib.load(f)["project"]["classifiers"]
    found = [m.group(1) for c in classifiers
             if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c))]
    return sorted(found, key=lambda v: tuple(map(int, v.split("."))))


def interpreter(version: str) -> str | None:
    distro = f"/usr/bin/python{version}"
    if os.access(distro, os.X_OK):
        return distro
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    builds = glob.glob(os.path.join(pyenv, "versions", f"{version}.*", "bin", f"python{version}"))
    builds.sort(key=lambda p: int(p.split(f"{version}.")[1].split("/")[0].split("-")[0] or 0))
    return builds[-1] if builds else None


def install(version: str, python: str) -> None:
    """The project and its test extras into that interpreter's environment, then a launcher."""
    if os.path.realpath(python).startswith("/usr/bin/"):
        # Debian's python3.X has no pip of its own (PEP 668); the launcher gives it the same
        # minor version's environment from the installing interpreter.
        python = sys.executable
    subprocess.run([python, "-m", "pip", "install", "-q", "-e", f"{ROOT}[test]"], check=True,
                   cwd=ROOT)
    subprocess.run([python, "-m", "pyruntime.cli.launcher", "--python", interpreter(version),
                    LAUNCHER.format(version=version)], check=True, cwd=ROOT)


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "list"
    missing = [v for v in versions() if not interpreter(v)]
    if missing:
        print(f"pythons: no interpreter for Python {', '.join(missing)} (pyproject.toml lists "
              "it): install it (the distribution's python3.X or pyenv's)", file=sys.stderr)
        return 1
    for v in versions():
        if cmd == "install":
            install(v, interpreter(v))
        elif cmd == "list":
            print(v, interpreter(v), LAUNCHER.format(version=v))
        else:
            print(f"usage: {sys.argv[0]} list|install", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
