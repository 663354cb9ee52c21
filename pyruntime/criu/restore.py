"""restore: a new container (state dir, cgroup) whose process tree CRIU restores from an image.

As runc: CRIU restores into a bind of the rootfs (it wants its root to be a mount point whose
parent is not overmounted), as a sibling of itself (rst_sibling: the init is our child, like
create's, and is left to our caller when we exit), inside the container's cgroups (the criu
process is moved there first and cg_root names them), with the external mounts mapped back to
their host sources, stdio pipes handed over by inherit_fd, prestart/createRuntime hooks at
"setup-namespaces" and a terminal's new pty master sent to --console-socket (or, for a
foreground restore without one, kept for the caller to proxy, as runc does)."""
from __future__ import annotations

import json
import os
import socket

from pyruntime.log import now_rfc3339
from pyruntime.oci import config as configmod
from pyruntime.lifecycle import hooks, state as statemod
from pyruntime.linux import syscalls as sc
from pyruntime.lifecycle.container import _Cleanup, _owner, with_default_devices
from pyruntime.lifecycle.layout import write_pid_file
from pyruntime.errors import RuntimeFailure
from pyruntime.lifecycle.state import Container, State
from pyruntime.criu import dump, mounts, rpc, swrk


def read_image(image: str) -> tuple[list, dict]:
    """(descriptors.json, pyruntime's metadata or {}) of a checkpoint image dir."""
    if not os.path.isdir(image):
        raise RuntimeFailure(f"--image-path {image}: no such directory (no checkpoint there)")
    if not os.path.exists(os.path.join(image, "inventory.img")):
        raise RuntimeFailure(f"--image-path {image}: not a CRIU checkpoint (no inventory.img)")
    try:
        with open(os.path.join(image, dump.DESCRIPTORS)) as f:
            fds = json.load(f)
    except (OSError, ValueError) as e:
        raise RuntimeFailure(f"--image-path {image}: {dump.DESCRIPTORS}: "
                             f"{getattr(e, 'strerror', None) or e}: not a container checkpoint "
                             "(made by runc or pyruntime)", errno=e.errno) from None
    try:
        with open(os.path.join(image, dump.META)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = {}  # runc's checkpoints have none
    return fds, meta


def check_same_shape(image: str, meta: dict, keys: list[str], terminal: bool) -> None:
    """An image of a container with other external mounts (another bundle) cannot be
    restored here: say so before CRIU fails on it halfway."""
    if "external_mounts" in meta and sorted(meta["external_mounts"]) != sorted(keys):
        theirs, ours = set(meta["external_mounts"]), set(keys)
        diff = sorted(theirs ^ ours)
        raise RuntimeFailure(
            f"--image-path {image}: checkpoint of container {meta.get('id')!r} (bundle "
            f"{meta.get('bundle')}), whose bind mounts differ from this config.json's: "
            f"{', '.join(diff)}")
    if "terminal" in meta and bool(meta["terminal"]) != terminal:
        raise RuntimeFailure(f"--image-path {image}: checkpoint of container {meta.get('id')!r}"
                             f" has process.terminal {str(meta['terminal']).lower()}, "
                             f"this config.json {str(terminal).lower()}")


def restore(root: str, cid: str, o, criu_flag: str | None,
            systemd_cgroup: bool) -> tuple[int, int | None]:
    """Restore; return the init's pid (left running) and, for a terminal restored without
    --console-socket, the new pty's master."""
    from pyruntime import cgroups
    statemod.check_id(cid)
    criu = swrk.find(criu_flag)
    bundle = os.path.abspath(o.bundle or ".")
    cfg = configmod.load(bundle)
    image = os.path.abspath(o.image_path or "checkpoint")
    descriptors, meta = read_image(image)
    terminal = bool(cfg.process and cfg.process.terminal)
    if terminal and not o.console_socket and o.detach:  # nobody would hold the master
        raise RuntimeFailure("process.terminal is true: --console-socket is required")
    if o.lazy_pages:
        swrk.features(criu, lazy_pages=True)
    mode = dump.cg_mode(o.manage_cgroups_mode)
    empty = dump.empty_ns(o.empty_ns)
    c = Container.new(root, cid)
    cleanup = _Cleanup(c)
    criu_root = os.path.join(c.dir, "criu-root")
    bound = False
    fds: list[int] = []
    console = None
    restored: dict[str, int] = {}
    try:
        mgr = cgroups.manager(cfg.linux.cgroups_path, cid, systemd=systemd_cgroup)
        mgr.create()
        cleanup.cgroup = mgr
        ext = mounts.external(cfg, bundle, mgr.paths, mgr.mode)
        check_same_shape(image, meta, [k for k, _ in ext], terminal)
        from pyruntime.lean.records import asdict
        c.state = State(id=cid, bundle=bundle, rootfs=cfg.root_path,
                        created=now_rfc3339(), annotations=cfg.annotations,
                        owner=_owner(), oci_version=cfg.oci_version, cgroup=mgr.to_state(),
                        hooks={k: [asdict(h) for h in cfg.hooks.get(k, [])]
                               for k in ("poststart", "poststop") if cfg.hooks.get(k)},
                        no_pid_ns=cfg.linux.namespace("pid") is None, use_systemd=systemd_cgroup,
                        config_process=cfg.raw.get("process") or {},
                        seccomp=cfg.linux.seccomp or {})
        c.save()
        make_mountpoints(cfg, bundle)
        os.mkdir(criu_root, 0o755)
        sc.mount(cfg.root_path, criu_root, None, sc.MS_BIND | sc.MS_REC)
        bound = True
        req = rpc.Req(type=rpc.REQ_TYPE["RESTORE"])
        opts = req.opts
        fds.append(open_dir(image, "--image-path"))
        opts.images_dir_fd = fds[-1]
        log_dir = image
        if o.work_path:
            log_dir = os.path.abspath(o.work_path)
            fds.append(dump.open_dir(log_dir, "--work-path"))
            opts.work_dir_fd = fds[-1]
        opts.evasive_devices = True
        opts.log_level = 4
        opts.log_file = "restore.log"
        opts.rst_sibling = True
        opts.root = criu_root
        opts.manage_cgroups = True
        opts.manage_cgroups_mode = mode
        opts.notify_scripts = True
        opts.shell_job = o.shell_job
        opts.ext_unix_sk = o.ext_unix_sk
        opts.tcp_established = o.tcp_established
        opts.file_locks = o.file_locks
        opts.empty_ns = empty
        opts.orphan_pts_master = True
        opts.auto_dedup = o.auto_dedup
        opts.lazy_pages = o.lazy_pages
        if o.lsm_profile:
            opts.lsm_profile = o.lsm_profile
        if o.lsm_mount_context:
            opts.lsm_mount_context = o.lsm_mount_context
        conf = dump.config_file(cfg)
        if conf:
            opts.config_file = conf
        for key, fd in external_namespaces(opts, cfg):
            fds.append(fd)
            opts.inherit_fd.add(key=key, fd=3 + len(fds))  # swrk.call: extra fds from fd 4 on
        for key, src in ext:
            opts.ext_mnt.add(key=key, val=src)
        if cfg.linux.masked_paths:
            opts.ext_mnt.add(key="/dev/null", val="/dev/null")
        for i, target in enumerate(descriptors[:3]):
            if "pipe:" in target:  # the restored stdio: ours, as for create
                opts.inherit_fd.add(key=target, fd=i)
        if o.console_socket:
            try:
                console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                console.connect(o.console_socket)
            except OSError as e:
                raise RuntimeFailure(f"--console-socket {o.console_socket}: {e.strerror}",
                                     errno=e.errno) \
                    from None

        def started(criu_pid: int) -> None:
            mgr.add_pid(criu_pid)
            mgr.apply(with_default_devices(cfg.linux.resources, {d.path for d in cfg.linux.devices}))
            c.state.cgroup = mgr.to_state()
            for ctrl, path in own_cgroups(criu_pid):  # where CRIU puts the restored tree
                root = opts.cg_root.add(path=path)
                if ctrl:  # (none: cgroup2's)
                    root.ctrl = ctrl

        def notify(script: str, pid: int, passed: list[int]) -> None:
            if script == "setup-namespaces":
                oci = dict(c.oci_state(), status="created", pid=pid)
                hooks.run("prestart", cfg.hooks.get("prestart", []), oci)
                hooks.run("createRuntime", cfg.hooks.get("createRuntime", []), oci)
            elif script == "orphan-pts-master" and passed:
                if console is not None:
                    from pyruntime.linux.console import send_master
                    send_master(console, passed[0])
                elif terminal:
                    restored["master"] = os.dup(passed[0])  # (swrk closes what it passed)
            elif script == "post-restore":
                restored["pid"] = pid
                cleanup.pid = pid
                c.state.pid, c.state.init_start = pid, statemod.proc_start_time(pid) or 0
                c.state.status = "running"
                c.save()

        resp, status = swrk.call(criu, req, extra_fds=fds, stdio=(0, 1, 2), started=started,
                                 notify=notify)
        log = os.path.join(log_dir, "restore.log")
        if not resp.success:
            raise swrk.failure(f"restore of {cid}", resp, log)
        if status:
            raise RuntimeFailure(f"restore of {cid}: criu {swrk.exited(status)}; see {log}")
        pid = restored.get("pid") or resp.restore.pid
        if c.state.pid != pid:
            c.state.pid, c.state.init_start = pid, statemod.proc_start_time(pid) or 0
        c.state.status = "running"
        c.save()
        if o.pid_file:
            write_pid_file(o.pid_file, pid)
        return pid, restored.pop("master", None)
    except BaseException:
        if "master" in restored:
            os.close(restored["master"])
        _drop_root(criu_root, bound)
        bound = False
        cleanup.run()  # (removes the state dir: criu-root must be gone first)
        raise
    finally:
        for fd in fds:
            os.close(fd)
        if console is not None:
            console.close()
        _drop_root(criu_root, bound)
        c.unlock()


def _drop_root(criu_root: str, bound: bool) -> None:
    if bound:
        sc.umount2(criu_root, sc.MNT_DETACH)
    try:
        os.rmdir(criu_root)
    except OSError:
        pass


def open_dir(path: str, flag: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise RuntimeFailure(f"{flag} {path}: {e.strerror}", errno=e.errno) from None


def external_namespaces(opts, cfg) -> list[tuple[str, int]]:
    """Namespaces given by path: net and pid were dumped as external (dump.EXT_NS) and are
    handed back as inherited fds, (key, fd) returned; the others are joined by CRIU."""
    fds = []
    for i, ns in enumerate(cfg.linux.namespaces):
        if not ns.path:
            continue
        if ns.type in dump.EXT_NS:
            try:
                fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise RuntimeFailure(f"config.json: linux.namespaces[{i}].path: {ns.path!r} "
                                     f"cannot be opened: {e.strerror}", errno=e.errno) from None
            fds.append((dump.EXT_NS[ns.type][1], fd))
        elif ns.type == "cgroup":
            raise RuntimeFailure(f"config.json: linux.namespaces[{i}]: CRIU cannot join a "
                                 "cgroup namespace given by path")
        else:
            name = {"network": "net", "mount": "mnt"}.get(ns.type, ns.type)
            opts.join_ns.add(ns=name, ns_file=ns.path)
    return fds


def own_cgroups(pid: int) -> list[tuple[str, str]]:
    """(controller list, path) of each hierarchy pid is in ("" for cgroup2)."""
    out = []
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrl, path = line.rstrip("\n").split(":", 2)
            out.append((ctrl, path))
    return out


def make_mountpoints(cfg, bundle: str) -> None:
    """Mountpoints the init created at create time, missing from a fresh copy of the rootfs
    (restore on another host): CRIU mounts on them but does not create them. Those inside a
    tmpfs come back with the tmpfs's contents, and cgroup dirs with their tmpfs or /sys.

    A bind's own mountpoints (a destination nested in another bind) live in the bind's source,
    so each bind is mounted while the later ones are made, as at create time; that happens in
    a child with a mount namespace of its own, so the host never sees those mounts."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (a child: reports through the pipe)
        os.close(r)
        try:
            _make_mountpoints_here(cfg, bundle)
            code = 0
        except BaseException as e:  # noqa: BLE001  (anything goes back to the parent)
            if not isinstance(e, RuntimeFailure):
                e = RuntimeFailure(e.strerror if isinstance(e, OSError) and e.strerror else str(e),
                                   errno=getattr(e, "errno", None))
            os.write(w, json.dumps(e.record()).encode())
            code = 1
        os._exit(code)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            err = f.read()
    finally:
        os.waitpid(pid, 0)
    if err:
        e = RuntimeFailure.from_record(json.loads(err))
        raise RuntimeFailure(f"restore: making the mountpoints in {cfg.root_path}: {e}",
                             errno=e.errno, path=e.path, step="restore")


def _make_mountpoints_here(cfg, bundle: str) -> None:
    from pyruntime.setup.rootfs import fdpath, make_path
    sc.unshare(sc.CLONE_NEWNS)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    tmpfs = [m.destination.rstrip("/") + "/" for m in cfg.mounts if m.type == "tmpfs"]
    root_fd = os.open(cfg.root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for m in cfg.mounts:
            if m.type in ("cgroup", "cgroup2") or any(m.destination.startswith(t) for t in tmpfs):
                continue
            is_dir = True
            src = None
            if mounts.is_bind(m):
                src = os.path.join(bundle, m.source)  # (an absolute source stays as it is)
                is_dir = os.path.isdir(src)
            fd = make_path(root_fd, m.destination, is_dir=is_dir)
            try:
                if src is not None:
                    sc.mount(src, fdpath(fd), None, sc.MS_BIND | sc.MS_REC)
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)
