"""linux.netDevices: move host network interfaces into the container's network namespace
(config-linux.md, "Network Devices"), with pyroute2, imported only for a config that has them.

`create` moves each device once the init's namespace exists: its permanent global addresses
are read first (a move drops them), then a child that joined the namespace renames the device,
puts the addresses back and sets it up. Nothing moves it out again: the spec says the runtime
MUST NOT; when the namespace goes, the kernel returns physical devices to the host and destroys
virtual ones (a veth with its peer).
"""
from __future__ import annotations

import os

from pyruntime.errors import ConfigError, RuntimeFailure
from pyruntime.lean import jsonio

IFA_F_PERMANENT = 0x80
RT_SCOPE_UNIVERSE = 0
IFNAMSIZ = 16


def check(devices, linux) -> dict[str, str]:
    """{host name: name in the container} from linux.netDevices, or a ConfigError."""
    if not isinstance(devices, dict):
        raise ConfigError("linux.netDevices", devices, "must be an object")
    if devices and linux.namespace("network") is None:
        raise ConfigError("linux.netDevices", devices, "needs a network namespace in "
                          "linux.namespaces: the devices would stay on the host")
    out = {}
    for host, spec in devices.items():
        path = f"linux.netDevices[{host!r}]"
        if not _valid_name(host):
            raise ConfigError(path, host, "is not a network device name")
        if not isinstance(spec, dict):
            raise ConfigError(path, spec, "must be an object")
        name = spec.get("name") or host
        if not isinstance(name, str) or not _valid_name(name.replace("%d", "0")):
            raise ConfigError(f"{path}.name", name, "is not a network device name")
        out[host] = name
    return out


def _valid_name(name: str) -> bool:
    return isinstance(name, str) and 0 < len(name) < IFNAMSIZ and name not in (".", "..") \
        and not any(c in name for c in "/: \t\n")


def move(devices: dict[str, str], pid: int) -> None:
    """Move each device into the network namespace of process `pid`."""
    try:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError:
        raise RuntimeFailure("linux.netDevices: needs the pyroute2 package, which is not "
                             "installed") from None
    with IPRoute() as ip:
        for host, name in devices.items():
            where = f"linux.netDevices[{host!r}]"
            found = ip.link_lookup(ifname=host)
            if not found:
                raise RuntimeFailure(f"{where}: no network device {host!r} on the host")
            index = found[0]
            addrs = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                     for a in ip.get_addr(index=index)
                     if a["scope"] == RT_SCOPE_UNIVERSE and
                     (a.get_attr("IFA_FLAGS") or a["flags"]) & IFA_F_PERMANENT]
            try:
                ip.link("set", index=index, net_ns_pid=pid)
            except NetlinkError as e:
                raise RuntimeFailure(f"{where}: cannot move it into the container: "
                                     f"{os.strerror(e.code)}") from None
            _configure_inside(pid, where, host, name, addrs)


def _configure_inside(pid: int, where: str, host: str, name: str, addrs: list) -> None:
    """Rename, re-address and bring up the device from a child inside the namespace."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        msg = b""
        try:
            from pyroute2 import IPRoute
            from pyruntime.linux import syscalls as sc
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            sc.setns(fd, sc.CLONE_NEWNET)
            with IPRoute() as ip:
                index = ip.link_lookup(ifname=host)[0]
                if name != host:
                    if "%d" not in name and ip.link_lookup(ifname=name):
                        raise RuntimeFailure(f"{where}.name: {name!r} already exists in the "
                                             "container's network namespace", path=f"{where}.name")
                    ip.link("set", index=index, ifname=name)
                for address, prefixlen in addrs:
                    ip.addr("add", index=index, address=address, prefixlen=prefixlen)
                ip.link("set", index=index, state="up")
        except RuntimeFailure as e:
            msg = jsonio.dumps(e.record()).encode()
        except Exception as e:  # NetlinkError, OSError: report, never a traceback
            code = getattr(e, "code", None) or getattr(e, "errno", None)
            msg = jsonio.dumps(RuntimeFailure(
                f"{where}: cannot set it up in the container: {os.strerror(code) if code else e}",
                errno=code, path=where).record()).encode()
        os.write(w, msg)
        os._exit(1 if msg else 0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read()
    os.waitpid(child, 0)
    if msg:
        raise RuntimeFailure.from_record(jsonio.loads(msg))
