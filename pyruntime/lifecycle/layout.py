"""The state dir's names and rules, shared by state.py and the lean CLI paths (cli/fast.py,
the warm server's client).

This module imports only builtin modules: cli/fast.py runs before `os` may be imported.
"""

DEFAULT_ROOT = "/run/pyruntime"
STATE_FILE = "pyruntime.json"
STATE_TMP = "." + STATE_FILE + ".tmp"
FIFO = "exec.fifo"
ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")
NAME_MAX = 255  # the id names the state dir (and the default cgroup): one file name

# pyruntime.json's fields and their defaults (a missing field has its default)
STATE_FIELDS = {
    "id": "", "bundle": "", "rootfs": "", "created": "",
    "pid": 0,
    "init_start": 0,        # /proc/<pid>/stat starttime of the init, in clock ticks
    "status": "creating",   # as last written; see Container.status() for the live value
    "annotations": {},
    "owner": "",
    "cgroup": {},           # the cgroup manager's to_state()
    "hooks": {},            # poststart/poststop, kept for start and delete
    "config_process": {},   # defaults for `exec`
    "seccomp": {},          # applied to `exec`'d processes too
    "no_pid_ns": False,     # shares a pid ns: kill --all must walk the cgroup
    "use_systemd": False,
    "intel_rdt": {},        # intelrdt.apply()'s groups, for exec and delete
    "memory_policy": [],    # linux.memoryPolicy as (mode | flags, node mask), for exec
    "oci_version": "1.3.0",
}


def check_state(data) -> None:
    """ValueError naming the first field of a state file's data that is wrong (the file may
    have been damaged: every command that reads it relies on these types)."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    for name, value in data.items():
        default = STATE_FIELDS.get(name)
        if default is None:
            raise ValueError(f"{name}: unknown field")
        if type(value) is not type(default):
            raise ValueError(f"{name}: {type(value).__name__} where "
                             f"{type(default).__name__} belongs")
    for name in ("pid", "init_start"):
        if data.get(name, 0) < 0:
            raise ValueError(f"{name}: {data[name]} is negative")
    cg = data.get("cgroup") or {}
    if cg:
        dirs, created = cg.get("dirs"), cg.get("created", [])
        if not isinstance(cg.get("mode"), str) or not isinstance(dirs, dict) or \
                not all(isinstance(v, str) and v.startswith("/") for v in dirs.values()) or \
                not isinstance(created, list) or \
                not all(isinstance(v, str) and v.startswith("/") for v in created) or \
                not isinstance(cg.get("extra", {}), dict) or \
                not isinstance(cg.get("unified_mount", ""), (str, type(None))):
            raise ValueError("cgroup: not a cgroup record")


def valid_id(cid: str) -> bool:
    """runc's rule: letters, digits, _ + - . (and never a path)."""
    return bool(cid) and ID_CHARS.issuperset(cid) and cid not in (".", "..") and \
        len(cid) <= NAME_MAX


def write_pid_file(path: str, pid: int) -> None:
    """--pid-file: whole or not at all (a temporary file renamed over it)."""
    import posix
    tmp = f"{path}.{posix.getpid()}.tmp"
    try:
        fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC,
                        0o666)
        try:
            posix.write(fd, str(pid).encode())
        finally:
            posix.close(fd)
        posix.rename(tmp, path)
    except OSError as e:
        try:
            posix.unlink(tmp)
        except OSError:
            pass
        from pyruntime.errors import RuntimeFailure
        raise RuntimeFailure(f"--pid-file {path}: {e.strerror.lower()}", errno=e.errno) from None


def start_time(stat: bytes):
    """starttime (clock ticks since boot) from /proc/<pid>/stat, or None for a zombie: with
    the pid it names our init; a recycled pid has another start time."""
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])
