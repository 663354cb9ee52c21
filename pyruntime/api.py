"""pyruntime as a library: run OCI containers from Python, without a subprocess.

    >>> import tempfile, pyruntime
    >>> from pyruntime.oci.defaults import busybox_bundle
    >>> tmp = tempfile.TemporaryDirectory()
    >>> bundle = busybox_bundle(tmp.name + "/bundle", ["sh", "-c", "echo hi from $(hostname)"])
    >>> rt = pyruntime.Runtime(root=tmp.name + "/state")
    >>> r = rt.run("hello", bundle, capture_output=True)
    >>> r.exit_code, r.stdout
    (0, b'hi from pyruntime\\n')
    >>> rt.list()
    []
    >>> tmp.cleanup()

The caller must be root (as for the command line). A container's init is forked by a child
of the caller that exits once the init is set up, so the init is orphaned: the kernel gives it
to the nearest ancestor that is a child subreaper. A Runtime makes its process one (prctl
PR_SET_CHILD_SUBREAPER) before its first `create`, `run` or `exec`, so that the init and each
exec'd process become the caller's children; `run`, `exec`, `wait` and `delete` reap them.
From then on the process also inherits every other orphan of its descendants: a long-lived
caller should reap those, but not a container's init before `wait` or `delete` has, or that
exit status is lost (os.waitid(P_ALL, 0, WEXITED | WNOHANG | WNOWAIT) shows a pid first).
`Runtime(subreaper=False)` leaves the process as it is: the caller (or an ancestor) must
then be the subreaper, or the inits go to PID 1 (`wait` needs this process to be it).
create, run and exec fork this process and run Python in the child until its execve, as
os.fork does: in a threaded program, no other thread may hold a lock the child needs then.

Failures raise pyruntime.errors.RuntimeFailure, one line for a user; its subclasses say what
kind: ContainerNotFound, ContainerExists, ContainerNotRunning, ContainerStateError (the status
forbids the operation; `status` says which it was), ConfigError (`path`, `value`), BundleError.
"""
from __future__ import annotations

import os

from pyruntime.errors import (BundleError, ContainerNotRunning, ContainerStateError,
                              RuntimeFailure)
from pyruntime.lean.records import record
from pyruntime.lifecycle.state import Container, StateCorrupt, list_ids

DEFAULT_ROOT = "/run/pyruntime"


@record
class ContainerState:
    """A container's state: the runtime-spec's fields plus runc's rootfs, created and owner.
    status is creating, created, running, paused or stopped (`damaged` in `list` for a state
    file that cannot be read: `damage` says why)."""
    id: str
    status: str
    pid: int = 0
    bundle: str = ""
    rootfs: str = ""
    created: str = ""           # RFC 3339, UTC
    annotations: dict = None
    owner: str = ""
    oci_version: str = ""
    damage: str = ""

    @classmethod
    def from_oci(cls, d: dict) -> "ContainerState":
        return cls(id=d["id"], status=d["status"], pid=d["pid"], bundle=d["bundle"],
                   rootfs=d["rootfs"], created=d["created"], annotations=d["annotations"] or {},
                   owner=d["owner"], oci_version=d["ociVersion"])

    def to_oci(self) -> dict:
        """The state JSON `pyruntime state` prints (runc's field order)."""
        return {"ociVersion": self.oci_version, "id": self.id, "pid": self.pid,
                "status": self.status, "bundle": self.bundle, "rootfs": self.rootfs,
                "created": self.created, "annotations": self.annotations, "owner": self.owner}


@record
class ExecResult:
    """A process that ran in a container: exit_code is its status, or 128+n if signal n killed
    it (runc's convention); None, with stdout and stderr, unless the Runtime waited for it and
    captured them."""
    pid: int
    exit_code: int = None
    stdout: bytes = None
    stderr: bytes = None


@record
class Event:
    """One of `events`: type "stats" (data: the cgroup's figures, as runc's `events`) or
    "oom" (data None)."""
    type: str
    id: str
    data: dict = None

    def to_dict(self) -> dict:
        d = {"type": self.type, "id": self.id}
        if self.data is not None:
            d["data"] = self.data
        return d


class Runtime:
    """Containers whose state lives under `root` (runc's --root; give each program its own).

    `systemd_cgroup`: linux.cgroupsPath is runc's slice:prefix:name, the cgroup a systemd
    scope (as --systemd-cgroup). `rootless`: as --rootless true (README, "Rootless").
    `subreaper`: see the module's docstring.

    A cycle, step by step:

    >>> import tempfile, pyruntime
    >>> from pyruntime.oci.defaults import busybox_bundle
    >>> tmp = tempfile.TemporaryDirectory()
    >>> bundle = busybox_bundle(tmp.name + "/bundle", ["sleep", "30"])
    >>> rt = pyruntime.Runtime(root=tmp.name + "/state")
    >>> st = rt.create("c1", bundle)
    >>> st.status, st.pid > 0, st.bundle == bundle
    ('created', True, True)
    >>> rt.start("c1")
    >>> rt.state("c1").status
    'running'
    >>> r = rt.exec("c1", ["sh", "-c", "echo $$; exit 3"], capture_output=True)
    >>> r.exit_code, r.stdout
    (3, b'2\\n')
    >>> rt.pause("c1"); rt.state("c1").status
    'paused'
    >>> rt.resume("c1")
    >>> rt.update("c1", {"pids": {"limit": 20}})
    >>> rt.kill("c1", "KILL")
    >>> rt.wait("c1")
    137
    >>> rt.delete("c1")
    >>> rt.state("c1")
    Traceback (most recent call last):
    ...
    pyruntime.errors.ContainerNotFound: container does not exist: c1
    >>> tmp.cleanup()
    """

    def __init__(self, root: str = DEFAULT_ROOT, *, systemd_cgroup: bool = False,
                 rootless: bool = False, subreaper: bool = True):
        self.root = os.path.abspath(root)
        self.systemd_cgroup = systemd_cgroup
        self.rootless = rootless
        self.subreaper = subreaper
        self._reexec = False  # only the command line may replace its own process (sealed.py)

    def __repr__(self):
        return f"Runtime(root={self.root!r})"

    # ------------------------------------------------------------ lifecycle

    def create(self, id: str, bundle: str, *, stdin=None, stdout=None, stderr=None,
               console_socket=None, pid_file: str | None = None, no_pivot: bool = False,
               no_new_keyring: bool = False, preserve_fds: int = 0) -> ContainerState:
        """Set the container up from bundle/config.json; its init then waits for `start`.

        stdin, stdout, stderr: fds, files or subprocess.DEVNULL for the init's stdio (default:
        the caller's), kept by the process it runs. A process.terminal container needs console_socket: a unix
        socket's path, or a connected socket, that receives the pty master. The init becomes
        the caller's child (see the module's docstring)."""
        from pyruntime.lifecycle import container
        bundle = os.path.abspath(bundle)
        if not os.path.isfile(os.path.join(bundle, "config.json")):
            raise BundleError(f"config.json not found in bundle {bundle}")
        self._become_subreaper()
        path, sock = (console_socket, None) if console_socket is None or \
            isinstance(console_socket, str) else (None, console_socket)
        stdio = _Stdio(stdin, stdout, stderr)
        try:
            c = container.create(self.root, id, bundle, pid_file=pid_file, console_socket=path,
                                 console=sock, no_pivot=no_pivot, no_new_keyring=no_new_keyring,
                                 preserve_fds=preserve_fds, systemd_cgroup=self.systemd_cgroup,
                                 rootless=self.rootless, stdio=stdio.fds, reexec=self._reexec)
        finally:
            stdio.close()
        return ContainerState.from_oci(c.oci_state())

    def start(self, id: str) -> None:
        """Run the container's process (its init execs it); returns once it runs."""
        from pyruntime.lifecycle import container
        container.start(self.root, id)

    def wait(self, id: str) -> int:
        """Wait for the init to exit and reap it: its exit code (128+n for signal n). The init
        must be this process's child (the Runtime's subreaper); a created container's init
        waits for `start`, so start it first (or kill it)."""
        c = Container.load(self.root, id)
        pid = c.state.pid
        if not pid or _start_time(pid) != c.state.init_start:
            raise ContainerNotRunning(id, c.status(), f"container {id}: its init has been "
                                      "reaped already (or never ran)")
        try:
            return _exit_code(os.waitpid(pid, 0)[1])
        except ChildProcessError:
            raise RuntimeFailure(f"container {id}: its init (pid {pid}) is not a child of "
                                 "this process: make the process a child subreaper before "
                                 "create (Runtime(subreaper=True))") from None

    def state(self, id: str) -> ContainerState:
        return ContainerState.from_oci(Container.load(self.root, id).oci_state())

    def kill(self, id: str, signal: int | str = "SIGTERM", all: bool = False) -> None:
        """Send signal (a number, or a name: "KILL", "SIGTERM") to the init, or with all=True
        to every process in the container's cgroup."""
        from pyruntime.lifecycle import container
        sig = container.parse_signal(signal) if isinstance(signal, str) else int(signal)
        container.kill(self.root, id, sig, all)

    def delete(self, id: str, force: bool = False) -> None:
        """Remove a stopped container (force=True: kill it first, whatever its status; no
        error if it does not exist) and reap its init if it is this process's child."""
        from pyruntime.lifecycle import container
        pid = start = 0
        if self.subreaper:
            try:
                st = Container.load(self.root, id).state
                pid, start = st.pid, st.init_start
            except RuntimeFailure:
                pass
        container.delete(self.root, id, force)
        if pid and _start_time(pid) == start:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass

    def run(self, id: str, bundle: str, *, stdin=None, stdout=None, stderr=None,
            capture_output: bool = False, keep: bool = False, **create_options) -> ExecResult:
        """create, start, wait, and (unless keep) delete. capture_output=True collects the
        process's stdout and stderr (its own descendants must close them too: run returns at
        EOF). Other options as for create."""
        stdio = _Stdio(stdin, stdout, stderr, capture_output)
        try:
            try:
                fds = stdio.fds or (None, None, None)
                st = self.create(id, bundle, stdin=fds[0], stdout=fds[1], stderr=fds[2],
                                 **create_options)
            finally:
                stdio.close_ours()
            try:
                self.start(id)
                out, err = stdio.collect()
                code = _exit_code(os.waitpid(st.pid, 0)[1])
            except BaseException:
                self.delete(id, force=True)
                raise
            if not keep:
                self.delete(id, force=True)
        finally:
            stdio.close()
        return ExecResult(st.pid, code, out, err)

    def exec(self, id: str, args: list[str] | None = None, *, process: dict | None = None,
             stdin=None, stdout=None, stderr=None, capture_output: bool = False,
             detach: bool = False, console_socket=None, pid_file: str | None = None,
             preserve_fds: int = 0, ignore_paused: bool = False, cgroups: list[str] = (),
             **overrides) -> ExecResult:
        """Run another process in a running container: args with the container's own process
        as the rest (overrides: cwd, env ["K=v"], user "uid[:gid]", additional_gids, caps,
        no_new_privs, tty, apparmor, process_label), or `process`, an OCI process object;
        either with console_size=(rows, cols) for its terminal (over process.consoleSize).

        Waits for it and returns its exit code (and with capture_output its stdout and stderr);
        detach=True returns its pid at once: it is then the caller's child to reap."""
        from pyruntime.lifecycle.exec import build_process, exec_process
        c = Container.load(self.root, id)
        status = c.status()
        if status == "stopped":
            raise ContainerNotRunning(id, status, "cannot exec in a stopped container: "
                                                  "container not running")
        if status == "paused" and not ignore_paused:
            raise ContainerStateError(id, status, "cannot exec in a paused container (use "
                                                  "--ignore-paused to override)")
        console_size = overrides.pop("console_size", None)
        proc = build_process(c, process, args or [], **overrides)
        if console_size:
            proc.console_size = tuple(console_size)
        self._become_subreaper()
        path, sock = (console_socket, None) if console_socket is None or \
            isinstance(console_socket, str) else (None, console_socket)
        stdio = _Stdio(stdin, stdout, stderr, capture_output and not detach)
        try:
            try:
                pid = exec_process(self.root, id, proc, console_socket=path, console_sock=sock,
                                   pid_file=pid_file, preserve_fds=preserve_fds,
                                   ignore_paused=ignore_paused, cgroup=list(cgroups),
                                   stdio=stdio.fds, reexec=self._reexec)
            finally:
                stdio.close_ours()
            if detach:
                return ExecResult(pid)
            out, err = stdio.collect()
            return ExecResult(pid, _exit_code(os.waitpid(pid, 0)[1]), out, err)
        finally:
            stdio.close()

    def list(self) -> list[ContainerState]:
        out = []
        for cid in list_ids(self.root):
            try:
                out.append(self.state(cid))
            except StateCorrupt as e:
                out.append(ContainerState(cid, "damaged", damage=str(e)))
            except RuntimeFailure:
                continue  # removed meanwhile
        return out

    # ------------------------------------------------------------ the cgroup

    def pause(self, id: str) -> None:
        """Freeze every process of a running (or created) container."""
        from pyruntime.cgroups.ops import container_manager
        c = Container.load(self.root, id, lock=True)
        try:
            status = c.status()
            if status not in ("running", "created"):  # as runc
                raise ContainerNotRunning(id, status)
            m = container_manager(c)
            m.freeze()
            # The init may have exited between the status check and the freeze: a frozen
            # empty cgroup is not a paused container.
            if not m.pids() and not c.init_alive():
                m.thaw()
                raise ContainerNotRunning(id)
        finally:
            c.unlock()

    def resume(self, id: str) -> None:
        from pyruntime.cgroups.ops import container_manager
        c = Container.load(self.root, id, lock=True)
        try:
            status = c.status()
            if status != "paused":
                raise ContainerStateError(id, status, "container not paused")
            container_manager(c).thaw()
        finally:
            c.unlock()

    def update(self, id: str, resources: dict) -> None:
        """Apply a LinuxResources object's memory, cpu, blockIO weight, pids limit and
        unified (what runc's `update` changes; a missing or 0 field leaves a value as it is)."""
        from pyruntime.cgroups.ops import container_manager
        resources = _updatable(resources)
        c = Container.load(self.root, id, lock=True)
        try:
            status = c.status()
            if status == "stopped":
                raise ContainerNotRunning(id, status)
            m = container_manager(c)
            before = m.to_state()
            m.apply(resources, update=True)
            after = m.to_state()
            if after != before and os.path.isdir(c.dir):
                c.state.cgroup = after
                c.save()
        finally:
            c.unlock()

    def ps(self, id: str) -> list[int]:
        """The host pids of every process in the container's cgroup (rootless without a
        cgroup: of its init's pid namespace)."""
        from pyruntime.cgroups.ops import container_manager
        c = Container.load(self.root, id)
        if not c.state.cgroup:
            from pyruntime.lifecycle.rootless import pid_namespace_members
            return pid_namespace_members(c.state.pid) if c.init_alive() else []
        try:
            return container_manager(c).pids()
        except OSError as e:
            raise RuntimeFailure(f"unable to get all container pids: {e}", errno=e.errno) from None

    def stats(self, id: str) -> dict:
        """The container's cgroup figures now (cpu, memory, pids, blkio, hugetlb ...)."""
        return _stats(*self._running_manager(id))

    def events(self, id: str, interval: float = 5.0):
        """An iterator of Events: "stats" every interval seconds and "oom" as they come, until
        the container stops (close() it to stop early)."""
        if interval <= 0:
            raise RuntimeFailure("duration interval must be greater than 0")
        cid, m = self._running_manager(id)
        return self._event_stream(cid, m, interval)

    # ------------------------------------------------------------ internals

    def _become_subreaper(self) -> None:
        if self.subreaper:
            from pyruntime.linux import syscalls
            syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)

    def _running_manager(self, id: str):
        from pyruntime.cgroups.ops import container_manager
        c = Container.load(self.root, id)
        status = c.status()
        if status == "stopped":
            raise ContainerNotRunning(id, status, f"container with id {id} is not running")
        return c.id, container_manager(c)

    def _still_running(self, id: str) -> bool:
        try:
            return Container.load(self.root, id).status() != "stopped"
        except RuntimeFailure:
            return False

    def _event_stream(self, cid: str, m, interval: float):
        import select
        import time
        from pyruntime.cgroups.ops import OOMWatcher
        tick = min(interval, 0.2)  # how often a stopped container or a counted OOM is noticed
        oom = OOMWatcher(m)
        try:
            next_stats = time.monotonic() + interval
            while True:
                timeout = max(0.0, min(next_stats - time.monotonic(), tick))
                if oom.pollable:
                    select.select([oom], [], [], timeout)
                else:
                    time.sleep(timeout)
                if oom.check():  # one event a wake-up, however many OOMs it counts (as runc)
                    yield Event("oom", cid)
                if oom.gone:
                    return
                if time.monotonic() >= next_stats:
                    try:
                        data = _stats(cid, m)
                    except RuntimeFailure:
                        if not self._still_running(cid):
                            return
                        raise
                    yield Event("stats", cid, data)
                    next_stats += interval
                    if next_stats < time.monotonic():  # fell behind (a stopped clock, a slow read)
                        next_stats = time.monotonic() + interval
                if not self._still_running(cid):
                    if oom.check():  # the init's death may follow an OOM kill by a hair
                        yield Event("oom", cid)
                    return
        finally:
            oom.close()


# ---------------------------------------------------------------- helpers

def _stats(cid: str, m) -> dict:
    try:
        return m.stats()
    except OSError as e:
        raise RuntimeFailure(f"unable to get container cgroup stats: {e}", errno=e.errno) from None


# What `update` may change (runc's list): everything else in a LinuxResources is ignored,
# devices included (runc cannot update those either).
_UPDATABLE = (("memory", ("limit", "reservation", "swap", "kernel", "kernelTCP",
                          "checkBeforeUpdate")),
              ("cpu", ("shares", "quota", "burst", "period", "realtimeRuntime", "realtimePeriod",
                       "cpus", "mems", "idle")),
              ("blockIO", ("weight",)), ("pids", ("limit",)))


def _updatable(r: dict) -> dict:
    """The part of a LinuxResources that `update` applies, each object checked to be one."""
    if not isinstance(r, dict):
        raise RuntimeFailure("resources: want a LinuxResources object (a dict)")
    out = {}
    for key, fields in _UPDATABLE:
        obj = r.get(key)
        if obj is None:
            continue
        if not isinstance(obj, dict):
            raise RuntimeFailure(f"resources: {key}: must be an object")
        sub = {k: obj[k] for k in fields if obj.get(k) is not None}
        if sub:
            out[key] = sub
    if r.get("unified"):
        out["unified"] = r["unified"]
    mem = out.get("memory", {})
    if mem.pop("kernel", 0):
        from pyruntime import log
        log.warning("Kernel memory settings are ignored and will be removed")
    # runc: memory -1 with no swap given means memory+swap unlimited too (cgroup v1 would
    # refuse a memory limit above the memory+swap one).
    if mem.get("limit") == -1 and not mem.get("swap"):
        mem["swap"] = -1
    if not mem:
        out.pop("memory", None)
    return out


def _exit_code(status: int) -> int:
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _start_time(pid: int) -> int | None:
    """/proc/<pid>/stat's starttime, zombies included (state.proc_start_time skips them): a
    zombie with the init's start time is the init, still ours to reap."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[19])


DEVNULL = -3  # subprocess.DEVNULL's value, which callers will pass


class _Stdio:
    """The fds a create/run/exec hands the process as its stdio. Each of stdin, stdout,
    stderr is None (the caller's), an fd, a file (fileno()) or DEVNULL; with capture, a
    stdout or stderr left None becomes a pipe whose read end is drained (both together: one
    full pipe must not block the other's reader)."""

    def __init__(self, stdin, stdout, stderr, capture: bool = False):
        self.readers: dict[str, int] = {}
        self.ours: list[int] = []  # closed once the process has them
        try:
            fds = [self._fd(stdin)]
            for name, given in (("out", stdout), ("err", stderr)):
                if capture and given is None:
                    r, w = os.pipe()
                    self.readers[name] = r
                    self.ours.append(w)
                    fds.append(w)
                else:
                    fds.append(self._fd(given))
        except BaseException:
            self.close()
            raise
        self.fds = tuple(fds) if any(fd is not None for fd in fds) else None

    def _fd(self, given):
        if given is None:
            return None
        if given == DEVNULL:
            fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            self.ours.append(fd)
            return fd
        fd = given if isinstance(given, int) else given.fileno()
        if fd < 0:
            raise RuntimeFailure(f"stdio: {given!r} is not an open file")
        return fd

    def close_ours(self) -> None:
        for fd in self.ours:
            os.close(fd)
        self.ours = []

    def collect(self) -> tuple[bytes | None, bytes | None]:
        """Read the captured pipes to EOF: (stdout, stderr), None for one not captured."""
        if not self.readers:
            return None, None
        import selectors
        data = {fd: [] for fd in self.readers.values()}
        with selectors.DefaultSelector() as sel:
            for fd in data:
                sel.register(fd, selectors.EVENT_READ)
            left = len(data)
            while left:
                for key, _ in sel.select():
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        data[key.fd].append(chunk)
                    else:
                        sel.unregister(key.fd)
                        left -= 1
        return tuple(b"".join(data[self.readers[n]]) if n in self.readers else None
                     for n in ("out", "err"))

    def close(self) -> None:
        self.close_ours()
        for fd in self.readers.values():
            os.close(fd)
        self.readers = {}
