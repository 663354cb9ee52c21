"""Images built offline from the host's files: a busybox rootfs (Debian's busybox-static) and a
python3 base (the host's Debian /usr/bin/python3.11, the libraries ldd names, the stdlib) on top
of it. Written straight into tar files, then `docker import`, `ctr images import`, `podman import`."""
from __future__ import annotations

import glob
import io
import os
import re
import subprocess
import tarfile

from daemons import DOCKER, sh

BUSYBOX = "/bin/busybox"
PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
               "distutils", "config-3.11-x86_64-linux-gnu"}

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/sh
"""
GROUP = """root:x:0:
daemon:x:1:
user:x:1000:
nogroup:x:65534:
"""


class _Tar:
    def __init__(self, path: str):
        self.tar = tarfile.open(path, "w")
        self.seen: set[str] = set()

    def dir(self, name: str, mode: int = 0o755) -> None:
        name = name.strip("/")
        if not name or name in self.seen:
            return
        self.dir(os.path.dirname(name))
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode = tarfile.DIRTYPE, mode
        self.tar.addfile(ti)
        self.seen.add(name)

    def data(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        if name in self.seen:
            return
        self.dir(os.path.dirname(name))
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode = len(data), mode
        self.tar.addfile(ti, io.BytesIO(data))
        self.seen.add(name)

    def file(self, name: str, src: str) -> None:
        with open(src, "rb") as f:
            self.data(name, f.read(), os.stat(src).st_mode & 0o7777)

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        if name in self.seen:
            return
        self.dir(os.path.dirname(name))
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
        self.tar.addfile(ti)
        self.seen.add(name)

    def close(self) -> None:
        self.tar.close()


def _busybox_into(t: _Tar) -> None:
    for d in ("proc", "sys", "dev", "etc", "root", "var", "run", "home/user", "usr/lib"):
        t.dir(d)
    t.dir("tmp", 0o1777)
    t.file("bin/busybox", BUSYBOX)
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        if a != "bin/busybox":
            t.symlink(a, "/bin/busybox")
    t.data("etc/passwd", PASSWD.encode())
    t.data("etc/group", GROUP.encode())
    t.data("bin/noexec.sh", b"#!/bin/sh\necho should-not-run\n", 0o644)  # exit 126 case


def busybox_tar(path: str) -> None:
    t = _Tar(path)
    try:
        _busybox_into(t)
    finally:
        t.close()


def _ldd(path: str) -> list[str]:
    r = subprocess.run(["ldd", path], capture_output=True, text=True)
    return re.findall(r"(/\S+) \(0x", r.stdout)


def _usr_path(path: str) -> str:
    """Debian 12 is merged-/usr: store a library under its directory's real path."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def python_tar(path: str) -> None:
    t = _Tar(path)
    try:
        _busybox_into(t)
        t.symlink("lib", "usr/lib")
        t.symlink("lib64", "usr/lib64")
        t.file("usr/bin/python3.11", PYTHON)
        t.symlink("usr/bin/python3", "python3.11")
        libs = set(_ldd(PYTHON))
        for root, dirs, files in os.walk(STDLIB):
            rel = os.path.relpath(root, STDLIB)
            if rel == ".":
                dirs[:] = [d for d in dirs if d not in STDLIB_SKIP and d not in ("site-packages",
                                                                                "dist-packages")]
            for f in files:
                src = os.path.join(root, f)
                if os.path.islink(src):
                    t.symlink(src, os.readlink(src))
                    continue
                t.file(src, src)
                if f.endswith(".so"):
                    libs.update(_ldd(src))
        for lib in sorted(libs):
            t.file(_usr_path(lib), os.path.realpath(lib))
    finally:
        t.close()


def have_python() -> bool:
    return os.access(PYTHON, os.X_OK) and os.path.isdir(STDLIB)


def import_all(d, workdir: str, log=print) -> dict:
    """Build the tars and import them everywhere; return the image names."""
    env = d.env
    bb = os.path.join(workdir, "busybox.tar")
    busybox_tar(bb)
    names = {"docker": "e2e-busybox:latest", "ctr": "docker.io/library/e2e-busybox:latest",
             "podman": "localhost/e2e-busybox:latest"}
    _run([DOCKER, "import", "-c", 'CMD ["sh"]', bb, names["docker"]], env)
    saved = os.path.join(workdir, "busybox-image.tar")
    _run([DOCKER, "save", "-o", saved, names["docker"]], env)
    _run(["ctr", "-a", d.containerd_sock, "-n", "e2e", "images", "import", saved], env)
    names["podman-tar"] = bb
    if have_python():
        py = os.path.join(workdir, "python.tar")
        python_tar(py)
        _run([DOCKER, "import", "-c", 'CMD ["python3"]', py, "e2e-python:latest"], env)
        names["python"] = "e2e-python:latest"
    return names


def _run(cmd, env) -> None:
    r = sh(cmd, env=env)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
