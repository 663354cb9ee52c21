"""Rootless scenarios: podman run by the unprivileged user tests/setup.sh creates.

The user cannot read root's files: a pyruntime launcher whose package or dependencies sit
under /root (an editable install from a checkout there, pyenv's site-packages) fails for it.
user_launcher() then writes one the user can run: the same interpreter and a copy of the
package (a container's start needs nothing else) in a dir it can read. The launcher given is
used as it is whenever the user can already import from it.
"""
from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import tempfile

from daemons import sh

USER = "pyrt-rootless"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
# rootless podman's storage: vfs needs no extra package and no /dev/fuse (fuse-overlayfs needs
# both); it copies each layer in full, which costs nothing on a busybox image.
STORAGE_DRIVER = "vfs"


def as_user(argv: list[str]) -> list[str]:
    return [SETPRIV, "--reuid", USER, "--regid", USER, "--init-groups", "--", *argv]


def launcher_parts(path: str) -> tuple[str, list[str]] | None:
    """(interpreter, sys.path entries) of a launcher pyruntime.cli.launcher wrote, else None."""
    try:
        with open(path) as f:
            text = f.read(65536)
        tree = ast.parse(text)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None
    if not text.startswith("#!"):
        return None
    paths: list[str] = []
    for node in ast.walk(tree):
        try:
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "insert":
                paths.append(ast.literal_eval(node.args[1]))
            elif isinstance(node, ast.AugAssign):
                paths += ast.literal_eval(node.value)
        except (ValueError, IndexError):
            continue
    return text.split("\n", 1)[0][2:].split()[0], paths


def user_launcher(path: str, workdir: str) -> str:
    """A pyruntime launcher the user can run (see the module's docstring)."""
    parts = launcher_parts(path)
    if parts is None:
        return path
    interpreter, paths = parts
    probe = f"import sys; sys.path[:0] = {paths!r}; import pyruntime.cli"
    if sh(as_user([interpreter, "-IS", "-c", probe])).returncode == 0:
        return path
    d = tempfile.mkdtemp(prefix="launcher-", dir=workdir)
    for p in paths:
        if os.path.isfile(os.path.join(p, "pyruntime", "__init__.py")) and \
                not os.path.exists(os.path.join(d, "pyruntime")):
            shutil.copytree(os.path.join(p, "pyruntime"), os.path.join(d, "pyruntime"),
                            ignore=shutil.ignore_patterns("__pycache__"))
    launcher = os.path.join(d, "pyruntime-rootless")
    with open(launcher, "w") as f:
        f.write(f"#!{interpreter} -IS\nimport sys\nsys.path.insert(0, {d!r})\n"
                "from pyruntime.cli.fast import run\nrun()\n")
    subprocess.run(["chmod", "-R", "a+rX", d], check=True)
    os.chmod(launcher, 0o755)
    return launcher


class RootlessPodman:
    """podman as the user, with storage, runtime dir and home in a private dir."""

    def __init__(self, prefix: str):
        self.dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        os.chmod(self.dir, 0o755)
        for sub in ("home", "xdg", "conf", "storage", "runroot", "tmp"):
            os.mkdir(os.path.join(self.dir, sub), 0o700)
        subprocess.run(["chown", "-R", f"{USER}:{USER}", self.dir], check=True)
        self.xdg = os.path.join(self.dir, "xdg")

    def argv(self, runtime: str, *args: str) -> list[str]:
        env = ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", f"USER={USER}",
               f"LOGNAME={USER}", f"HOME={self.dir}/home", f"XDG_RUNTIME_DIR={self.xdg}",
               f"XDG_CONFIG_HOME={self.dir}/conf"]
        return as_user(["env", "-i", *env, "podman", "--root", f"{self.dir}/storage",
                        "--runroot", f"{self.dir}/runroot", "--tmpdir", f"{self.dir}/tmp",
                        "--storage-driver", STORAGE_DRIVER, "--cgroup-manager", "cgroupfs",
                        "--events-backend", "file", "--runtime", runtime, *args])

    def left_in_runtime_dirs(self) -> list[str]:
        """State dirs the runtimes left in the user's runtime dir ($XDG_RUNTIME_DIR/<name>)."""
        left = []
        for name in ("pyruntime", "runc"):
            d = os.path.join(self.xdg, name)
            if os.path.isdir(d):
                left += [f"{name}/{e}" for e in os.listdir(d) if e != ".cache"]
        return left

    def close(self) -> None:
        """Stop the user namespace's pause process podman left, then remove everything."""
        # podman keeps it in its tmpdir (--tmpdir), else in $XDG_RUNTIME_DIR/libpod/tmp
        for pidfile in glob.glob(os.path.join(self.dir, "tmp", "pause.pid")) + \
                glob.glob(os.path.join(self.xdg, "libpod", "tmp", "pause.pid")):
            try:
                with open(pidfile) as f:
                    os.kill(int(f.read().strip()), 9)
            except (OSError, ValueError):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
