"""The systemd cgroup driver (`--systemd-cgroup`): the container's cgroup is a transient unit.

cgroupsPath is runc's "slice:prefix:name": the unit is "<prefix>-<name>.scope" (or "<name>" when
that ends in ".slice") in `slice` ("system.slice" when empty; "a-b.slice" lives at
a.slice/a-b.slice). Without a cgroupsPath the unit is "pyruntime-<id>.scope" in system.slice:
runc's default is ":runc:<id>", and ":pyruntime:<id>" keeps the two runtimes' units apart as
their default state roots are (docker, podman and containerd always pass a cgroupsPath).

The unit is started over D-Bus once the first pid and linux.resources are known (a scope cannot
be empty), with the resource properties runc sends (so that a daemon-reload or an update keeps
them); then the cgroupfs code applies all of linux.resources to the dirs systemd made, as runc's
systemd manager does. systemd owns its dirs: delete stops the unit and removes only the dirs we
made in hierarchies systemd does not manage (v1 freezer, cpuset, hugetlb...).

jeepney (pure-Python D-Bus) is imported only here, and only when a bus is needed.
"""
from __future__ import annotations

import os
import select
import socket
import sys
import time

from pyruntime.errors import RuntimeFailure

from pyruntime.cgroups import v1, v2
from pyruntime.cgroups.common import Fields, Layout, default_layout, shares_to_weight, swap_to_v2, write
from pyruntime.cgroups.manager import Manager, _makedirs

DEFAULT_SLICE = "system.slice"
DEFAULT_PREFIX = "pyruntime"
SYSTEM_BUS = "/run/dbus/system_bus_socket"
PRIVATE_SOCKET = "/run/systemd/private"
JOB_TIMEOUT = 30.0  # runc's
USEC_INFINITY = (1 << 64) - 1
_DEFAULT_PERIOD = 100000

_DEST = "org.freedesktop.systemd1"
_PATH = "/org/freedesktop/systemd1"
_MANAGER = "org.freedesktop.systemd1.Manager"


# ---------------------------------------------------------------- names and paths

def _bad_path(value, why: str) -> RuntimeFailure:
    return RuntimeFailure(f"linux.cgroupsPath: {value!r} {why} (--systemd-cgroup wants "
                          "\"slice:prefix:name\", e.g. \"system.slice:docker:abc\")")


def expand_slice(slice_name: str) -> str:
    """"a-b.slice" -> "/a.slice/a-b.slice": systemd nests slices by their dashes ("-.slice" is
    the root, "/")."""
    if (len(slice_name) <= len(".slice") or not slice_name.endswith(".slice")
            or "/" in slice_name):
        raise ValueError(f"invalid slice name: {slice_name}")
    stem = slice_name[:-len(".slice")]
    if stem == "-":
        return "/"
    path, prefix = "", ""
    for part in stem.split("-"):
        if not part:
            raise ValueError(f"invalid slice name: {slice_name}")
        path += f"/{prefix}{part}.slice"
        prefix += part + "-"
    return path


def parse_cgroups_path(cgroups_path: str | None, container_id: str) -> tuple[str, str]:
    """(slice, unit name) of a cgroupsPath in systemd form."""
    if not cgroups_path:
        return DEFAULT_SLICE, f"{DEFAULT_PREFIX}-{container_id}.scope"
    if not isinstance(cgroups_path, str):
        raise RuntimeFailure(f"linux.cgroupsPath: {cgroups_path!r} is not a string")
    parts = cgroups_path.split(":")
    if len(parts) != 3:
        raise _bad_path(cgroups_path, "is not of the form slice:prefix:name")
    parent, prefix, name = parts
    if not name:
        raise _bad_path(cgroups_path, "has an empty name")
    if "/" in name or "/" in prefix:
        raise _bad_path(cgroups_path, "names a path, not a unit")
    slice_name = parent or DEFAULT_SLICE
    try:
        expand_slice(slice_name)
    except ValueError as e:
        raise _bad_path(cgroups_path, f"has an {e}") from None
    # runc's rule, empty prefix included ("-name.scope").
    unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope"
    if unit.endswith(".slice"):
        try:
            expand_slice(unit)
        except ValueError as e:
            raise _bad_path(cgroups_path, f"has an {e}") from None
    return slice_name, unit


def unit_cgroup(slice_name: str, unit: str) -> str:
    """The unit's cgroup relative to systemd's root, as its ControlGroup property shows it."""
    if unit.endswith(".slice"):
        return expand_slice(unit)  # a slice's place comes from its own name
    return expand_slice(slice_name).rstrip("/") + "/" + unit


def _pid1_cgroups(path: str = "/proc/1/cgroup") -> dict:
    out = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            out[""] = parts[2]
        for c in parts[1].split(","):
            if c:
                out[c] = parts[2]
    return out


def unit_dirs(layout: Layout, rel: str, pid1: dict) -> dict[str, str]:
    """The unit's dir in each hierarchy: systemd's root there (PID 1's cgroup less init.scope,
    as runc finds it) joined with `rel`."""
    def place(key, mnt, root):
        base = pid1.get(key, "/")
        if base.endswith("/init.scope"):
            base = base[:-len("/init.scope")] or "/"
        if root != "/" and (base == root or base.startswith(root + "/")):
            base = base[len(root):] or "/"
        return os.path.normpath(f"{mnt}/{base.strip('/')}/{rel.strip('/')}")
    dirs = {}
    if layout.mode != "v2":
        for key, (mnt, root) in layout.v1.items():
            dirs[key] = place(key, mnt, root)
    if layout.unified:
        dirs[""] = place("", *layout.unified)
    return dirs


# ---------------------------------------------------------------- properties

def _prop(name: str, sig: str, value):
    return (name, (sig, value))


def base_properties(slice_name: str, unit: str, description: str, pid: int | None,
                    unified: bool) -> list:
    """What runc's Apply sends with StartTransientUnit."""
    props = [_prop("Description", "s", description)]
    if unit.endswith(".slice"):
        props.append(_prop("Wants", "as", [slice_name]))  # a slice's parent is in its name
    else:
        props.append(_prop("Slice", "s", slice_name))
        props.append(_prop("Delegate", "b", True))
    if pid is not None:
        props.append(_prop("PIDs", "au", [pid]))
    # Accounting on from the start: the kernel handles joining a memory cgroup later badly.
    props += [_prop("MemoryAccounting", "b", True), _prop("CPUAccounting", "b", True),
              _prop("IOAccounting" if unified else "BlockIOAccounting", "b", True),
              _prop("TasksAccounting", "b", True),
              _prop("DefaultDependencies", "b", False)]
    return props


def range_to_bits(spec: str, field: str) -> bytes:
    """"0-2,7" -> the byte mask systemd's AllowedCPUs / AllowedMemoryNodes take (bit n = n)."""
    bits = 0
    for part in spec.strip().split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
            else:
                a = b = int(part)
        except ValueError:
            raise RuntimeFailure(f"{field}: {spec!r} is not a list of ranges") from None
        if a < 0 or b < a or b > 1 << 16:
            raise RuntimeFailure(f"{field}: {spec!r} has an invalid range {part!r}")
        for n in range(a, b + 1):
            bits |= 1 << n
    if not bits:
        raise RuntimeFailure(f"{field}: {spec!r} names no CPU or node")
    return bits.to_bytes((bits.bit_length() + 7) // 8, "little")


def _u64(v: int) -> int:
    return USEC_INFINITY if v == -1 else v


def _cpu_quota(props: list, quota, period, version, update: bool) -> None:
    if period is not None:
        if version() >= 242:  # CPUQuotaPeriodUSec is new in v242; cgroupfs still gets it
            props.append(_prop("CPUQuotaPeriodUSec", "t", period))
    if quota is None and (period is None or update):
        return
    per_sec = USEC_INFINITY
    if quota is not None and quota > 0:
        per_sec = quota * 1000000 // (period or _DEFAULT_PERIOD)
        # systemd keeps a whole percent: round up so that the cgroup's own quota fits.
        if per_sec % 10000:
            per_sec = (per_sec // 10000 + 1) * 10000
    props.append(_prop("CPUQuotaPerSecUSec", "t", per_sec))


def resource_properties(resources: dict | None, *, unified: bool, version=lambda: 0,
                        update: bool = False) -> list:
    """linux.resources as the unit properties runc sets ("0 = unset"); the cgroupfs code
    applies everything else. `version()` is systemd's version (asked only when it matters)."""
    if not resources:
        return []
    r = Fields(resources, "linux.resources", update)
    props: list = []
    if not update and resources.get("devices") is not None:
        from pyruntime.cgroups import devices
        props += device_properties(devices.parse(resources["devices"]))
    mem, cpu, pids = r.sub("memory"), r.sub("cpu"), r.sub("pids")
    limit = mem.int("limit", lo=-1)
    if unified:
        if limit is not None:
            props.append(_prop("MemoryMax", "t", _u64(limit)))
        res = mem.int("reservation", lo=-1)
        if res is not None:
            props.append(_prop("MemoryLow", "t", _u64(res)))
        swap = mem.int("swap", lo=-1)
        if swap is not None or limit == -1:
            sw = swap_to_v2(swap or 0, limit or 0, mem.p("swap"))
            if sw:
                props.append(_prop("MemorySwapMax", "t", _u64(sw)))
        shares = cpu.int("shares", lo=2, hi=262144)
        if shares is not None:
            props.append(_prop("CPUWeight", "t", shares_to_weight(shares)))
    else:
        if limit is not None:
            props.append(_prop("MemoryLimit", "t", _u64(limit)))
        shares = cpu.int("shares", lo=2, hi=262144)
        if shares is not None:
            props.append(_prop("CPUShares", "t", shares))
        weight = r.sub("blockIO").int("weight", lo=0)
        if weight is not None:
            props.append(_prop("BlockIOWeight", "t", weight))
    _cpu_quota(props, cpu.int("quota", lo=-1), cpu.int("period", lo=0), version, update)
    plimit = pids.int("limit", lo=-1)
    if plimit is not None:
        props.append(_prop("TasksMax", "t", _u64(plimit)))
    for key, name in (("cpus", "AllowedCPUs"), ("mems", "AllowedMemoryNodes")):
        s = cpu.str(key)
        if s is not None:
            bits = range_to_bits(s, cpu.p(key))
            if version() >= 244:
                props.append(_prop(name, "ay", bits))
    if unified and isinstance(resources.get("unified"), dict):
        props += unified_properties(resources["unified"], version)
    return props


_UNIFIED_MEMORY = {"memory.high": "MemoryHigh", "memory.low": "MemoryLow",
                   "memory.min": "MemoryMin", "memory.max": "MemoryMax",
                   "memory.swap.max": "MemorySwapMax"}


def unified_properties(unified: dict, version) -> list:
    """The linux.resources.unified keys systemd has properties for; the rest only go to
    cgroupfs (runc's best effort). Malformed values are left for the cgroupfs code to report."""
    props: list = []
    for key, raw in unified.items():
        if not isinstance(raw, str):
            continue
        v = raw.strip()
        try:
            if key in _UNIFIED_MEMORY or key == "pids.max":
                num = USEC_INFINITY if v == "max" else int(v)
                if num < 0:
                    continue
                props.append(_prop(_UNIFIED_MEMORY.get(key, "TasksMax"), "t", num))
            elif key == "cpu.weight":
                props.append(_prop("CPUWeight", "t", int(v)))
            elif key == "cpu.max":
                f = v.split()
                if not 1 <= len(f) <= 2:
                    continue
                quota = 0 if f[0] == "max" else int(f[0])
                period = int(f[1]) if len(f) == 2 else _DEFAULT_PERIOD
                _cpu_quota(props, quota or None, period, version, False)
            elif key in ("cpuset.cpus", "cpuset.mems"):
                bits = range_to_bits(v, f"linux.resources.unified[{key!r}]")
                if version() >= 244:
                    props.append(_prop("AllowedCPUs" if key == "cpuset.cpus"
                                       else "AllowedMemoryNodes", "ay", bits))
        except (ValueError, RuntimeFailure):
            continue
    return props


def device_properties(rules) -> list:
    """DevicePolicy and DeviceAllow for the ordered device rules (devices.Rule), as runc turns
    them into systemd's allow-list. systemd has no deny entries: a deny-by-exception list
    becomes a temporary deny-all, and the cgroupfs code writes the real rules after it."""
    allow_all, denied_in_allow_all = False, False
    entries: dict[tuple, set] = {}   # (type, major, minor) -> access, -1 = wildcard
    for r in rules:
        types = ("c", "b") if r.type == "a" else (r.type,)
        if r.type == "a" and r.access == "rwm":
            allow_all, denied_in_allow_all = r.allow, False
            entries.clear()
            continue
        if allow_all:
            if not r.allow:
                denied_in_allow_all = True
            continue
        for t in types:
            key = (t, -1, -1) if r.type == "a" else (t, r.major, r.minor)
            if r.allow:
                entries.setdefault(key, set()).update(r.access)
                continue
            # A deny takes its access away from every entry that covers the device.
            for k in list(entries):
                if k[0] == t and (key[1] < 0 or k[1] in (key[1], -1)) and \
                        (key[2] < 0 or k[2] in (key[2], -1)):
                    entries[k] -= set(r.access)
                    if not entries[k]:
                        del entries[k]
    if allow_all and not denied_in_allow_all:
        return [_prop("DevicePolicy", "s", "auto"), _prop("DeviceAllow", "a(ss)", [])]
    allow = []
    if not allow_all:
        for (t, major, minor), access in entries.items():
            group = "char-" if t == "c" else "block-"
            if major < 0 and minor >= 0:
                continue  # "*:n" has no systemd spelling (runc skips it too)
            if major < 0:
                path = group + "*"
            elif minor < 0:
                path = f"{group}{major}"  # systemd >= 240
            else:
                path = f"/dev/{'char' if t == 'c' else 'block'}/{major}:{minor}"
            allow.append((path, "".join(c for c in "rwm" if c in access)))
    return [_prop("DevicePolicy", "s", "strict"), _prop("DeviceAllow", "a(ss)", allow)]


# ---------------------------------------------------------------- D-Bus

def _jeepney():
    try:
        import jeepney  # only --systemd-cgroup pays for it
    except ImportError:
        raise RuntimeFailure("systemd cgroup driver: the jeepney package is not installed "
                             f"for {sys.executable} (pip install jeepney)") from None
    return jeepney


class DBusError(RuntimeFailure):
    def __init__(self, name: str, text: str):
        super().__init__(f"{name}: {text}" if text else name)
        self.name = name


class Systemd:
    """A blocking client of systemd's Manager: the system bus if a bus daemon is there, else
    systemd's private socket (a direct connection: no bus, no Hello, no AddMatch)."""

    def __init__(self, timeout: float = JOB_TIMEOUT):
        self.j = _jeepney()
        self.timeout = timeout
        self._jobs: dict[str, str] = {}   # job path -> result, from JobRemoved
        self._version: int | None = None
        self.manager = self.j.DBusAddress(_PATH, bus_name=_DEST, interface=_MANAGER)
        tried = []
        for addr, via in self._addresses(tried):
            self._serial = 0
            self.parser = self.j.Parser()
            self.via = via
            try:
                self.sock = self._open(addr)
            except (OSError, ValueError) as e:
                tried.append(f"{addr.lstrip(chr(0))}: {getattr(e, 'strerror', None) or e}")
                continue
            try:
                self._setup()
                return
            except RuntimeFailure as e:
                # e.g. a bus that systemd has not joined yet (dbus.service just started)
                self.sock.close()
                tried.append(f"{addr.lstrip(chr(0))}: {e}")
        detail = f" ({'; '.join(tried)})" if tried else ""
        raise RuntimeFailure("systemd cgroup driver: cannot reach systemd (no "
                             f"{SYSTEM_BUS} or {PRIVATE_SOCKET}){detail}")

    # ------------------------------------------------------------ connection

    def _addresses(self, tried: list) -> list:
        env = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        bus_addrs = [SYSTEM_BUS]
        if env:
            try:
                from jeepney.bus import get_connectable_addresses
                bus_addrs = list(get_connectable_addresses(env))
            except (RuntimeError, ValueError):
                tried.append(f"DBUS_SYSTEM_BUS_ADDRESS={env!r}: not a unix address")
                bus_addrs = []
        return [(a, via) for a, via in [(a, "bus") for a in bus_addrs]
                + [(PRIVATE_SOCKET, "private")] if a.startswith("\0") or os.path.exists(a)]

    def _setup(self) -> None:
        if self.via == "bus":
            bus = self.j.DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                                     interface="org.freedesktop.DBus")
            self._call(bus, "Hello", "", ())
            rule = (f"type='signal',sender='{_DEST}',interface='{_MANAGER}',"
                    "member='JobRemoved'")
            self._call(bus, "AddMatch", "s", (rule,))
        else:
            self._settle()
        # systemd sends JobRemoved only to subscribed clients.
        self.call("Subscribe", "", ())

    def _open(self, addr: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(5.0)
            sock.connect(addr)
            sock.sendall(b"\0")
            auth = self.j.auth.Authenticator(inc_null_byte=False)
            for line in auth:
                sock.sendall(line)
                data = sock.recv(1024)
                if not data:
                    raise ConnectionResetError(104, "connection closed during authentication")
                auth.feed(data)
            sock.sendall(self.j.auth.BEGIN)
            sock.settimeout(None)
            return sock
        except BaseException:
            sock.close()
            raise

    def _settle(self) -> None:
        """Ping until systemd answers. On its private socket (sd-bus, v252 at least) a message
        read together with BEGIN stays unprocessed until more data arrives: each new ping
        pushes the one before through."""
        peer = self.j.DBusAddress(_PATH, bus_name=_DEST, interface="org.freedesktop.DBus.Peer")
        H = self.j.HeaderFields
        sent: set[int] = set()
        deadline = time.monotonic() + self.timeout
        while True:
            sent.add(self._send(self.j.new_method_call(peer, "Ping")))
            wait = min(time.monotonic() + 0.05, deadline)
            try:
                while True:
                    msg = self._next(wait)
                    if msg.header.message_type == self.j.MessageType.signal:
                        self._note_signal(msg)
                    elif msg.header.fields.get(H.reply_serial) in sent:
                        return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise RuntimeFailure("systemd cgroup driver: systemd does not answer on "
                                         f"{PRIVATE_SOCKET}") from None

    def close(self) -> None:
        self.sock.close()

    # ------------------------------------------------------------ messages

    def _send(self, msg) -> int:
        self._serial += 1
        self.sock.sendall(msg.serialise(serial=self._serial))
        return self._serial

    def _next(self, deadline: float):
        while True:
            msg = self.parser.get_next_message()
            if msg is not None:
                return msg
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeFailure("systemd cgroup driver: systemd closed the connection")
            self.parser.add_data(data)

    def _note_signal(self, msg) -> None:
        f = msg.header.fields
        H = self.j.HeaderFields
        if f.get(H.member) == "JobRemoved" and f.get(H.interface) == _MANAGER:
            _id, job, _unit, result = msg.body
            self._jobs[job] = result

    def _call(self, addr, method: str, sig: str, body: tuple, timeout: float | None = None):
        serial = self._send(self.j.new_method_call(addr, method, sig, body))
        deadline = time.monotonic() + (timeout or self.timeout)
        H, T = self.j.HeaderFields, self.j.MessageType
        while True:
            try:
                msg = self._next(deadline)
            except TimeoutError:
                raise RuntimeFailure(f"systemd cgroup driver: no answer to {method} in "
                                     f"{timeout or self.timeout:g}s") from None
            kind = msg.header.message_type
            if kind == T.signal:
                self._note_signal(msg)
            elif msg.header.fields.get(H.reply_serial) == serial:
                if kind == T.error:
                    text = msg.body[0] if msg.body and isinstance(msg.body[0], str) else ""
                    raise DBusError(msg.header.fields.get(H.error_name, "error"), text)
                return msg.body

    def call(self, method: str, sig: str = "", body: tuple = ()):
        return self._call(self.manager, method, sig, body)

    def wait_job(self, job: str, what: str) -> str:
        deadline = time.monotonic() + self.timeout
        while job not in self._jobs:
            try:
                msg = self._next(deadline)
            except TimeoutError:
                raise RuntimeFailure(f"systemd cgroup driver: timed out waiting for systemd to "
                                     f"{what}") from None
            if msg.header.message_type == self.j.MessageType.signal:
                self._note_signal(msg)
        return self._jobs.pop(job)

    # ------------------------------------------------------------ the Manager API

    def version(self) -> int:
        if self._version is None:
            try:
                v = self.get_property(_PATH, _MANAGER, "Version")
                digits = ""
                for ch in str(v).lstrip('"v'):
                    if not ch.isdigit():
                        break
                    digits += ch
                self._version = int(digits) if digits else 0
            except (RuntimeFailure, ValueError):
                self._version = 0
        return self._version

    def get_property(self, path: str, iface: str, name: str):
        addr = self.j.DBusAddress(path, bus_name=_DEST,
                                  interface="org.freedesktop.DBus.Properties")
        (sig, value), = self._call(addr, "Get", "ss", (iface, name))
        return value

    def unit_path(self, unit: str) -> str | None:
        try:
            return self.call("GetUnit", "s", (unit,))[0]
        except DBusError as e:
            if e.name.endswith(".NoSuchUnit"):
                return None
            raise

    def start_transient_unit(self, unit: str, props: list) -> str:
        """Start the unit; return its job, for wait_started()."""
        for retry in (True, False):
            try:
                job = self.call("StartTransientUnit", "ssa(sv)a(sa(sv))",
                                (unit, "replace", props, []))[0]
                break
            except DBusError as e:
                if not e.name.endswith(".UnitExists") or not retry:
                    raise RuntimeFailure(f"systemd cgroup driver: starting {unit}: {e}") from None
                # Perhaps a failed leftover: once reset, systemd drops it (runc retries once).
                self.reset_failed(unit)
        return job

    def wait_started(self, unit: str, job: str) -> None:
        result = self.wait_job(job, f"start {unit}")
        if result != "done":
            self.reset_failed(unit)
            raise RuntimeFailure(f"systemd cgroup driver: starting {unit}: the job ended "
                                 f"{result!r}")

    def stop_unit(self, unit: str) -> None:
        try:
            job = self.call("StopUnit", "ss", (unit, "replace"))[0]
        except DBusError as e:
            if not e.name.endswith(".NoSuchUnit"):
                raise RuntimeFailure(f"systemd cgroup driver: stopping {unit}: {e}") from None
        else:
            self.wait_job(job, f"stop {unit}")
        self.reset_failed(unit)  # a failed unit would otherwise stay loaded

    def reset_failed(self, unit: str) -> None:
        try:
            self.call("ResetFailedUnit", "s", (unit,))
        except DBusError:
            pass

    def set_unit_properties(self, unit: str, props: list) -> None:
        try:
            self.call("SetUnitProperties", "sba(sv)", (unit, True, props))
        except DBusError as e:
            raise RuntimeFailure(f"systemd cgroup driver: setting properties of {unit}: "
                                 f"{e}") from None


# ---------------------------------------------------------------- the manager

class SystemdManager(Manager):
    """A Manager whose cgroup is a systemd unit. extra["systemd"] = {"unit", "slice", "cgroup",
    "name", "started"} goes to the state, so every later command finds the unit.

    The unit starts at the apply() that follows the first add_pid() (create always makes that
    pair), so that systemd gets the resource properties, device policy included, in the same
    StartTransientUnit: a controller systemd realizes later (on v1, the devices one once
    DevicePolicy comes) makes it move the unit's processes around its slices."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._bus: Systemd | None = None
        self._pending: int | None = None

    @property
    def unit(self) -> str:
        return self.extra["systemd"]["unit"]

    def bus(self) -> Systemd:
        if self._bus is None:
            self._bus = Systemd()
        return self._bus

    def create(self) -> None:
        self.bus()  # nothing to make yet (a scope needs a pid); fail before forking

    def add_pid(self, pid: int) -> None:
        if self.extra["systemd"].get("started"):
            super().add_pid(pid)  # exec: systemd's dirs exist, join them
        elif self._pending is None:
            self._pending = pid
        else:
            raise RuntimeFailure(f"systemd cgroup driver: {self.unit} is not started yet")

    def apply(self, resources: dict | None, update: bool = False) -> None:
        unified = self.mode == "v2"
        props = resource_properties(resources, unified=unified, update=update,
                                    version=lambda: self.bus().version())
        if self._pending is not None:
            self._start(self._pending, props)
            self._pending = None
        elif props and self.extra["systemd"].get("started"):
            self.bus().set_unit_properties(self.unit, props)
        super().apply(resources, update)

    def _start(self, pid: int, resource_props: list) -> None:
        sd = self.extra["systemd"]
        bus = self.bus()
        props = base_properties(sd["slice"], self.unit, f"pyruntime container {sd['name']}",
                                None if self.unit.endswith(".slice") else pid,
                                self.mode == "v2")
        job = bus.start_transient_unit(self.unit, props + resource_props)
        # The unit is ours from here (and not before: a unit of that name that already
        # existed is someone else's); a failure leaves it to the caller's destroy().
        sd["started"] = True
        bus.wait_started(self.unit, job)
        self._check_placement(bus)
        self._join(pid)

    def _check_placement(self, bus: Systemd) -> None:
        path = bus.unit_path(self.unit)
        iface = "org.freedesktop.systemd1." + ("Slice" if self.unit.endswith(".slice")
                                                else "Scope")
        got = bus.get_property(path, iface, "ControlGroup") if path else None
        want = self.extra["systemd"]["cgroup"]
        if got != want:
            raise RuntimeFailure(f"systemd cgroup driver: systemd put {self.unit} in cgroup "
                                 f"{got!r}, expected {want!r}")

    def _join(self, pid: int) -> None:
        for key, d in self.dirs.items():
            if key.startswith("name="):
                continue  # systemd's own tracking hierarchy
            if not os.path.isdir(d):
                # A v1 hierarchy systemd does not manage: ours to make, and to remove.
                _makedirs(os.path.dirname(d), [])
                _makedirs(d, self.created)
                if key == "cpuset":
                    v1.init_cpuset(d)
            write(d, "cgroup.procs", pid, "cgroups")
        if "" in self.dirs and self.unified_mount and self.mode == "v2":
            v2.enable_controllers(self.unified_mount, self.dirs[""])  # as runc's fs2 does
        self._v2ctl = None

    def destroy(self) -> None:
        err = None
        if self.extra["systemd"].get("started"):
            try:
                self.bus().stop_unit(self.unit)
            except RuntimeFailure as e:
                err = e
        super().destroy()  # only the dirs we made ourselves
        if err is not None:
            raise err


def build(cgroups_path: str | None, container_id: str,
          layout: Layout | None = None) -> SystemdManager:
    slice_name, unit = parse_cgroups_path(cgroups_path, container_id)
    layout = layout or default_layout()
    rel = unit_cgroup(slice_name, unit)
    dirs = unit_dirs(layout, rel, _pid1_cgroups())
    name = cgroups_path.rsplit(":", 1)[-1] if cgroups_path else container_id
    extra = {"systemd": {"unit": unit, "slice": slice_name, "cgroup": rel, "name": name,
                         "started": False}}
    return SystemdManager(dirs, layout.mode, layout.unified[0] if layout.unified else None,
                          extra=extra)
