"""The default config.json that `spec` writes (runc's, at runtime-spec 1.3.0)."""
from __future__ import annotations

import os

from pyruntime import SPEC_VERSION

_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_spec(rootless: bool = False, args: list[str] | None = None, terminal: bool = True) -> dict:
    spec = {
        "ociVersion": SPEC_VERSION,
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args or ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(_CAPS) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "pyruntime",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        # runc adds a cgroup namespace on a cgroup2-only host and nowhere else; tools that
        # add one themselves (runc's own tests do) must not get a duplicate
        spec["linux"]["namespaces"].append({"type": "cgroup"})
    if rootless:
        linux = spec["linux"]
        linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"]
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
        del linux["resources"]
        spec["mounts"] = [m for m in spec["mounts"] if m["type"] != "cgroup"]
        for m in spec["mounts"]:
            if m["destination"] == "/dev/pts":
                m["options"].remove("gid=5")
            if m["destination"] == "/sys":
                m.update(type="none", source="/sys", options=["rbind", "nosuid", "noexec", "nodev", "ro"])
    return spec


def busybox_bundle(path: str, args: list[str] | None = None, busybox: str | None = None) -> str:
    """Make a bundle at `path` (a new dir): a rootfs holding a static busybox and its applets,
    and the default config.json without a terminal, running `args`. Returns the bundle's path.
    `pyruntime demo`, the API's doctests and examples use it."""
    import shutil
    import subprocess
    from pyruntime.errors import RuntimeFailure
    from pyruntime.lean import jsonio
    busybox = busybox or shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise RuntimeFailure(f"{busybox} not found: apt-get install busybox-static")
    rootfs = os.path.join(path, "rootfs")
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
        os.makedirs(os.path.join(rootfs, d))
    shutil.copy2(busybox, os.path.join(rootfs, "bin", "busybox"))
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout
    for a in applets.split():
        if a != "busybox":
            os.symlink("busybox", os.path.join(rootfs, "bin", a))
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(path, "config.json"), "w") as f:
        jsonio.dump(default_spec(args=args, terminal=False), f)
    return path
