"""linux.intelRdt through the resctrl filesystem, by the rules of config-linux.md ("IntelRdt").

`create` puts the init in the CLOS group (closID, or one named after the container that it
creates and `delete` removes), writes the schemata, and with enableMonitoring makes the MON
group mon_groups/<id>; `exec` joins the same groups. Where no resctrl is mounted config.py
refuses the field, as the spec requires.
"""
from __future__ import annotations

import os

from pyruntime.errors import RuntimeFailure

F = "linux.intelRdt"
_RESERVED = {"info", "mon_groups", "mon_data", "tasks", "cpus", "cpus_list", "schemata", "mode",
             "size"}


def mountpoint() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if " - resctrl " in line:
                return line.split()[4]
    return None


def _lines(rdt: dict) -> list[str]:
    lines = []
    for key in ("l3CacheSchema", "memBwSchema"):
        if rdt.get(key):
            lines.append((f"{F}.{key}", rdt[key]))
    lines += [(f"{F}.schemata[{i}]", v) for i, v in enumerate(rdt.get("schemata") or [])]
    for path, value in lines:
        if not isinstance(value, str) or "\n" in value:
            raise RuntimeFailure(f"{path}: {value!r} must be one line of text")
    if rdt.get("memBwSchema") and not rdt["memBwSchema"].startswith("MB:"):
        raise RuntimeFailure(f"{F}.memBwSchema: {rdt['memBwSchema']!r} must start with \"MB:\"")
    return [v for _, v in lines]


def _norm(line: str) -> str:
    return "".join(line.split()).upper()


def _write(path: str, value: str, field: str, root: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        status = ""
        try:
            with open(os.path.join(root, "info", "last_cmd_status")) as f:
                status = f"; resctrl says: {f.read().strip()}"
        except OSError:
            pass
        raise RuntimeFailure(f"{field}: cannot write {path}: {os.strerror(e.errno)}{status}",
                             errno=e.errno) from None


def apply(rdt: dict, cid: str, pid: int, root: str | None = None) -> dict:
    """Put `pid` in the container's resctrl groups; return what `join` and `remove` need."""
    root = root or mountpoint()
    if root is None:
        raise RuntimeFailure(f"{F}: no resctrl filesystem is mounted on this host")
    lines = _lines(rdt)
    clos = rdt.get("closID")
    info = {"root": root, "dir": "", "mon": "", "remove": []}
    if clos == "/":
        d = root
    else:
        name = cid if clos is None else clos
        if not name or "/" in name or name in _RESERVED or name.startswith("."):
            raise RuntimeFailure(f"{F}.closID: {clos!r} is not a resctrl group name")
        d = os.path.join(root, name)
    info["dir"] = d
    exists = os.path.isdir(d)
    if clos is not None and exists and lines:
        with open(os.path.join(d, "schemata")) as f:
            have = {_norm(line) for line in f}
        for line in lines:
            if _norm(line) not in have:  # spec: compare with the existing group, MUST error
                raise RuntimeFailure(f"{F}.closID: the existing group {clos!r} has other "
                                     f"schemata than {line!r}")
    elif clos is not None and not exists and not lines:
        raise RuntimeFailure(f"{F}.closID: {clos!r}: no such pre-configured resctrl group")
    elif not exists:
        try:
            os.mkdir(d)
        except OSError as e:
            raise RuntimeFailure(f"{F}: cannot create the group {d}: {os.strerror(e.errno)}",
                                 errno=e.errno) from None
        if clos is None:  # only a group named after the container is ours to remove
            info["remove"].append(d)
    try:
        if lines and not (clos is not None and exists):
            _write(os.path.join(d, "schemata"), "\n".join(lines) + "\n", F, root)
        if rdt.get("enableMonitoring"):
            mon = os.path.join(d, "mon_groups", cid)
            try:
                os.mkdir(mon)
            except OSError as e:
                raise RuntimeFailure(f"{F}.enableMonitoring: cannot create the MON group {mon}: "
                                     f"{os.strerror(e.errno)}", errno=e.errno) from None
            info["mon"] = mon
            info["remove"].insert(0, mon)
        join(info, pid)
    except BaseException:
        remove(info)
        raise
    return info


def join(info: dict, pid: int) -> None:
    """Move `pid` into the CLOS group, then its MON group (resctrl takes a task into a MON
    group only from that group's parent)."""
    for d in (info.get("dir"), info.get("mon")):
        if d:
            _write(os.path.join(d, "tasks"), str(pid), F, info["root"])


def remove(info: dict) -> None:
    for d in info.get("remove", []):
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass
