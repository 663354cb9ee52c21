"""The runtime side of the lifecycle: create, start, kill, delete (the CLI commands are thin
wrappers over these)."""
from __future__ import annotations

import os
import pwd
import select

from pyruntime.lean import signal, socket
from pyruntime.lifecycle import hooks, layout, state as statemod
from pyruntime import log
from pyruntime.errors import (ConfigError, ContainerNotFound, ContainerNotRunning,
                              ContainerStateError, PeerGone, RuntimeFailure, step)
from pyruntime.lifecycle.state import Container, State, StateCorrupt


# ---------------------------------------------------------------- create

def create(root: str, cid: str, bundle: str, *, pid_file: str | None = None,
           console_socket: str | None = None, no_pivot: bool = False, no_new_keyring: bool = False,
           preserve_fds: int = 0, systemd_cgroup: bool = False,
           console: socket.socket | None = None, rootless: bool = False, stdio=None,
           reexec: bool = True, cfg=None, joiner=None) -> Container:
    """Set the container up and leave its init blocked on exec.fifo; return its Container.

    stdio: the init's fds 0, 1, 2 (None each: ours). reexec=False refuses a container that
    needs a sealed interpreter instead of re-executing this process (a library's caller).
    cfg: the bundle's config, already loaded. joiner: the warm server's handle on an init
    that its client forked (server/remote.py), which then joins what we prepare."""
    from pyruntime.lean.records import asdict
    from pyruntime.oci import config as configmod  # create-only: start/kill/delete never parse a config
    statemod.check_id(cid)
    bundle = os.path.abspath(bundle)
    if cfg is None:
        cfg = configmod.load(bundle)
    log.debug(f"create {cid}: {bundle}/config.json loaded")
    if cfg.process and cfg.process.capabilities:
        from pyruntime.linux import capabilities
        capabilities.check_grantable(cfg.process.capabilities, "process.capabilities")
    _maybe_seal(cfg, reexec)
    from pyruntime import cgroups
    resources = cfg.linux.resources
    if rootless:
        from pyruntime.lifecycle import rootless as rl
        rl.check_config(cfg)
        resources = rl.without_unset(resources)
    mgr = cgroups.manager(cfg.linux.cgroups_path, cid, systemd=systemd_cgroup, rootless=rootless)
    if rootless and not systemd_cgroup:  # the user's systemd delegates the unit it makes
        from pyruntime.cgroups.rootless import restrict
        mgr = restrict(mgr, resources)
    c = Container.new(root, cid)
    cleanup = _Cleanup(c, joiner)
    try:
        # The first save is the intent log: the cgroup dirs this create is about to make are on
        # disk before any exists, so `delete --force` after a kill at any instant finds them.
        c.state = State(id=cid, bundle=bundle, rootfs=cfg.root_path, created=log.now_rfc3339(),
                        annotations=cfg.annotations, owner=_owner(), oci_version=cfg.oci_version,
                        hooks={k: [asdict(h) for h in cfg.hooks.get(k, [])]
                               for k in ("poststart", "poststop") if cfg.hooks.get(k)},
                        no_pid_ns=cfg.linux.namespace("pid") is None, use_systemd=systemd_cgroup,
                        config_process=cfg.raw.get("process") or {}, seccomp=cfg.linux.seccomp or {},
                        memory_policy=list(cfg.linux.memory_policy or ()),
                        cgroup=dict(mgr.to_state(), created=mgr.planned()) if mgr.dirs else {})
        c.save()
        try:
            os.mkfifo(c.fifo, 0o600)
            _give_fifo(c.fifo, cfg, rootless)
        except OSError as e:
            raise statemod.os_failure("cannot create", e) from None
        log.debug(f"state dir {c.dir} and its exec.fifo made")
        init_pid = _spawn_init(c, cfg, cleanup, mgr, bundle, console_socket, console, no_pivot,
                               no_new_keyring, preserve_fds, rootless, resources, stdio, joiner)
        if pid_file:
            layout.write_pid_file(pid_file, init_pid)
        return c
    except BaseException:
        cleanup.run()
        raise
    finally:
        c.unlock()


def _maybe_seal(cfg, reexec: bool = True) -> None:
    """The init can only be reached during setup by processes already in the pid namespace it
    joins (a pod's, or the host's): if those may hold CAP_SYS_PTRACE, run from a sealed copy of
    the interpreter (see sealed.py). We cannot know their capabilities, so any joined pid
    namespace outside a user namespace counts."""
    from pyruntime.setup import sealed
    linux = cfg.linux
    pid_ns = linux.namespace("pid")
    if sealed.active() or linux.namespace("user") or (pid_ns and not pid_ns.path):
        return
    if not reexec:
        raise ConfigError("linux.namespaces", [n.type for n in linux.namespaces],
                          "has no new pid namespace (nor a user namespace): such a container "
                          "needs the command line, which re-executes itself from a sealed "
                          "copy of the interpreter (CVE-2019-5736); a library cannot do that "
                          "to its caller")
    sealed.reexec()


class _Cleanup:
    """Undo a half-done create: nothing may be left behind (process, cgroup, state dir)."""

    def __init__(self, c: Container, joiner=None):
        self.c, self.pid, self.cgroup, self.joiner = c, 0, None, joiner

    def run(self) -> None:
        if not self.pid and self.joiner is not None:
            self.pid = self.joiner.arrived()  # killed before its cgroups go, or it keeps them
        if self.pid:
            _kill_and_wait(self.pid, self.c.state.init_start if self.c.state else 0)
        if self.cgroup is not None:
            try:
                self.cgroup.destroy()
            except (OSError, RuntimeFailure) as e:
                log.warning(f"cleaning up the cgroup: {e}")
        _remove_intel_rdt(self.c)
        try:
            self.c.remove()
        except RuntimeFailure as e:  # the create's own error is the one to report
            log.warning(f"cleaning up the state dir: {e}")


def _spawn_init(c: Container, cfg, cleanup: _Cleanup, mgr, bundle, console_socket, console,
                no_pivot, no_new_keyring, preserve_fds, rootless=False, resources=None,
                stdio=None, joiner=None) -> int:
    from pyruntime.linux import namespaces
    from pyruntime.lifecycle.channel import (CREATED, GO, HOOKS, HOOKS_DONE, MAPPED, PID,
                                             JOIN, JOINED, NAMESPACES, PREPARED, PROCFS, USERNS)
    from pyruntime.setup import bootstrap as boot
    from pyruntime.setup.init import WHO, InitArgs, bootstrap, join_message
    linux = cfg.linux
    if linux.resources.get("unified") and mgr.mode != "v2":
        raise ConfigError("linux.resources.unified", linux.resources["unified"],
                          "is an invalid configuration here: it needs a cgroup v2 host, this "
                          "one is cgroup v1 (or hybrid), as runc refuses it")
    cleanup.cgroup = mgr
    with step("cgroups"):
        mgr.create()
        log.debug(f"cgroup made: {sorted(set(mgr.paths.values()))}")
        _check_existing_cgroup(mgr)
    c.state.cgroup = mgr.to_state()
    if joiner is not None:
        joiner.cgroups_ready(mgr)  # the client forks the init meanwhile
    seccomp_prog = listener = None
    if linux.seccomp:
        from pyruntime.seccomp import compile as seccomp
        seccomp_prog = seccomp.compile(linux.seccomp,
                                       cache_dir=os.path.join(c.root, seccomp.CACHE_SUBDIR))
        log.debug("seccomp filter compiled")
    ns_fds = namespaces.open_paths(linux)
    if joiner is not None:
        ns_fds = joiner.callers_namespaces(linux, ns_fds)
    console_sock = None
    fifo_fd = -1
    bind_sources: dict = {}
    # the preparer forked before the init exists, while its client still imports, when it
    # need not be in the init's pid namespace (server/remote.py)
    first = joiner is not None and joiner.preparer_first(cfg)
    try:
        _open_idmapped(cfg, bundle)
        # (rootless: open_tree needs the host's CAP_SYS_ADMIN; the init binds by path, as
        # the user, from inside the user namespace it owns)
        if linux.namespace("user") and not rootless:
            from pyruntime.setup.rootfs import open_bind_sources
            bind_sources = open_bind_sources(cfg, bundle)
        if seccomp_prog is not None and linux.seccomp.get("listenerPath"):
            from pyruntime.seccomp import notify as seccomp_notify
            listener = seccomp_notify.connect_listener(linux.seccomp["listenerPath"])
        if joiner is None:  # (the server's client holds the console socket for its init)
            console_sock = boot.console_socket(bool(cfg.process and cfg.process.terminal),
                                               console_socket, console)
        fifo_fd = os.open(c.fifo, os.O_PATH | os.O_CLOEXEC)
        args = InitArgs(cfg=cfg, container_id=c.id, bundle=bundle, fifo_fd=fifo_fd, ns_fds=ns_fds,
                        console_sock=console_sock, no_pivot=no_pivot, no_new_keyring=no_new_keyring,
                        preserve_fds=preserve_fds, cgroup_paths=mgr.paths, cgroup_mode=mgr.mode,
                        seccomp=seccomp_prog, listener=listener, bind_sources=bind_sources,
                        caller_waits=console is not None, rootless=rootless,
                        preparer=joiner is not None, proc_from_init=first)
        if joiner is not None:  # the init enters its cgroups by itself: limit them meanwhile
            join = join_message(args)  # (encoded before the init waits for it)
            with step("cgroups"):
                _apply(mgr, linux, rootless, resources)
            if not first:
                joiner.forked()
                cleanup.pid = joiner.pid
                stdio = joiner.stdio
        log.debug("nsexec container setup: forking the bootstrap child", stage=0)

        def child(chan, args):
            c.unlock()  # our copy of the lock fd would hold the flock for the init's lifetime
            boot.redirect_stdio(stdio)
            if joiner is not None:
                boot.keep_only(chan, args)
            bootstrap(chan, args)
        # under the warm server the bootstrap child is the preparer, which needs its cgroups
        # only to create a cgroup namespace rooted there (the init joins them on its own)
        placement = mgr.placement() if joiner is None or namespaces.new_flags(
            linux, ("cgroup",)) else None
        pid, chan = boot.spawn(WHO, child, args, cgroup=placement,
                               pid_ns=joiner.pidfd if joiner is not None and not first else -1)
        if joiner is not None:
            log.debug(f"preparer {pid} forked " + ("before the init, outside its pid namespace"
                                                   if first else "into the init's pid namespace"))
    except BaseException:
        if joiner is not None:  # kept for the JOIN otherwise
            if fifo_fd >= 0:
                os.close(fifo_fd)
            if listener is not None:
                listener.close()
        raise
    finally:
        for _, fd in ns_fds:
            os.close(fd)
        for m in cfg.mounts:  # the init has its copies
            if m.idmap_fd >= 0:
                os.close(m.idmap_fd)
                m.idmap_fd = -1
        if fifo_fd >= 0 and joiner is None:
            os.close(fifo_fd)
        for fd in bind_sources.values():
            os.close(fd)
        if listener is not None and joiner is None:
            listener.close()
        if console_sock is not None:
            console_sock.close()
    # the preparer in no cgroup of its own: nothing of ours comes between its MOVED and our GO
    early_go = joiner is not None and placement is None
    try:
        try:
            if early_go:
                try:
                    chan.send(GO)
                except OSError:
                    pass  # gone already: in_cgroup's recv says why
            with step("cgroups"):
                boot.in_cgroup(chan, pid, placement)
                log.debug(f"bootstrap child {pid} put in the cgroup")
                if joiner is None:
                    _apply(mgr, linux, rootless, resources)
            c.state.cgroup = mgr.to_state()
        except BaseException:
            _abort(pid, joiner)
            raise
        if not early_go:
            chan.send(GO)
        if joiner is not None:
            if first:  # the preparer is on its way: now the init
                joiner.forked()
                cleanup.pid = joiner.pid
            context = joiner.proc_context(required=first)
            try:
                if first:
                    chan.send_fds(PROCFS, [context])
            except PeerGone:
                pass  # the preparer failed already: the next recv reports its error
            finally:
                if context >= 0:
                    os.close(context)
        if joiner is None:
            msg = chan.recv(USERNS, PID)
            if msg["type"] == USERNS:
                if rootless:
                    from pyruntime.linux import idmap
                    idmap.write_maps(pid, linux.uid_mappings, linux.gid_mappings)
                else:
                    namespaces.write_id_maps(pid, linux.uid_mappings, linux.gid_mappings)
                log.debug("user namespace: uid and gid maps written")
                chan.send(MAPPED)
                msg = chan.recv(PID)
            init_pid = ns_pid = msg["pid"]
            log.debug(f"init forked: pid {init_pid}")
            os.waitpid(pid, 0)  # the bootstrap child is done; the init is reparented to our caller
        else:  # ns_pid: the preparer, PID 2 of the init's pid namespace, in the new ones
            init_pid, ns_pid = joiner.pid, pid
            # the init joins them while the preparer mounts: the hooks look at them through it
            msg, fds = chan.recv_fds(NAMESPACES)
            try:
                joiner.chan.send_fds(JOIN, [*fds, fifo_fd] + (
                    [listener.fileno()] if listener is not None else []),
                    **join, ns=msg["ns"])
            finally:
                for fd in fds:
                    os.close(fd)
        cleanup.pid = init_pid
        st = c.state
        st.pid, st.init_start = init_pid, statemod.proc_start_time(init_pid) or 0
        st.status = "creating"
        c.save()
        if linux.net_devices:  # before the hooks: prestart may configure them
            from pyruntime.linux import netdev
            netdev.move(linux.net_devices, ns_pid)
        if linux.intel_rdt is not None:
            from pyruntime.linux import intelrdt
            st.intel_rdt = intelrdt.apply(linux.intel_rdt, c.id, init_pid)
            c.save()
        if joiner is not None:
            joiner.chan.recv(JOINED)
        chan.recv(HOOKS)
        oci = dict(c.oci_state(), status="created", pid=init_pid)
        log.debug("init's mounts are ready: running the prestart and createRuntime hooks")
        with step("hooks"):
            cwd = joiner.cwd if joiner is not None else None
            hooks.run("prestart", cfg.hooks.get("prestart", []), oci, cwd)
            hooks.run("createRuntime", cfg.hooks.get("createRuntime", []), oci, cwd)
        chan.send(HOOKS_DONE, state=oci)
        if joiner is not None:
            chan.recv(PREPARED)
            chan.sock.close()
            chan = joiner.chan
            chan.send(PREPARED, state=oci)
            os.waitpid(pid, 0)  # the preparer ends: gone before CREATED
        chan.recv(CREATED)
        if joiner is not None:
            joiner.moved()
        st.status = "created"
        c.save()
        log.debug(f"container {c.id} created: its init waits on exec.fifo")
        return init_pid
    except RuntimeFailure as e:
        _abort(pid, joiner)
        if isinstance(e, ConfigError):
            raise
        # runc's wording for what fails once the container process exists: Docker and
        # containerd show it, and people search for it
        raise RuntimeFailure(f"unable to start container process: {e}", errno=e.errno,
                             path=e.path, step=e.step) from e
    except BaseException:
        _abort(pid, joiner)
        raise
    finally:
        chan.sock.close()
        if joiner is not None:
            os.close(fifo_fd)
            if listener is not None:
                listener.close()


def _apply(mgr, linux, rootless: bool, resources) -> None:
    if rootless:  # no device rules: the kernel refuses them to an unprivileged user
        mgr.apply(resources)
    else:
        mgr.apply(with_default_devices(linux.resources, {d.path for d in linux.devices}))
    log.debug("cgroup resources applied")


def _abort(pid: int, joiner) -> None:
    """Kill the bootstrap child (our own) and reap it. Under the warm server it is the
    preparer, PID 2 of the init's pid namespace (or outside it, forked first): the init dies
    too, and its end waits until we have reaped the preparer, so the init is killed first
    and waited for last."""
    from pyruntime.setup import bootstrap as boot
    init = joiner.pidfd if joiner is not None else -1
    if init >= 0:
        try:
            signal.pidfd_send_signal(init, signal.SIGKILL)
        except ProcessLookupError:
            pass
    boot.kill_and_reap(pid)
    if init >= 0:
        select.select([init], [], [], 10.0)


def _open_idmapped(cfg, bundle: str) -> None:
    """Idmapped mounts are made here, on the host, for the init to move into place."""
    from pyruntime.setup import mountattr
    for m in cfg.mounts:
        if mountattr.wants_idmap(m):
            source = m.source if os.path.isabs(m.source) else os.path.join(bundle, m.source)
            m.idmap_fd = mountattr.open_idmapped(m, source, cfg.linux)


# What every container may use whatever its config says (runc's AllowedDevices, in its order):
# mknod of anything (the node is useless without an allow rule), the standard nodes, ptys and
# tun. Not /dev/console (5:1): a terminal's console is a pty bound there, allowed as 136:*.
# A standard node's rule goes with its path: runc drops it when linux.devices names that path.
DEFAULT_DEVICE_RULES = [
    (None, {"allow": True, "type": "c", "access": "m"}),
    (None, {"allow": True, "type": "b", "access": "m"}),
    *((path, {"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rwm"})
      for path, ma, mi in (("/dev/null", 1, 3), ("/dev/random", 1, 8), ("/dev/full", 1, 7),
                           ("/dev/tty", 5, 0), ("/dev/zero", 1, 5), ("/dev/urandom", 1, 9),
                           (None, 136, None), (None, 5, 2), (None, 10, 200))),
]


def with_default_devices(resources: dict, device_paths=()) -> dict:
    """The device cgroup rules: the config's, then the defaults. linux.devices only makes
    nodes: access to them is what linux.resources.devices allows, so a node the config
    denies stays denied (as with runc), and so does a standard node that linux.devices
    redefines (device_paths)."""
    rules = resources.get("devices")
    if rules is not None and not isinstance(rules, list):
        raise RuntimeFailure(f"config.json: linux.resources.devices: {rules!r} must be an array")
    rules = list(rules or [])
    rules += [{k: v for k, v in r.items() if v is not None}
              for path, r in DEFAULT_DEVICE_RULES if path is None or path not in device_paths]
    return dict(resources, devices=rules)


def _give_fifo(fifo: str, cfg, rootless: bool) -> None:
    """exec.fifo belongs to the process's user, who opens it for writing last, after the user
    switch (setup/init.py). Only `start` may open it for reading: that is what lets the
    process run, so an owner other than the caller gets write alone (a host user of that uid
    can reach it in the 0711 state dir)."""
    uid, gid = (_host_id(cfg.linux.uid_mappings, cfg.process.user.uid),
                _host_id(cfg.linux.gid_mappings, cfg.process.user.gid)) if cfg.process else (0, 0)
    try:
        os.chown(fifo, uid, gid)
        if uid != os.geteuid():
            os.chmod(fifo, 0o200)
    except PermissionError:
        if not rootless:
            raise
        # a subordinate id of ours: the init reopens the fifo through its O_PATH fd, so only
        # the mode stands in its way (runc's 0622)
        os.chmod(fifo, 0o622)


def _host_id(maps, cid: int) -> int:
    """The host id of the container's id `cid` (itself, without a user namespace)."""
    if not maps:
        return cid
    for m in maps:
        if m["containerID"] <= cid < m["containerID"] + m["size"]:
            return m["hostID"] + cid - m["containerID"]
    return 0  # unmapped: create fails on the user switch, saying so


def _check_existing_cgroup(mgr) -> None:
    """A cgroupsPath may name a cgroup that exists already (runc's rules): a frozen one
    would freeze the init mid-setup, so it is refused; one with processes in it is shared,
    which is allowed, with a warning."""
    try:
        frozen = mgr.state() == "frozen"
    except RuntimeFailure:
        frozen = False  # no freezer on this host
    if frozen:
        raise RuntimeFailure("container's cgroup unexpectedly frozen: thaw it or use another "
                             "cgroupsPath")
    n = len(mgr.pids())
    if n:
        log.warning(f"container's cgroup is not empty: {n} process(es) found")


def _owner() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _kill_and_wait(pid: int, start: int, timeout: float = 10.0) -> None:
    """SIGKILL a process that is not our child and wait for it to die (pidfd: no pid reuse)."""
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return
    try:
        if statemod.proc_start_time(pid) not in (start, None) and start:
            return
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            return
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)


# ---------------------------------------------------------------- start

def start(root: str, cid: str) -> None:
    c = Container.load(root, cid, lock=True)
    try:
        status = c.status()
        if status != "created":
            if status == "stopped":
                raise ContainerNotRunning(cid, status,
                                          f"cannot start a container that has stopped: {cid}")
            raise ContainerStateError(cid, status, f"cannot start an already running container: "
                                                   f"{cid} is {status}")
        log.debug(f"start {cid}: opening exec.fifo")
        from pyruntime.lifecycle import execfifo
        try:
            data = execfifo.read(c.fifo, c.state.pid, c.init_alive)
        except FileNotFoundError:
            raise ContainerStateError(cid, "running", f"cannot start an already running "
                                                      f"container: {cid}") from None
        os.unlink(c.fifo)
        from pyruntime.lifecycle.channel import check_fifo
        check_fifo(data)
        oci = c.oci_state()
        hooks.run_warn("poststart", [h for h in c.state.hooks.get("poststart", [])],
                       dict(oci, status="running", pid=c.state.pid), log.warning)
    finally:
        c.unlock()


# ---------------------------------------------------------------- kill

SIGNAMES = {name[3:]: getattr(signal, name) for name in dir(signal)
            if name.startswith("SIG") and not name.startswith("SIG_") and isinstance(getattr(signal, name), int)}


def parse_signal(text: str) -> int:
    t = text.upper()
    if t.lstrip("-").isdigit():
        n = int(t)
        if 0 <= n < 65:  # 0 checks that the process exists, as kill(2) does
            return n
        raise RuntimeFailure("unable to signal init: invalid argument")  # kill(2)'s EINVAL, as runc
    else:
        if t.startswith("SIG"):
            t = t[3:]
        if t in SIGNAMES:
            return int(SIGNAMES[t])
    raise RuntimeFailure(f"invalid signal: {text}")


def kill(root: str, cid: str, sig: int, all_processes: bool = False) -> None:
    c = Container.load(root, cid)
    status = c.status()
    if all_processes:
        pids = _cgroup_pids(c)
        if not pids and status in ("stopped",):
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if status == "paused" and sig == signal.SIGKILL:
            _thaw(c)
        return
    if status in ("stopped", "creating") and not (status == "creating" and c.state.pid):
        raise ContainerNotRunning(cid, status)
    _signal_init(c, sig)
    if status == "paused" and sig == signal.SIGKILL:
        _thaw(c)  # a frozen (v1) task dies only once thawed; runc thaws for SIGKILL only


def _signal_init(c: Container, sig: int) -> None:
    try:
        pidfd = os.pidfd_open(c.state.pid)
    except ProcessLookupError:
        raise ContainerNotRunning(c.id) from None
    try:
        if statemod.proc_start_time(c.state.pid) != c.state.init_start:
            raise ContainerNotRunning(c.id)
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        raise ContainerNotRunning(c.id) from None
    finally:
        os.close(pidfd)


def _cgroup_pids(c: Container) -> list[int]:
    if not c.state.cgroup and c.init_alive():  # rootless without a cgroup
        from pyruntime.lifecycle.rootless import pid_namespace_members
        return pid_namespace_members(c.state.pid)
    if c.state.cgroup:
        from pyruntime import cgroups
        try:
            return cgroups.manager_from_state(c.state.cgroup).pids()
        except (OSError, RuntimeFailure):
            pass
    return [c.state.pid] if c.init_alive() else []


def _thaw(c: Container) -> None:
    from pyruntime import cgroups
    try:
        cgroups.manager_from_state(c.state.cgroup).thaw()
    except (OSError, RuntimeFailure):
        pass


# ---------------------------------------------------------------- delete

def delete(root: str, cid: str, force: bool = False) -> None:
    try:
        c = Container.load(root, cid, lock=True)
    except (ContainerNotFound, StateCorrupt) as e:
        if force:
            _clean_without_state(root, cid)
            return
        if isinstance(e, StateCorrupt):
            raise RuntimeFailure(f"{e} (delete --force cleans it up)") from None
        raise
    try:
        status = c.status()
        if status != "stopped" and not force:
            raise ContainerStateError(cid, status, f"cannot delete container {cid} that is not "
                                      f"stopped: {status} (container still running; use --force)")
        if status == "paused":
            _thaw(c)
        if status != "stopped" and c.state.pid:
            _kill_and_wait(c.state.pid, c.state.init_start)
        oci = dict(c.oci_state(), status="stopped")
        mgr = _manager(c.state.cgroup)
        if mgr is not None:
            _empty_cgroup(mgr)  # what outlived the init: an exec caught mid-way, a shared pid ns
            _destroy_cgroup(mgr, cid)
        _remove_intel_rdt(c)
        c.remove()
        hooks.run_warn("poststop", c.state.hooks.get("poststop", []), oci, log.warning)
    finally:
        c.unlock()


def _manager(record: dict):
    if not record:
        return None
    from pyruntime import cgroups
    return cgroups.manager_from_state(record)


def _empty_cgroup(mgr, timeout: float = 5.0) -> None:
    """SIGKILL every process in the cgroup until none is left (a frozen one dies once thawed)."""
    import time
    deadline = time.monotonic() + timeout
    thawed = False
    while True:
        try:
            pids = mgr.pids()
        except (OSError, RuntimeFailure):
            return
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not thawed:
            thawed = True
            try:
                mgr.thaw()
            except (OSError, RuntimeFailure):
                pass
        time.sleep(0.005)


def _destroy_cgroup(mgr, cid: str) -> None:
    try:
        mgr.destroy()
    except (OSError, RuntimeFailure) as e:
        log.warning(f"removing the cgroup of {cid}: {e}")


def _remove_intel_rdt(c: Container) -> None:
    if c.state and c.state.intel_rdt:
        from pyruntime.linux import intelrdt
        try:
            intelrdt.remove(c.state.intel_rdt)
        except OSError as e:
            log.warning(f"removing the resctrl groups of {c.id}: {e.strerror}")


def _clean_without_state(root: str, cid: str) -> None:
    """delete --force of a state dir whose state file is missing (a create killed before its
    first save) or unreadable: remove what may be there from what can still be known. The
    cgroup comes from whichever state file parses (the intent log), else from the id (the
    default cgroupsPath); its processes are the container's, the init among them."""
    try:
        statemod.check_id(cid)
    except RuntimeFailure:
        return
    d = os.path.join(root, cid)
    ours = {statemod.STATE_FILE, statemod.FIFO, f".{statemod.STATE_FILE}.tmp"}
    try:
        if not set(os.listdir(d)) <= ours:
            return  # another runtime's dir (runc shares Docker's root): not ours to clean
    except OSError:
        return
    c = Container(root, cid)
    try:
        c.lock()  # a create still running holds it until it is done
    except ContainerNotFound:
        return
    try:
        try:
            c.state = c._read()
        except (ContainerNotFound, StateCorrupt):
            pass
        else:
            c.unlock()
            return delete(root, cid, force=True)  # its create finished meanwhile
        records = []
        for name in (statemod.STATE_FILE, f".{statemod.STATE_FILE}.tmp"):
            partial = _partial_state(os.path.join(d, name))
            if partial.get("pid") and partial.get("init_start"):
                _kill_and_wait(partial["pid"], partial["init_start"])
            if partial.get("cgroup"):
                records.append(partial["cgroup"])
        from pyruntime import cgroups
        try:
            derived = cgroups.manager(None, cid)
            derived.created = list(derived.paths.values())
            records.append(derived.to_state())
        except (OSError, RuntimeFailure):
            pass
        for record in records:
            try:
                mgr = cgroups.manager_from_state(record)
            except (KeyError, TypeError, AttributeError, RuntimeFailure):
                continue
            _empty_cgroup(mgr)
            _destroy_cgroup(mgr, cid)
        statemod.remove_dir(d)
    finally:
        c.unlock()


def _partial_state(path: str) -> dict:
    """The fields of a damaged state file that still have the right type."""
    from pyruntime.lean import jsonio
    try:
        with open(path, "rb") as f:
            data = jsonio.load(f)
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for k in ("pid", "init_start", "cgroup"):
        try:
            State.from_dict({k: data[k]})
            out[k] = data[k]
        except (KeyError, ValueError, TypeError):
            pass
    return out
