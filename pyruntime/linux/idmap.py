"""Writing a user namespace's id maps without the host's root (rootless mode), as runc does.

The kernel lets an unprivileged process map exactly one id, its own, into a namespace it
created (and, for the gid map, only once `setgroups` is "deny"). Anything else (several
ranges, subordinate ids from /etc/subuid and /etc/subgid) goes through the setuid helpers
`newuidmap`/`newgidmap` (Debian package `uidmap`), which check the ranges against those files.
"""
from __future__ import annotations

import os

from pyruntime.errors import RuntimeFailure

HELPERS = {"uid": "newuidmap", "gid": "newgidmap"}
FIELDS = {"uid": "linux.uidMappings", "gid": "linux.gidMappings"}


def can_write_directly(maps: list[dict], own_id: int) -> bool:
    """One mapping of the caller's own id, size 1: what the kernel allows unprivileged."""
    return len(maps) == 1 and maps[0]["hostID"] == own_id and maps[0]["size"] == 1


def helper_args(binary: str, pid: int, maps: list[dict]) -> list[str]:
    """newuidmap PID  CONTAINER-ID HOST-ID SIZE  [...]."""
    args = [binary, str(pid)]
    for m in maps:
        args += [str(m["containerID"]), str(m["hostID"]), str(m["size"])]
    return args


def find_helper(name: str, path: str | None = None) -> str | None:
    for d in (path if path is not None else os.environ.get("PATH", "/usr/bin:/bin")).split(":"):
        candidate = os.path.join(d or ".", name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def write_maps(pid: int, uid_maps: list[dict], gid_maps: list[dict]) -> None:
    """Map the namespace of `pid` (a child that has unshared CLONE_NEWUSER) unprivileged."""
    # The gid map first: a direct one needs setgroups denied, which must precede it.
    _write("gid", pid, gid_maps, os.getegid())
    _write("uid", pid, uid_maps, os.geteuid())


def _write(kind: str, pid: int, maps: list[dict], own_id: int) -> None:
    if not maps:
        return
    if can_write_directly(maps, own_id):
        try:
            if kind == "gid":
                with open(f"/proc/{pid}/setgroups", "w") as f:
                    f.write("deny")
            with open(f"/proc/{pid}/{kind}_map", "w") as f:
                f.write(f"{maps[0]['containerID']} {own_id} 1\n")
        except OSError as e:
            raise RuntimeFailure(f"{FIELDS[kind]}: cannot write /proc/{pid}/{kind}_map: "
                                 f"{e.strerror}", errno=e.errno) from None
        return
    name = HELPERS[kind]
    binary = find_helper(name)
    if binary is None:
        raise RuntimeFailure(f"{FIELDS[kind]}: rootless mode maps several ids (or ids other than "
                             f"your own) with {name}, which is not on PATH: install it (Debian "
                             "package uidmap) or map only your own id")
    _run(binary, helper_args(binary, pid, maps), FIELDS[kind], name)


def _run(binary: str, args: list[str], field: str, name: str) -> None:
    r, w = os.pipe()
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            child = os.posix_spawn(binary, args, os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, w, 1),
                (os.POSIX_SPAWN_DUP2, w, 2)])
        finally:
            os.close(devnull)
    except OSError as e:
        os.close(r)
        raise RuntimeFailure(f"{field}: cannot run {binary}: {e.strerror}", errno=e.errno) from None
    finally:
        os.close(w)
    out = b""
    with os.fdopen(r, "rb") as f:
        out = f.read(4096)
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        text = " ".join(out.decode(errors="replace").split()) or f"exit status {status}"
        raise RuntimeFailure(f"{field}: {name} refused the mapping ({' '.join(args[2:])}): "
                             f"{text} (the ranges must be yours in /etc/sub{name[3:6]})")
