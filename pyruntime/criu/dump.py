"""checkpoint: dump a running container's process tree with CRIU (runc's mechanism: external
bind mounts and masked files named by key, the freezer cgroup to stop the tree, the stdio
targets saved in descriptors.json for the restore)."""
from __future__ import annotations

import json
import os

from pyruntime.oci import config as configmod
from pyruntime.errors import RuntimeFailure
from pyruntime.lifecycle.state import Container
from pyruntime.criu import mounts, rpc, swrk

DESCRIPTORS = "descriptors.json"  # runc's name: the init's fds 0-2 as /proc showed them
META = "pyruntime-checkpoint.json"  # what the restore checks the image against
CLONE_NEWNET, CLONE_NEWPID = 0x40000000, 0x20000000
EXT_NS = {"network": ("net", "extRootNetNS"), "pid": ("pid", "extRootPidNS")}


def cg_mode(text: str | None) -> int:
    if not text:
        return rpc.CG_MODE["DEFAULT"]
    if text not in ("soft", "full", "strict", "ignore"):
        raise RuntimeFailure(f"--manage-cgroups-mode: {text!r} is not soft, full, strict or ignore")
    return rpc.CG_MODE[text.upper()]


def empty_ns(values: list[str]) -> int:
    """runc always leaves the network namespace's contents to whoever manages it; --empty-ns
    names more (only network is supported, as in runc)."""
    mask = CLONE_NEWNET
    for v in values:
        if v != "network":
            raise RuntimeFailure(f'--empty-ns: namespace "{v}" is not supported')
    return mask


def config_file(cfg) -> str | None:
    """runc's rule: the org.criu.config annotation names a CRIU config file ("" for none),
    else /etc/criu/runc.conf (CRIU ignores a file that does not exist)."""
    if "org.criu.config" in cfg.annotations:
        return cfg.annotations["org.criu.config"] or None
    return "/etc/criu/runc.conf"


def open_dir(path: str, flag: str) -> int:
    try:
        os.makedirs(path, 0o700, exist_ok=True)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise RuntimeFailure(f"{flag} {path}: {e.strerror}", errno=e.errno) from None


def checkpoint(root: str, cid: str, o, criu_flag: str | None) -> None:
    criu = swrk.find(criu_flag)
    c = Container.load(root, cid, lock=True)
    destroy = False
    try:
        status = c.status()
        if status not in ("running", "paused"):
            raise RuntimeFailure(f"Container cannot be checkpointed in {status} state")
        cfg = configmod.load(c.state.bundle)
        image = os.path.abspath(o.image_path or "checkpoint")
        if o.parent_path:
            if os.path.isabs(o.parent_path):
                raise RuntimeFailure("--parent-path must be relative (to --image-path)")
            if not os.path.isdir(os.path.join(image, o.parent_path)):
                raise RuntimeFailure(f"invalid --parent-path: {os.path.join(image, o.parent_path)}"
                                     ": no such directory")
        if o.pre_dump:
            swrk.features(criu, mem_track=True)
        if o.lazy_pages:
            swrk.features(criu, lazy_pages=True)
            _check_status_fd(o.status_fd)
        req = rpc.Req(type=rpc.REQ_TYPE["PRE_DUMP" if o.pre_dump else "DUMP"])
        opts = req.opts
        fds = []
        try:
            image_fd = open_dir(image, "--image-path")
            fds.append(image_fd)
            opts.images_dir_fd = image_fd
            log_dir = image
            if o.work_path:
                work_fd = open_dir(os.path.abspath(o.work_path), "--work-path")
                fds.append(work_fd)
                opts.work_dir_fd = work_fd
                log_dir = os.path.abspath(o.work_path)
            fill_dump_opts(opts, c, cfg, o)
            if not o.pre_dump:
                write_image_meta(image, c, cfg)
            resp, exit_status = swrk.call(criu, req, extra_fds=fds,
                                          notify=lambda script, _pid, _fds: _notify(script, o))
        finally:
            for fd in fds:
                os.close(fd)
        log = os.path.join(log_dir, "dump.log")
        what = f"checkpoint of {cid}" + (" (pre-dump)" if o.pre_dump else "")
        if not resp.success:
            raise swrk.failure(what, resp, log)
        if exit_status and not o.pre_dump:  # a pre-dump's criu is stopped once it answered
            raise RuntimeFailure(f"{what}: criu {swrk.exited(exit_status)}; see {log}")
        destroy = not (o.leave_running or o.pre_dump)
    finally:
        c.unlock()
    if destroy:  # CRIU killed the tree; as runc, the container goes (poststop hooks run)
        from pyruntime.lifecycle.container import delete
        delete(root, cid, force=True)


def fill_dump_opts(opts, c: Container, cfg, o) -> None:
    st = c.state
    opts.pid = st.pid
    opts.log_level = 4
    opts.log_file = "dump.log"
    opts.root = cfg.root_path
    opts.manage_cgroups = True
    opts.manage_cgroups_mode = cg_mode(o.manage_cgroups_mode)
    opts.notify_scripts = True
    opts.shell_job = o.shell_job
    opts.leave_running = o.leave_running
    opts.tcp_established = o.tcp_established
    opts.ext_unix_sk = o.ext_unix_sk
    opts.file_locks = o.file_locks
    opts.empty_ns = empty_ns(o.empty_ns)
    opts.orphan_pts_master = True
    opts.auto_dedup = o.auto_dedup
    opts.lazy_pages = o.lazy_pages
    conf = config_file(cfg)
    if conf:
        opts.config_file = conf
    for kind, (name, key) in EXT_NS.items():
        ns = cfg.linux.namespace(kind)
        if ns is not None and ns.path:
            try:
                ino = os.stat(ns.path).st_ino
            except OSError as e:
                raise RuntimeFailure(f"linux.namespaces: {kind} {ns.path}: {e.strerror}",
                                     errno=e.errno) from None
            opts.external.append(f"{name}[{ino}]:{key}")
    dirs = (st.cgroup or {}).get("dirs") or {}
    freezer = dirs.get("freezer") or dirs.get("")
    if freezer:
        opts.freeze_cgroup = freezer
    if o.page_server:
        host, _, port = o.page_server.rpartition(":")
        if not host or not port.isdigit():
            raise RuntimeFailure(f"--page-server {o.page_server!r}: use ADDRESS:PORT")
        opts.ps.address, opts.ps.port = host.strip("[]"), int(port)
    if o.parent_path:
        opts.parent_img = o.parent_path
        opts.track_mem = True
    if o.pre_dump:
        return
    for key, _src in mounts.external(cfg, st.bundle, dirs, (st.cgroup or {}).get("mode", "")):
        opts.ext_mnt.add(key=key, val=key)
    for path in cfg.linux.masked_paths:
        try:
            is_dir = os.path.isdir(f"/proc/{st.pid}/root{path}")
            exists = os.path.lexists(f"/proc/{st.pid}/root{path}")
        except OSError:
            continue
        if exists and not is_dir:  # a /dev/null bind; directories get a tmpfs (dumped)
            opts.ext_mnt.add(key=path, val="/dev/null")


def write_image_meta(image: str, c: Container, cfg) -> None:
    fds = []
    for n in range(3):
        try:
            fds.append(os.readlink(f"/proc/{c.state.pid}/fd/{n}"))
        except OSError:
            fds.append("/dev/null")
    with open(os.path.join(image, DESCRIPTORS), "w") as f:
        json.dump(fds, f)
    dirs = (c.state.cgroup or {}).get("dirs") or {}
    keys = [k for k, _ in mounts.external(cfg, c.state.bundle, dirs,
                                          (c.state.cgroup or {}).get("mode", ""))]
    meta = {"id": c.id, "bundle": c.state.bundle, "rootfs": cfg.root_path,
            "terminal": bool(cfg.process and cfg.process.terminal), "external_mounts": keys}
    with open(os.path.join(image, META), "w") as f:
        json.dump(meta, f, indent=1)


def _notify(script: str, o) -> None:
    if script == "status-ready" and o.status_fd >= 0:  # lazy pages: the page server is up
        try:
            os.write(o.status_fd, b"\0")
            os.close(o.status_fd)
        except OSError:
            pass
        o.status_fd = -1


def _check_status_fd(fd: int) -> None:
    if fd < 0:
        return
    import fcntl
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as e:
        raise RuntimeFailure(f"invalid --status-fd argument {fd}: {e.strerror}",
                             errno=e.errno) from None
    if not flags & (os.O_WRONLY | os.O_RDWR):
        raise RuntimeFailure(f"invalid --status-fd argument {fd}: not writable")
