"""config.json parsed into records (declared like dataclasses: records.py), with the fast
semantic checks `create` relies on.

The full JSON Schema check lives in pyruntime.oci.validate (jsonschema is too slow to import on
the hot path); here every field the runtime acts on is type-checked as it is read, and an
error names the JSON path and the value.
"""
from __future__ import annotations

import os

from pyruntime.lean import jsonio
from pyruntime.errors import MISSING, ConfigError, RuntimeFailure
from pyruntime.lean.records import field, record

NAMESPACE_TYPES = {"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"}
RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
PROPAGATIONS = {"", "private", "rprivate", "slave", "rslave", "shared", "rshared",
                "unbindable", "runbindable"}
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")
UINT32 = (1 << 32) - 1


class Reader:
    """Reads typed fields out of a JSON object, naming the JSON path in every error."""

    def __init__(self, obj, path: str, file: str = "config.json"):
        self.path, self.file = path, file
        if not isinstance(obj, dict):
            raise ConfigError(path or "(top level)", obj, "must be an object", file)
        self.obj = obj

    def at(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key, value, problem: str):
        raise ConfigError(self.at(key), value, problem, self.file)

    def get(self, key: str, types, default=None, required: bool = False):
        if key not in self.obj or self.obj[key] is None:
            if required:
                self.fail(key, MISSING, "is required")
            return default
        value = self.obj[key]
        if isinstance(value, bool) and bool not in _tuple(types):
            self.fail(key, value, f"must be {_typename(types)}")
        if not isinstance(value, types):
            self.fail(key, value, f"must be {_typename(types)}")
        if isinstance(value, str):
            _check_text(value, self.at(key), self.file)
        return value

    def string(self, key, default=None, required=False) -> str | None:
        return self.get(key, str, default, required)

    def boolean(self, key, default=False) -> bool:
        return self.get(key, bool, default)

    def integer(self, key, default=None, required=False, lo=None, hi=None) -> int | None:
        value = self.get(key, int, default, required)
        if value is not None and value is not default:
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                self.fail(key, value, f"is out of range [{lo}, {hi}]")
        return value

    def strings(self, key, required=False) -> list[str]:
        values = self.get(key, list, [], required)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise ConfigError(f"{self.at(key)}[{i}]", v, "must be a string", self.file)
            _check_text(v, f"{self.at(key)}[{i}]", self.file)
        return values

    def objects(self, key, required=False) -> list["Reader"]:
        values = self.get(key, list, [], required)
        return [Reader(v, f"{self.at(key)}[{i}]", self.file) for i, v in enumerate(values)]

    def child(self, key, required=False) -> "Reader | None":
        value = self.get(key, dict, None, required)
        return None if value is None else Reader(value, self.at(key), self.file)


def _check_text(s: str, path: str, file: str) -> None:
    r"""What becomes a C string (a path, an argument) can hold neither NUL nor a lone surrogate
    (JSON can spell both: "\u0000", "\ud800")."""
    if "\0" in s:
        raise ConfigError(path, s, "contains a NUL character", file)
    if not s.isascii():
        try:
            s.encode()
        except UnicodeEncodeError:
            raise ConfigError(path, s, "is not valid Unicode (a lone surrogate)", file) from None


def _tuple(t):
    return t if isinstance(t, tuple) else (t,)


def _typename(types) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", list: "an array",
             dict: "an object", float: "a number"}
    return " or ".join(names.get(t, t.__name__) for t in _tuple(types))


# ---------------------------------------------------------------- records

@record
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: list[int] = field(default_factory=list)


@record
class Rlimit:
    type: str
    resource: int
    soft: int
    hard: int


@record
class Capabilities:
    bounding: list[str] | None = None
    effective: list[str] | None = None
    inheritable: list[str] | None = None
    permitted: list[str] | None = None
    ambient: list[str] | None = None


@record
class Process:
    args: list[str]
    cwd: str = "/"
    env: list[str] = field(default_factory=list)
    terminal: bool = False
    console_size: tuple[int, int] | None = None
    user: User = field(default_factory=User)
    capabilities: Capabilities | None = None
    rlimits: list[Rlimit] = field(default_factory=list)
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    apparmor_profile: str = ""
    selinux_label: str = ""
    scheduler: dict | None = None
    io_priority: dict | None = None
    exec_cpu_affinity: dict | None = None


@record
class Mount:
    destination: str
    type: str = ""
    source: str = ""
    options: list[str] = field(default_factory=list)
    uid_mappings: list[dict] = field(default_factory=list)
    gid_mappings: list[dict] = field(default_factory=list)
    path: str = ""  # JSON path, for messages
    idmap_fd: int = -1  # the idmapped detached tree `create` made for the init (mountattr.py)


@record
class Hook:
    path: str
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    timeout: int | None = None


@record
class Namespace:
    type: str
    path: str = ""


@record
class Device:
    path: str
    type: str
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@record
class Linux:
    namespaces: list[Namespace] = field(default_factory=list)
    uid_mappings: list[dict] = field(default_factory=list)
    gid_mappings: list[dict] = field(default_factory=list)
    time_offsets: dict = field(default_factory=dict)
    devices: list[Device] = field(default_factory=list)
    cgroups_path: str | None = None
    resources: dict = field(default_factory=dict)
    sysctl: dict[str, str] = field(default_factory=dict)
    seccomp: dict | None = None
    rootfs_propagation: str = ""
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    mount_label: str = ""
    personality: dict | None = None
    net_devices: dict = field(default_factory=dict)
    memory_policy: tuple | None = None  # (mode | flags, node mask), see mempolicy.py
    intel_rdt: dict | None = None

    def namespace(self, kind: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == kind:
                return ns
        return None


@record
class Config:
    oci_version: str
    root_path: str  # absolute
    root_readonly: bool
    process: Process | None
    hostname: str | None
    domainname: str | None
    mounts: list[Mount]
    hooks: dict[str, list[Hook]]
    annotations: dict[str, str]
    linux: Linux
    raw: dict


# ---------------------------------------------------------------- parsing

def load(bundle: str) -> Config:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = jsonio.load(f)
    except FileNotFoundError:
        raise RuntimeFailure(f"config.json not found in bundle {bundle}") from None
    except ValueError as e:
        raise RuntimeFailure(f"config.json: not valid JSON: {e}") from None
    except OSError as e:
        raise RuntimeFailure(f"cannot read {path}: {e.strerror}", errno=e.errno) from None
    return parse(raw, bundle)


# Refused rather than ignored (see coverage.py): pyruntime does not implement them yet.
_NOT_YET = "is not supported by pyruntime yet"


def resctrl_mounted() -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(" - resctrl " in line for line in f)


def parse(raw, bundle: str) -> Config:
    r = Reader(raw, "")
    version = r.string("ociVersion", required=True)
    if not version.startswith("1."):
        r.fail("ociVersion", version, "is not a supported runtime-spec version (want 1.x)")
    root = r.child("root", required=True)
    root_path = root.string("path", required=True)
    if not os.path.isabs(root_path):
        root_path = os.path.join(bundle, root_path)
    if not os.path.isdir(root_path):
        root.fail("path", root.obj["path"], "is not a directory")
    proc = r.child("process")
    annotations = r.get("annotations", dict, {})
    for k, v in annotations.items():
        if not isinstance(v, str):
            raise ConfigError(f"annotations.{k}", v, "must be a string")
    cfg = Config(
        oci_version=version,
        root_path=os.path.realpath(root_path),
        root_readonly=root.boolean("readonly"),
        process=parse_process(proc) if proc else None,
        hostname=r.string("hostname"),
        domainname=r.string("domainname"),
        mounts=[_mount(m) for m in r.objects("mounts")],
        hooks=_hooks(r.child("hooks")),
        annotations=annotations,
        linux=_linux(r.child("linux")),
        raw=raw,
    )
    _cross_checks(cfg, r)
    if cfg.linux.net_devices:
        from pyruntime.linux import netdev
        cfg.linux.net_devices = netdev.check(cfg.linux.net_devices, cfg.linux)
    rdt = (raw.get("linux") or {}).get("intelRdt")
    if rdt is not None:
        if not isinstance(rdt, dict):
            raise ConfigError("linux.intelRdt", rdt, "must be an object")
        if not resctrl_mounted():  # config-linux.md: the runtime MUST generate an error
            raise ConfigError("linux.intelRdt", rdt, "cannot be applied: no resctrl filesystem "
                              "is mounted on this host")
        cfg.linux.intel_rdt = rdt
    if cfg.mounts:
        from pyruntime.oci import mounts  # a full config's: exec parses only its process
        for m in cfg.mounts:
            mounts.check_options(m)
    return cfg


def parse_process(p: Reader) -> Process:
    args = p.strings("args")
    if not args:
        p.fail("args", p.obj.get("args", MISSING), "must name the program to run")
    cwd = p.string("cwd", "/")
    if not cwd.startswith("/"):
        p.fail("cwd", cwd, "must be an absolute path")
    for i, e in enumerate(p.strings("env")):
        if "=" not in e:
            raise ConfigError(f"{p.at('env')}[{i}]", e, "must have the form KEY=value", p.file)
    size = p.child("consoleSize")
    u = p.child("user")
    user = User()
    if u:
        user = User(uid=u.integer("uid", 0, lo=0, hi=UINT32), gid=u.integer("gid", 0, lo=0, hi=UINT32),
                    umask=u.integer("umask", None, lo=0, hi=0o7777),
                    additional_gids=[_uint(u, "additionalGids", i, g)
                                     for i, g in enumerate(u.get("additionalGids", list, []))])
    caps = p.child("capabilities")
    sched = p.child("scheduler")
    for key in ("flags", "runtime", "deadline", "period") if sched else ():
        if sched.obj.get(key):  # sched_setattr(2) only; runc refuses SCHED_DEADLINE too
            sched.fail(key, sched.obj[key], _NOT_YET)
    affinity = p.child("execCPUAffinity")
    if affinity:
        from pyruntime.linux.mempolicy import parse_list
        affinity = {k: parse_list(affinity.string(k), affinity.at(k)) or None
                    for k in ("initial", "final") if affinity.string(k)}
    rlimits = []
    seen = set()
    for rl in p.objects("rlimits"):
        kind = rl.string("type", required=True)
        if kind not in RLIMITS:
            rl.fail("type", kind, "is not a known rlimit (see getrlimit(2): RLIMIT_NOFILE, ...)")
        if kind in seen:
            rl.fail("type", kind, "is set twice")
        seen.add(kind)
        soft = rl.integer("soft", required=True, lo=0, hi=(1 << 64) - 1)
        hard = rl.integer("hard", required=True, lo=0, hi=(1 << 64) - 1)
        if soft > hard:  # setrlimit(2) refuses it (EINVAL): say so at create, not at start
            rl.fail("soft", soft, f"exceeds the hard limit {hard}")
        rlimits.append(Rlimit(kind, RLIMITS[kind], soft, hard))
    return Process(
        args=args, cwd=cwd, env=p.strings("env"), terminal=p.boolean("terminal"),
        console_size=(size.integer("height", 0, lo=0, hi=UINT32), size.integer("width", 0, lo=0, hi=UINT32))
        if size else None,
        user=user,
        capabilities=Capabilities(**{k: (caps.strings(k) if k in caps.obj else None)
                                     for k in ("bounding", "effective", "inheritable", "permitted", "ambient")})
        if caps else None,
        rlimits=rlimits,
        no_new_privileges=p.boolean("noNewPrivileges"),
        oom_score_adj=p.integer("oomScoreAdj", None, lo=-1000, hi=1000),
        apparmor_profile=p.string("apparmorProfile", ""),
        selinux_label=p.string("selinuxLabel", ""),
        scheduler=p.get("scheduler", dict),
        io_priority=p.get("ioPriority", dict),
        exec_cpu_affinity=affinity or None,  # {"initial"/"final": set of CPUs}
    )


def _uint(r: Reader, key, i, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= UINT32:
        raise ConfigError(f"{r.at(key)}[{i}]", value, "must be a uint32", r.file)
    return value


def _mount(m: Reader) -> Mount:
    dest = m.string("destination", required=True)
    if not dest:
        m.fail("destination", dest, "must not be empty")
    mt = Mount(destination=dest, type=m.string("type", ""), source=m.string("source", ""),
               options=m.strings("options"), path=m.path,
               uid_mappings=_id_maps(m, "uidMappings"), gid_mappings=_id_maps(m, "gidMappings"))
    from pyruntime.oci import mounts
    if not mt.type and not mounts.is_bind(mt):
        # mount(2) with no filesystem type: runc and crun fail with ENODEV, at start.
        m.fail("type", m.obj.get("type", MISSING), 'is needed unless the options hold "bind" '
               'or "rbind"')
    return mt


def _id_maps(r: Reader, key: str) -> list[dict]:
    return [{k: mr.integer(k, required=True, lo=0, hi=UINT32) for k in ("containerID", "hostID",
                                                                        "size")}
            for mr in r.objects(key)]


def _hooks(h: Reader | None) -> dict[str, list[Hook]]:
    hooks: dict[str, list[Hook]] = {}
    if h is None:
        return hooks
    for kind in HOOK_KINDS:
        for hr in h.objects(kind):
            path = hr.string("path", required=True)
            if not os.path.isabs(path):
                hr.fail("path", path, "must be an absolute path")
            hooks.setdefault(kind, []).append(Hook(
                path=path, args=hr.strings("args"), env=hr.strings("env"),
                timeout=hr.integer("timeout", None, lo=1)))
    return hooks


def _linux(lr: Reader | None) -> Linux:
    if lr is None:
        return Linux()
    namespaces, seen = [], set()
    for nr in lr.objects("namespaces"):
        kind = nr.string("type", required=True)
        if kind not in NAMESPACE_TYPES:
            nr.fail("type", kind, "is not a namespace type (pid, network, mount, ipc, uts, user, "
                    "cgroup, time)")
        if kind in seen:
            nr.fail("type", kind, "is listed twice")
        seen.add(kind)
        path = nr.string("path", "")
        if path and not os.path.isabs(path):
            nr.fail("path", path, "must be an absolute path")
        namespaces.append(Namespace(kind, path))
    devices = []
    for dr in lr.objects("devices"):
        dtype = dr.string("type", required=True)
        if dtype not in ("c", "b", "u", "p"):
            dr.fail("type", dtype, "is not a device type (c, b, u, p)")
        dpath = dr.string("path", required=True)
        if not dpath.startswith("/"):
            dr.fail("path", dpath, "must be an absolute path")
        devices.append(Device(path=dpath, type=dtype,
                              major=dr.integer("major", 0, required=dtype != "p", lo=0),
                              minor=dr.integer("minor", 0, required=dtype != "p", lo=0),
                              file_mode=dr.integer("fileMode", None, lo=0, hi=0o7777),
                              uid=dr.integer("uid", None, lo=0, hi=UINT32),
                              gid=dr.integer("gid", None, lo=0, hi=UINT32)))
    prop = lr.string("rootfsPropagation", "")
    if prop not in PROPAGATIONS:
        lr.fail("rootfsPropagation", prop, "is not a mount propagation (shared, slave, private, "
                "unbindable, or their r-forms)")
    sysctl = lr.get("sysctl", dict, {})
    for k, v in sysctl.items():
        if not isinstance(v, str):
            raise ConfigError(f"linux.sysctl.{k}", v, "must be a string")
    time_offsets = lr.get("timeOffsets", dict, {})
    for clock, off in time_offsets.items():
        if clock not in ("monotonic", "boottime"):
            raise ConfigError(f"linux.timeOffsets.{clock}", off, "is not a clock (monotonic, boottime)")
    pers = lr.child("personality")
    if pers and pers.obj.get("flags"):
        pers.fail("flags", pers.obj["flags"], 'is not supported: config-linux.md says "Currently '
                  'no flag values are supported"')
    policy = lr.get("memoryPolicy", dict)
    if policy is not None:
        from pyruntime.linux import mempolicy
        policy = mempolicy.parse(policy)
    seccomp = lr.get("seccomp", dict)
    if seccomp is not None:
        from pyruntime.seccomp import profile as seccomp_mod
        seccomp_mod.check(seccomp)
    return Linux(
        namespaces=namespaces, uid_mappings=_id_maps(lr, "uidMappings"),
        gid_mappings=_id_maps(lr, "gidMappings"),
        time_offsets=time_offsets, devices=devices, cgroups_path=lr.string("cgroupsPath"),
        resources=lr.get("resources", dict, {}), sysctl=sysctl, seccomp=seccomp,
        rootfs_propagation=prop, masked_paths=lr.strings("maskedPaths"),
        readonly_paths=lr.strings("readonlyPaths"), mount_label=lr.string("mountLabel", ""),
        personality=lr.get("personality", dict), net_devices=lr.get("netDevices", dict, {}),
        memory_policy=policy,
    )


_IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}


def _sysctl_namespace(name: str) -> str | None:
    """The namespace that makes a sysctl private to the container (runc's list), or None."""
    if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
        return "ipc"
    if name.startswith("net."):
        return "network"
    if name in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    return None


def _cross_checks(cfg: Config, r: Reader) -> None:
    linux = cfg.linux
    user_ns = linux.namespace("user")
    if (linux.uid_mappings or linux.gid_mappings) and not user_ns:
        raise ConfigError("linux.uidMappings", linux.uid_mappings or linux.gid_mappings,
                          "needs a user namespace in linux.namespaces")
    if user_ns and not user_ns.path and not (linux.uid_mappings and linux.gid_mappings):
        raise ConfigError("linux.namespaces", "user",
                          "a new user namespace needs linux.uidMappings and linux.gidMappings")
    if cfg.hostname and not linux.namespace("uts"):
        raise ConfigError("hostname", cfg.hostname, "needs a uts namespace (linux.namespaces)")
    if cfg.domainname and not linux.namespace("uts"):
        raise ConfigError("domainname", cfg.domainname, "needs a uts namespace (linux.namespaces)")
    if linux.time_offsets and not linux.namespace("time"):
        raise ConfigError("linux.timeOffsets", linux.time_offsets, "needs a time namespace")
    for name, value in linux.sysctl.items():
        needs = _sysctl_namespace(name)
        if needs is None:
            raise ConfigError(f"linux.sysctl.{name}", value, "is not in a separate kernel "
                              "namespace: setting it would change the host")
        if not linux.namespace(needs):
            raise ConfigError(f"linux.sysctl.{name}", value, f"needs a {needs} namespace in "
                              "linux.namespaces: setting it would change the host")
    if cfg.process:
        from pyruntime.linux.lsm import check_apparmor
        check_apparmor(cfg.process.apparmor_profile)
    if cfg.process and cfg.process.capabilities:
        from pyruntime.linux import capabilities
        capabilities.check(cfg.process.capabilities, "process.capabilities")
