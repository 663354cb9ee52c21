"""show the enabled features"""
# The runtime-spec v1.3.0 `features` document (features.md, features-linux.md): what this build
# and this host really support. dockerd calls it at start-up (e.g. to look for "rro"), so keep it
# cheap: no jsonschema, libseccomp only through ctypes.
from __future__ import annotations

import json
import os
import sys

from pyruntime import SPEC_VERSION, __version__
from pyruntime.oci.config import HOOK_KINDS

def configure(p):
    pass


def mount_options() -> list[str]:
    """The options coverage.py says this host applies: never one it would ignore (dockerd
    reads this list, e.g. for rro)."""
    from pyruntime.oci.coverage import applied_mount_options
    return applied_mount_options()


def namespaces() -> list[str]:
    from pyruntime.linux.namespaces import FLAGS, PROC_NAME
    return sorted(t for t in FLAGS if os.path.exists(f"/proc/self/ns/{PROC_NAME[t]}"))


def capabilities() -> list[str]:
    from pyruntime.linux import capabilities as caps
    return caps.NAMES[: caps.last_cap() + 1]


def seccomp_features() -> dict:
    from pyruntime.seccomp import compile as seccomp, kernel, profile
    try:
        seccomp._lib()
        lib_ok = True
    except Exception:  # no libseccomp2: we cannot compile a filter
        lib_ok = False
    kernel_ok = os.path.exists("/proc/sys/kernel/seccomp/actions_avail")
    out = {"enabled": lib_ok and kernel_ok}
    if not out["enabled"]:
        return out
    out["actions"] = sorted(profile.ACTIONS)
    out["operators"] = sorted(profile.OPERATORS)
    archs = []
    for name in sorted(profile.ARCHES):
        try:
            seccomp._arch_token(name)
        except Exception:  # this libseccomp does not know it (loongarch64 before 2.6)
            continue
        archs.append(name)
    out["archs"] = archs
    out["knownFlags"] = sorted(kernel.FLAGS)
    supported = []
    for name, bit in sorted(kernel.FLAGS.items()):
        probe = bit | (kernel.FLAG_NEW_LISTENER if bit == kernel.FLAG_WAIT_KILLABLE_RECV else 0)
        if kernel.kernel_supports_flags(probe):
            supported.append(name)
    out["supportedFlags"] = supported
    return out


def checkpoint_enabled() -> bool:
    """CRIU on PATH passes `criu check`, and protobuf (checkpoint's dependency) imports."""
    from pyruntime.criu import criu_works
    return criu_works()


def memory_policy() -> dict:
    from pyruntime.oci.coverage import field_applied
    if not field_applied("linux.memoryPolicy"):
        return {"modes": [], "flags": []}
    from pyruntime.linux.mempolicy import FLAGS, MODES
    return {"modes": sorted(MODES), "flags": sorted(FLAGS)}


def features() -> dict:
    from pyruntime.seccomp import compile as seccomp
    from pyruntime.oci.coverage import field_applied
    annotations = {
        "io.github.pyruntime.version": __version__,
        "io.github.pyruntime.python": sys.version.split()[0],
        "org.opencontainers.runc.checkpoint.enabled": str(checkpoint_enabled()).lower(),
    }
    sec = seccomp_features()
    if sec["enabled"]:
        annotations["io.github.seccomp.libseccomp.version"] = seccomp.libseccomp_version()
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": list(HOOK_KINDS),
        "mountOptions": mount_options(),
        "linux": {
            "namespaces": namespaces(),
            "capabilities": capabilities(),
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": False,
                       "rdma": True},
            "seccomp": sec,
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": True, "schemata": True, "monitoring": True}
            if field_applied("linux.intelRdt") else {"enabled": False},
            "memoryPolicy": memory_policy(),
            "mountExtensions": {"idmap": {"enabled": field_applied("mounts[].uidMappings")}},
            "netDevices": {"enabled": field_applied("linux.netDevices")},
        },
        "annotations": annotations,
    }


def main(opts, ctx):
    sys.stdout.write(json.dumps(features(), indent=4) + "\n")
    return 0
