"""The lean path of `start`, `state`, `kill`, `delete` and `list`: builtin modules only.

The launcher runs this before anything imports `os`. The common case of these commands (a
plain container, created or running or stopped, plain arguments) costs a few syscalls, less
than importing the full CLI (os, the package's modules: several milliseconds a call). Anything
else goes to the full CLI in the same process (main() returns None), before any side effect
or with only the ones the full code would repeat identically: hooks, paused, freezing or
creating containers, systemd cgroups, --debug, --all, unknown flags, any error at all, any
string that is not plain ASCII. Success here is byte for byte what the full path prints and
does (tests/test_hot_path.py compares them); errors are always the full path's.

Modules: sys, posix, _signal (builtin everywhere), fcntl, _json and select (builtin in
Debian's python3.11; shared C extensions in pyenv builds: still no Python-level import).
PYRUNTIME_NO_LEAN in the environment forces the full path (the tests' reference).
"""
import posix
import sys

from pyruntime.cli import finish
from pyruntime.lifecycle import layout

# Copies of what modules that import os define (a test keeps them equal):
# pyruntime.cgroups.delegation.RECORD: while it exists, a delete may have to release cgroup2
# controllers (the full code's job); cli/main.py's global flags.
CGROUP2_RECORD = "/run/pyruntime-cgroup2-enabled.json"
GLOBAL_VALUE_FLAGS = ("root", "log", "log-format", "rootless", "criu")
GLOBAL_BOOL_FLAGS = ("debug", "systemd-cgroup")


class Fallback(Exception):
    """Not the common path: the full CLI takes over (and says what is wrong, if anything)."""


class Ctx:
    root = layout.DEFAULT_ROOT
    log = None
    log_format = "text"


def run():
    """The launcher's entry: the lean path, else the full CLI's run()."""
    try:
        code = main(sys.argv[1:])
    except KeyboardInterrupt:
        code = 130  # as the full CLI
    except Exception:  # never a traceback from here: whatever it was, the full path decides
        code = None
    finish(code)


def main(argv):
    """The exit code, or None for the full path."""
    if b"PYRUNTIME_NO_LEAN" in posix.environ:
        return None
    try:
        ctx, name, args = _split(argv)
        if name == "state":
            return _state(ctx, _one_id(args))
        if name == "start":
            return _start(ctx, _one_id(args))
        if name == "kill":
            return _kill(ctx, args)
        if name == "delete":
            return _delete(ctx, args)
        if name == "list":
            return _list(ctx, args)
    except (Fallback, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        pass
    return None


# ---------------------------------------------------------------- arguments

def _split(argv):
    """The global flags as cli/main.py reads them; anything it would treat specially falls back."""
    ctx = Ctx()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if name in GLOBAL_BOOL_FLAGS:
            if not eq or value.lower() not in ("false", "0"):
                raise Fallback  # --debug, --systemd-cgroup
        elif name in GLOBAL_VALUE_FLAGS:
            if not eq:
                i += 1
                value = argv[i]  # IndexError: falls back
            setattr(ctx, name.replace("-", "_"), value)
        else:
            raise Fallback
        i += 1
    if ctx.log_format not in ("text", "json") or i >= len(argv):
        raise Fallback
    if ctx.root is Ctx.root and posix.environ.get(b"XDG_RUNTIME_DIR"):
        raise Fallback  # the default root may be $XDG_RUNTIME_DIR's (lifecycle/rootless.py)
    if ctx.log:  # as log.setup: the file is created even when nothing is logged
        posix.close(posix.open(ctx.log, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT |
                               posix.O_CLOEXEC, 0o644))
    return ctx, argv[i], argv[i + 1:]


def _one_id(args):
    if len(args) != 1 or args[0].startswith("-"):
        raise Fallback
    return args[0]


def _flags(args, known):
    """(flags seen, positionals): flags only from `known`, as spelt there."""
    seen, pos = set(), []
    for a in args:
        if a.startswith("-"):
            if a not in known:
                raise Fallback
            seen.add(known[a])
        else:
            pos.append(a)
    return seen, pos


# ---------------------------------------------------------------- the state dir

def _read(path):
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        chunks = []
        while True:
            b = posix.read(fd, 65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        posix.close(fd)


def _no_constant(name):
    raise Fallback


_scan = None


def _load(root, cid):
    """The state file's data, checked as State.from_dict checks it; Fallback for anything the
    full code would report (missing, damaged)."""
    global _scan
    if not layout.valid_id(cid):
        raise Fallback
    text = _read(root + "/" + cid + "/" + layout.STATE_FILE).decode().strip(" \t\n\r")
    if _scan is None:
        import _json

        class Decoder:  # json.JSONDecoder's defaults
            strict = True
            object_hook = object_pairs_hook = None
            parse_float, parse_int, parse_constant = float, int, _no_constant
            memo = {}
        _scan = _json.make_scanner(Decoder())
    try:
        data, end = _scan(text, 0)
    except Exception:
        raise Fallback from None
    if end != len(text):
        raise Fallback
    layout.check_state(data)
    st = dict(layout.STATE_FIELDS)
    st.update(data)
    return st


def _start_time(pid):
    try:
        return layout.start_time(_read("/proc/%d/stat" % pid))
    except OSError:
        return None


def _alive(st):
    return bool(st["pid"]) and _start_time(st["pid"]) == st["init_start"]


def _status(root, cid, st):
    """Container.status() for the plain cases; Fallback for creating, paused, freezing."""
    if st["status"] == "creating":
        raise Fallback
    if not _alive(st):
        return "stopped"
    dirs = (st["cgroup"] or {}).get("dirs") or {}
    if "freezer" in dirs:
        path, thawed = dirs["freezer"] + "/freezer.state", b"THAWED"
    elif "" in dirs:
        path, thawed = dirs[""] + "/cgroup.freeze", b"0"
    else:
        path = None
    if path:
        try:
            if _read(path).strip() != thawed:
                raise Fallback
        except OSError:
            pass  # as the full code: unreadable is not paused
    try:
        posix.stat(root + "/" + cid + "/" + layout.FIFO)
        return "created"
    except OSError:
        return "running"


def _lock(root, cid):
    """The per-container lock the full code takes (state.Container.lock): flock on the dir."""
    import fcntl
    fd = posix.open(root + "/" + cid, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        posix.close(fd)
        raise
    return fd


def _fail(ctx, msg):
    """An error after a side effect the full path cannot repeat: reported as it reports it."""
    from pyruntime import log
    log.setup(ctx.log, ctx.log_format, False)
    log.error(msg)
    log.close()
    return 1


# ---------------------------------------------------------------- JSON as runc prints it

def _q(s):
    """A string as Go's encoder writes it, for plain ASCII (anything else: the full path)."""
    if not isinstance(s, str) or not s.isascii() or not s.isprintable() or \
            '"' in s or "\\" in s or "<" in s or ">" in s or "&" in s:
        raise Fallback
    return '"' + s + '"'


def _oci(st, status):
    """state.Container.oci_state(), its values in Go's JSON."""
    ann = st["annotations"]
    return (("ociVersion", _q(st["oci_version"])), ("id", _q(st["id"])),
            ("pid", str(st["pid"] if status != "stopped" else 0)), ("status", _q(status)),
            ("bundle", _q(st["bundle"])), ("rootfs", _q(st["rootfs"])),
            ("created", _q(st["created"])),
            ("annotations", [(_q(k), _q(v)) for k, v in ann.items()]), ("owner", _q(st["owner"])))


def _indented(fields):
    out = []
    for k, v in fields:
        if isinstance(v, list):
            v = "{\n" + ",\n".join(f"    {a}: {b}" for a, b in v) + "\n  }" if v else "{}"
        out.append(f'  "{k}": {v}')
    return "{\n" + ",\n".join(out) + "\n}"


def _tight(fields):
    out = []
    for k, v in fields:
        if isinstance(v, list):
            if not v:
                continue  # runc's list omits empty annotations
            v = "{" + ",".join(f"{a}:{b}" for a, b in v) + "}"
        out.append(f'"{k}":{v}')
    return "{" + ",".join(out) + "}"


# ---------------------------------------------------------------- the commands

def _state(ctx, cid):
    st = _load(ctx.root, cid)
    text = _indented(_oci(st, _status(ctx.root, cid, st)))
    sys.stdout.buffer.write(text.encode() + b"\n")
    return 0


def _start(ctx, cid):
    _load(ctx.root, cid)  # missing or damaged: the full path's errors
    lock = _lock(ctx.root, cid)
    try:
        st = _load(ctx.root, cid)
        if st["hooks"].get("poststart") or _status(ctx.root, cid, st) != "created":
            raise Fallback
        fifo = ctx.root + "/" + cid + "/" + layout.FIFO
        from pyruntime.lifecycle import execfifo
        # from here on the init runs: no falling back
        data = execfifo.read(fifo, st["pid"], lambda: _alive(st))
        try:
            posix.unlink(fifo)
        except OSError as e:
            return _fail(ctx, f"start: {fifo}: {e.strerror or e}")
        if data.startswith(b"0") and b"E" not in data:
            return 0
        return _fail(ctx, data.split(b"E", 1)[1].decode(errors="replace") if b"E" in data else
                     "the container init exited before it could start the process")
    finally:
        posix.close(lock)  # before any fallback: the full path takes the lock again


def _kill(ctx, args):
    import _signal
    if not 1 <= len(args) <= 2 or any(a.startswith("-") for a in args):
        raise Fallback  # --all, or a flag: the full path
    cid = args[0]
    t = (args[1] if len(args) == 2 else "SIGTERM").upper()
    if not t.isascii():
        raise Fallback
    if t.isdigit():
        sig = int(t)
        if sig >= 65:
            raise Fallback
    else:
        t = t[3:] if t.startswith("SIG") else t
        sig = getattr(_signal, "SIG" + t, None) if t and not t.startswith("_") else None
        if not isinstance(sig, int):
            raise Fallback
    st = _load(ctx.root, cid)
    if _status(ctx.root, cid, st) not in ("created", "running"):
        raise Fallback
    pidfd = posix.pidfd_open(st["pid"])
    try:
        if _start_time(st["pid"]) != st["init_start"]:
            raise Fallback  # the pid was recycled meanwhile
        _signal.pidfd_send_signal(pidfd, sig)
    finally:
        posix.close(pidfd)
    return 0


def _delete(ctx, args):
    flags, pos = _flags(args, {"--force": "force", "-force": "force", "-f": "force"})
    if len(pos) != 1:
        raise Fallback
    cid = pos[0]
    root = ctx.root
    _load(root, cid)  # missing or damaged: the full path (delete --force cleans up after it)
    lock = _lock(root, cid)
    try:
        st = _load(root, cid)
        cg = st["cgroup"]
        if st["hooks"].get("poststop") or st["intel_rdt"] or \
                _status(root, cid, st) != "stopped":
            raise Fallback  # not stopped: refused, or --force kills it first
        if cg and ("systemd" in (cg.get("extra") or {}) or
                   ("" in cg["dirs"] and cg.get("unified_mount") and _exists(CGROUP2_RECORD))):
            raise Fallback
        if cg:
            _remove_cgroups(cg)
        d = root + "/" + cid
        try:
            for name in (layout.STATE_FILE, layout.FIFO, layout.STATE_TMP):
                _unlink(d + "/" + name)
            try:
                posix.rmdir(d)
            except FileNotFoundError:
                pass
        except OSError:
            # The same removal, from where it stands, and its one-line error
            from pyruntime.errors import RuntimeFailure
            from pyruntime.lifecycle.state import remove_dir
            try:
                remove_dir(d)
            except RuntimeFailure as e:
                return _fail(ctx, str(e))
        return 0
    finally:
        posix.close(lock)


def _exists(path):
    try:
        posix.stat(path)
        return True
    except OSError:
        return False


def _unlink(path):
    try:
        posix.unlink(path)
    except FileNotFoundError:
        pass


def _remove_cgroups(cg):
    """Manager.destroy() of a cgroup without processes or sub-cgroups; any other case (an
    rmdir that fails) falls back, and the full code finishes what is left the same way."""
    leaves = set(cg["dirs"].values())
    for top in sorted(cg.get("created", []), key=lambda p: p.count("/"), reverse=True):
        try:
            posix.rmdir(top)
        except FileNotFoundError:
            pass
        except OSError:
            if top in leaves:
                raise Fallback from None  # busy, or sub-cgroups: the full code's walk
            # a parent we made: another container may have its cgroup in it by now


def _list(ctx, args):
    fmt = "table"
    rest = []
    i = 0
    while i < len(args):  # --format/-f VALUE, or --format=VALUE
        name, eq, value = args[i].partition("=")
        if name in ("--format", "-format", "-f") and not (eq and name == "-f"):
            if not eq:
                i += 1
                value = args[i]
            if value not in ("table", "json"):
                raise Fallback
            fmt = value
        else:
            rest.append(args[i])
        i += 1
    flags, pos = _flags(rest, {"--quiet": "quiet", "-quiet": "quiet", "-q": "quiet"})
    if pos:
        raise Fallback
    root = ctx.root
    try:
        names = posix.listdir(root)
    except FileNotFoundError:
        names = []
    ids = sorted(n for n in names if _lexists(root + "/" + n + "/" + layout.STATE_FILE))
    states = []
    for cid in ids:
        st = _load(root, cid)
        states.append(_oci(st, _status(root, cid, st)))
    if "quiet" in flags:
        out = "".join(dict(s)["id"][1:-1] + "\n" for s in states)
        sys.stdout.write(out)
    elif fmt == "json":
        text = "[" + ",".join(_tight(s) for s in states) + "]" if states else "null"
        sys.stdout.buffer.write(text.encode() + b"\n")
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        for s in states:
            s = dict(s)
            rows.append(tuple(s[k][1:-1] if s[k].startswith('"') else s[k]
                              for k in ("id", "pid", "status", "bundle", "created", "owner")))
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        sys.stdout.write("".join("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() +
                                 "\n" for r in rows))
    return 0


def _lexists(path):
    try:
        posix.lstat(path)
        return True
    except OSError:
        return False
