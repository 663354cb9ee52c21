"""What every cgroup driver shares: the host's mount layout, path rules, file I/O, conversions.

Only cheap stdlib imports: this sits on the hot path of `create`.
"""
from __future__ import annotations

import errno
import os

from pyruntime.errors import RuntimeFailure

MOUNTINFO = "/proc/self/mountinfo"
SELF_CGROUP = "/proc/self/cgroup"
# Mount options of a cgroup (v1) mount that are not controller names.
_NOT_CONTROLLERS = {"rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode", "all",
                    "none", "favordynmods", "nosuid", "nodev", "noexec", "relatime"}


def _unescape(s: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and len(s[i + 1:i + 4]) == 3 and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


class Layout:
    """Where the cgroup hierarchies are mounted, and where this process sits in each.

    v1:      {controller: (mountpoint, mount root)}; named hierarchies as "name=systemd".
    unified: (mountpoint, mount root) of the cgroup2 mount, or None.
    own:     {controller or "" for v2: this process's cgroup path}, from /proc/self/cgroup.
    mode:    "v1", "hybrid" or "v2".
    """

    def __init__(self, v1: dict, unified: tuple | None, own: dict):
        self.v1, self.unified, self.own = v1, unified, own
        real = [c for c in v1 if not c.startswith("name=")]
        if unified and not real:
            self.mode = "v2"
        elif unified:
            self.mode = "hybrid"
        elif real:
            self.mode = "v1"
        else:
            raise RuntimeFailure("cgroups: no cgroup v1 or v2 hierarchy is mounted on this host")

    def __repr__(self):
        return f"Layout(mode={self.mode!r}, v1={self.v1!r}, unified={self.unified!r})"

    def hierarchy_dir(self, key: str, inner: str, *, v2_parent: bool = False) -> str:
        """The absolute dir of cgroup `inner` in the hierarchy of `key` ("" = the cgroup2 mount).

        Absolute `inner` is relative to the hierarchy's root; relative `inner` is relative to
        this process's own cgroup in that hierarchy (runc's rules). v2_parent: use the parent of
        our own cgroup, as runc's fs2 driver does (the own cgroup most likely holds processes, so
        no controller could be enabled below it).
        """
        mnt, root = self.unified if key == "" else self.v1[key]
        if not inner.startswith("/"):
            own = self.own.get(key, "/")
            if v2_parent:
                own = os.path.dirname(own.rstrip("/")) or "/"
            # Our cgroup as seen inside this mount (the mount may show a sub-tree only).
            if root != "/" and (own == root or own.startswith(root + "/")):
                own = own[len(root):] or "/"
            inner = os.path.join(own, inner)
        return os.path.normpath(mnt + "/" + inner) if inner != "/" else mnt


def _own_cgroups() -> dict:
    own = {}
    with open(SELF_CGROUP) as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) != 3:
                continue
            ctrls = parts[1]
            if parts[0] == "0" and ctrls == "":
                own[""] = parts[2]
                continue
            for c in ctrls.split(","):
                if c:
                    own[c] = parts[2]
    return own


def detect(mountinfo: str = MOUNTINFO) -> Layout:
    """Parse mountinfo (one read) and /proc/self/cgroup into a Layout."""
    v1: dict[str, tuple[str, str]] = {}
    unified = None
    with open(mountinfo) as f:
        data = f.read()
    for line in data.splitlines():
        if " - cgroup" not in line:
            continue
        fields = line.split()
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        fstype, opts = fields[sep + 1], fields[sep + 3] if len(fields) > sep + 3 else ""
        root, mnt = _unescape(fields[3]), _unescape(fields[4])
        if fstype == "cgroup2":
            # Prefer the first cgroup2 mount showing the whole hierarchy.
            if unified is None or (unified[1] != "/" and root == "/"):
                unified = (mnt, root)
        elif fstype == "cgroup":
            for opt in opts.split(","):
                if opt in _NOT_CONTROLLERS or opt.startswith("release_agent="):
                    continue
                if opt not in v1 or (v1[opt][1] != "/" and root == "/"):
                    v1[opt] = (mnt, root)
    return Layout(v1, unified, _own_cgroups())


_layout_cache: Layout | None = None


def default_layout() -> Layout:
    global _layout_cache
    if _layout_cache is None:
        _layout_cache = detect()
    return _layout_cache


def clean_path(p: str) -> str:
    """Like runc's CleanPath: normalise, and never let `..` climb above the start."""
    if not p:
        return ""
    if p.startswith("/"):
        return os.path.normpath(p).replace("//", "/")
    return os.path.normpath("/" + p).lstrip("/") or "."


# ---------------------------------------------------------------- file I/O

def read(dirpath: str, name: str) -> str:
    with open(os.path.join(dirpath, name)) as f:
        return f.read()


def read_or(dirpath: str, name: str, default=None):
    try:
        return read(dirpath, name)
    except OSError:
        return default


def read_int(dirpath: str, name: str, default: int = 0) -> int:
    """A single number; "max" reads as 2**64-1 like runc."""
    s = read_or(dirpath, name)
    if s is None:
        return default
    s = s.strip()
    if s == "max":
        return (1 << 64) - 1
    try:
        return int(s.split()[0]) if s else default
    except ValueError:
        return default


def read_kv(dirpath: str, name: str) -> dict[str, int]:
    """A flat keyed file ("key value" lines)."""
    out = {}
    s = read_or(dirpath, name, "")
    for line in s.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def write(dirpath: str, name: str, value, field: str) -> None:
    """Write one value to a cgroup file; failures name the config field."""
    path = os.path.join(dirpath, name)
    data = str(value).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise RuntimeFailure(f"{field}: this host has no {name} (in {dirpath})",
                                 path=field, errno=e.errno) from None
        raise RuntimeFailure(f"{field}: cannot open {path}: {e.strerror}", path=field,
                             errno=e.errno) from None
    try:
        os.write(fd, data)
    except OSError as e:
        raise RuntimeFailure(f"{field}: writing {str(value)!r} to {path}: {e.strerror}",
                             path=field, errno=e.errno) from e
    finally:
        os.close(fd)


def exists(dirpath: str, name: str) -> bool:
    return os.path.exists(os.path.join(dirpath, name))


# ---------------------------------------------------------------- value checks

class Fields:
    """Typed access to one object of linux.resources, naming the JSON path in errors.

    In update mode 0 means "leave as is" (Docker's `update` sends every field, unset ones as 0).
    """

    def __init__(self, obj, path: str, update: bool):
        if obj is not None and not isinstance(obj, dict):
            raise RuntimeFailure(f"{path}: must be an object")
        self.obj, self.path, self.update = obj or {}, path, update

    def __bool__(self):
        return bool(self.obj)

    def p(self, key: str) -> str:
        return f"{self.path}.{key}"

    def int(self, key: str, *, lo: int | None = None, hi: int | None = None,
            zero_is_unset: bool = True):
        v = self.obj.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise RuntimeFailure(f"{self.p(key)}: {v!r} is not an integer")
        if v == 0 and (zero_is_unset or self.update):
            return None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f"{lo if lo is not None else ''}..{hi if hi is not None else ''}"
            raise RuntimeFailure(f"{self.p(key)}: {v} is out of range ({rng})")
        return v

    def str(self, key: str):
        v = self.obj.get(key)
        if v is None or v == "":
            return None
        if not isinstance(v, str):
            raise RuntimeFailure(f"{self.p(key)}: {v!r} is not a string")
        return v

    def list(self, key: str) -> list:
        v = self.obj.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise RuntimeFailure(f"{self.p(key)}: must be an array")
        return v

    def sub(self, key: str) -> "Fields":
        return Fields(self.obj.get(key), self.p(key), self.update)


def device_entries(f: Fields, key: str, value_key: str):
    """[(path, major, minor, value)] of a blockIO per-device list."""
    out = []
    for i, d in enumerate(f.list(key)):
        p = f"{f.p(key)}[{i}]"
        if not isinstance(d, dict):
            raise RuntimeFailure(f"{p}: must be an object")
        for k in ("major", "minor"):
            if isinstance(d.get(k), bool) or not isinstance(d.get(k), int) or d[k] < 0:
                raise RuntimeFailure(f"{p}.{k}: {d.get(k)!r} is not a device number")
        v = d.get(value_key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise RuntimeFailure(f"{p}.{value_key}: {v!r} is not a non-negative integer")
        out.append((p, d["major"], d["minor"], v))
    return out


# ---------------------------------------------------------------- v1 -> v2 conversions (runc)

def shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] -> cpu.weight [1, 10000] (runc's linear mapping)."""
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] -> io.weight [1, 10000]."""
    return 1 + ((weight - 10) * 9999) // 990


def swap_to_v2(swap: int, memory: int, field: str) -> int:
    """OCI swap is memory+swap (v1 memsw); v2 memory.swap.max is swap alone.

    Returns -1 for "max", 0 for unset, else the v2 value.
    """
    if memory == -1 and swap == 0:
        return -1
    if swap in (-1, 0):
        return swap
    if memory in (0, -1):
        raise RuntimeFailure(f"{field}: unable to set swap limit without memory limit")
    if memory < 0:
        raise RuntimeFailure(f"{field}: invalid memory value: {memory}")
    if swap < memory:
        raise RuntimeFailure(f"{field}: memory+swap limit ({swap}) should be >= memory limit "
                             f"({memory})")
    return swap - memory


def hugepage_sizes() -> list[str]:
    """Page sizes as cgroup file names use them: "2MB", "1GB", "64KB"."""
    out = []
    try:
        entries = os.listdir("/sys/kernel/mm/hugepages")
    except OSError:
        return out
    for e in entries:
        if e.startswith("hugepages-") and e.endswith("kB"):
            size = int(e[len("hugepages-"):-2]) * 1024
            unit = 0
            while size >= 1024 and size % 1024 == 0 and unit < 5:
                size //= 1024
                unit += 1
            out.append(f"{size}{['B', 'KB', 'MB', 'GB', 'TB', 'PB'][unit]}")
    return sorted(out)


def walk_procs(top: str) -> list[int]:
    """Every pid in cgroup `top` and its descendants."""
    pids: list[int] = []
    for dirpath, _dirs, _files in os.walk(top):
        s = read_or(dirpath, "cgroup.procs", "")
        pids.extend(int(x) for x in s.split())
    return pids


def prime_attach_lock() -> None:
    """Start paying, in a thread, the wait that the first cgroup move of this process pays.

    Moving a process into a cgroup takes a kernel-wide lock whose writer first waits for an RCU
    grace period unless another writer held it within the last grace period. Where `create`,
    `run` and `exec` still move their child by pid (placement.py: rootless, the systemd
    driver), they do it a little into their work: writing our own pid into the cgroup we
    already are in (a move to where we are) takes the lock now, in the background, so that wait
    overlaps the imports and the preparation (the CLI calls this before it imports the
    command). Best effort. The thread only makes syscalls: it holds no lock of the
    interpreter's that a later fork could inherit; while it lives, clone3 is refused
    (syscalls.fork_into_cgroup) and the child is forked."""
    import _thread
    layout = default_layout()
    key = "" if layout.unified else next(iter(layout.v1), None)
    if key is None:
        return
    path = os.path.join(layout.hierarchy_dir(key, "."), "cgroup.procs")
    pid = str(os.getpid()).encode()

    def move_to_where_we_are():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        except OSError:
            pass
    _thread.start_new_thread(move_to_where_we_are, ())


def delegation_hint(field: str, blocker: str) -> str:
    uid = os.geteuid()
    return (f"{field}: rootless mode needs a cgroup delegated to uid {uid}, and {blocker} is not "
            f"writable: delegate it (as root: mkdir a cgroup there and chown -R {uid} it, on "
            "cgroup2 with the controllers in its parent's cgroup.subtree_control), point "
            "linux.cgroupsPath into it, or drop linux.resources")
