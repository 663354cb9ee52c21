"""How pyruntime treats every property of config.json and every mount option: the one table.

A row is (kind, note) or (kind, note, probe, otherwise): APPLIED (the note says where),
REFUSED (create fails with an error naming the field), or IGNORED (the note quotes the spec
sentence, or names the kernel fact, that makes ignoring it right). With a probe, the row holds
where the host check PROBES[probe] returns True, `otherwise` where it returns False, and the
kind it returns where it returns one.

tests/test_coverage.py walks spec/config.schema.json and fails on a property without a row;
`features` is computed from this table, and `validate` warns about every field present in a
config that this host would ignore. Not on the hot path: only features, validate and tests
import it.
"""
from __future__ import annotations

import os

APPLIED, REFUSED, IGNORED = "applied", "refused", "ignored"

_WINDOWS = "config.md: Windows-only (the spec gives it meaning on Windows alone)"
_LSM_OFF = ("ignored where SELinux is off, as runc and crun do (go-selinux and libselinux do "
            "nothing there)")
_RES = "cgroups/ (v1.py or v2.py, whichever hierarchy holds the controller)"

FIELDS: dict[str, tuple] = {
    "ociVersion": (APPLIED, "config.py: 1.x accepted, anything else refused"),
    "root": (APPLIED, "config.py"),
    "root.path": (APPLIED, "init.py: bind, then pivot_root"),
    "root.readonly": (APPLIED, "rootfs.readonly_root"),
    "mounts": (APPLIED, "rootfs.mount_all, in order"),
    "mounts[].destination": (APPLIED, "rootfs.mount_one, resolved inside the rootfs"),
    "mounts[].source": (APPLIED, "rootfs.mount_one"),
    "mounts[].type": (APPLIED, "rootfs.mount_one (bind, cgroup and any kernel filesystem)"),
    "mounts[].options": (APPLIED, "oci/mounts.py reads them, rootfs.py and mountattr.py apply "
                                    "them; see MOUNT_OPTIONS"),
    "mounts[].uidMappings": (
        APPLIED, "mountattr.open_idmapped: open_tree + mount_setattr(MOUNT_ATTR_IDMAP) in "
        "create, moved into place by the init", "mount_setattr", REFUSED),
    "mounts[].uidMappings[].containerID": (APPLIED, "mountattr.open_idmapped"),
    "mounts[].uidMappings[].hostID": (APPLIED, "mountattr.open_idmapped"),
    "mounts[].uidMappings[].size": (APPLIED, "mountattr.open_idmapped"),
    "mounts[].gidMappings": (
        APPLIED, "mountattr.open_idmapped", "mount_setattr", REFUSED),
    "mounts[].gidMappings[].containerID": (APPLIED, "mountattr.open_idmapped"),
    "mounts[].gidMappings[].hostID": (APPLIED, "mountattr.open_idmapped"),
    "mounts[].gidMappings[].size": (APPLIED, "mountattr.open_idmapped"),
    "process": (APPLIED, "init.py (absent: the init waits for start and exits)"),
    "process.terminal": (APPLIED, "bootstrap.setup_terminal, console.py"),
    "process.consoleSize": (APPLIED, "console.set_size"),
    "process.consoleSize.height": (APPLIED, "console.set_size"),
    "process.consoleSize.width": (APPLIED, "console.set_size"),
    "process.cwd": (APPLIED, "process.enter_cwd"),
    "process.env": (APPLIED, "process.build_env"),
    "process.args": (APPLIED, "process.finalize_and_exec (execve)"),
    "process.commandLine": (IGNORED, _WINDOWS),
    "process.user": (APPLIED, "process.switch_user"),
    "process.user.uid": (APPLIED, "process.switch_user"),
    "process.user.gid": (APPLIED, "process.switch_user"),
    "process.user.umask": (APPLIED, "process.switch_user"),
    "process.user.additionalGids": (APPLIED, "process.switch_user (setgroups)"),
    "process.user.username": (IGNORED, "config.md: a field of the Windows user structure"),
    "process.rlimits": (APPLIED, "process.set_rlimits"),
    "process.rlimits[].type": (APPLIED, "process.set_rlimits"),
    "process.rlimits[].soft": (APPLIED, "process.set_rlimits"),
    "process.rlimits[].hard": (APPLIED, "process.set_rlimits"),
    "process.capabilities": (APPLIED, "capabilities.py"),
    "process.capabilities.effective": (APPLIED, "capabilities.apply_sets"),
    "process.capabilities.bounding": (APPLIED, "capabilities.drop_bounding"),
    "process.capabilities.inheritable": (APPLIED, "capabilities.apply_sets"),
    "process.capabilities.permitted": (APPLIED, "capabilities.apply_sets"),
    "process.capabilities.ambient": (APPLIED, "capabilities.apply_sets"),
    "process.noNewPrivileges": (APPLIED, "process.finalize_and_exec (PR_SET_NO_NEW_PRIVS)"),
    "process.apparmorProfile": (APPLIED, "lsm.set_exec_labels", "apparmor", REFUSED),
    "process.selinuxLabel": (APPLIED, "lsm.set_exec_labels", "selinux", IGNORED),
    "process.oomScoreAdj": (APPLIED, "process.set_oom_score_adj"),
    "process.scheduler": (APPLIED, "process.set_scheduling"),
    "process.scheduler.policy": (APPLIED, "process.set_scheduling (SCHED_DEADLINE refused)"),
    "process.scheduler.nice": (APPLIED, "process.set_scheduling"),
    "process.scheduler.priority": (APPLIED, "process.set_scheduling"),
    "process.scheduler.flags": (REFUSED, "process.set_scheduling: sched_setattr flags"),
    "process.scheduler.runtime": (REFUSED, "process.set_scheduling: SCHED_DEADLINE only"),
    "process.scheduler.deadline": (REFUSED, "process.set_scheduling: SCHED_DEADLINE only"),
    "process.scheduler.period": (REFUSED, "process.set_scheduling: SCHED_DEADLINE only"),
    "process.ioPriority": (APPLIED, "process.set_scheduling (ioprio_set)"),
    "process.ioPriority.class": (APPLIED, "process.set_scheduling"),
    "process.ioPriority.priority": (APPLIED, "process.set_scheduling"),
    "process.execCPUAffinity": (
        APPLIED, "exec.py, for `exec` only: config.md says \"This setting is not applicable to "
        "the container's init process\""),
    "process.execCPUAffinity.initial": (
        APPLIED, "exec.exec_process: the exec'd child's, before it joins the cgroup"),
    "process.execCPUAffinity.final": (
        APPLIED, "exec._finish: after the cgroup, before execve"),
    "hostname": (APPLIED, "init.py (sethostname; needs a uts namespace)"),
    "domainname": (APPLIED, "init.py (setdomainname; needs a uts namespace)"),
    "hooks": (APPLIED, "hooks.py"),
    "annotations": (APPLIED, "state.json and every hook's state"),
    "linux": (APPLIED, "config.py"),
    "linux.namespaces": (APPLIED, "namespaces.py"),
    "linux.namespaces[].type": (APPLIED, "namespaces.py (unshare)"),
    "linux.namespaces[].path": (APPLIED, "namespaces.py (setns, type-checked)"),
    "linux.uidMappings": (APPLIED, "namespaces.write_id_maps"),
    "linux.gidMappings": (APPLIED, "namespaces.write_id_maps"),
    "linux.timeOffsets": (APPLIED, "namespaces.write_time_offsets"),
    "linux.timeOffsets.*.secs": (APPLIED, "namespaces.write_time_offsets"),
    "linux.timeOffsets.*.nanosecs": (APPLIED, "namespaces.write_time_offsets"),
    "linux.devices": (APPLIED, "rootfs.create_devices and the device cgroup"),
    "linux.devices[].type": (APPLIED, "rootfs.create_devices"),
    "linux.devices[].path": (APPLIED, "rootfs.create_devices"),
    "linux.devices[].major": (APPLIED, "rootfs.create_devices"),
    "linux.devices[].minor": (APPLIED, "rootfs.create_devices"),
    "linux.devices[].fileMode": (APPLIED, "rootfs.create_devices"),
    "linux.devices[].uid": (APPLIED, "rootfs.create_devices"),
    "linux.devices[].gid": (APPLIED, "rootfs.create_devices"),
    "linux.netDevices": (
        APPLIED, "netdev.py (pyroute2): moved into the container's network namespace by "
        "create, with its permanent global addresses, and set up", "pyroute2", REFUSED),
    "linux.netDevices.*.name": (APPLIED, "netdev.py: the device's name inside"),
    "linux.cgroupsPath": (APPLIED, "cgroups.manager"),
    "linux.resources": (APPLIED, _RES),
    "linux.resources.devices": (APPLIED, "cgroups/devices.py (v1 files or the v2 BPF filter)"),
    "linux.resources.memory": (APPLIED, _RES),
    "linux.resources.memory.limit": (APPLIED, _RES),
    "linux.resources.memory.reservation": (APPLIED, _RES),
    "linux.resources.memory.swap": (APPLIED, _RES),
    "linux.resources.memory.kernel": (
        IGNORED, "config-linux.md marks it NOT RECOMMENDED; kernel 5.4 deprecated the kmem "
        "limit and later kernels dropped it (runc >= 1.1 ignores it too)"),
    "linux.resources.memory.kernelTCP": (
        APPLIED, "cgroups/v1.py (memory.kmem.tcp.limit_in_bytes)", "kmem_tcp", IGNORED),
    "linux.resources.memory.swappiness": (
        APPLIED, "cgroups/v1.py (memory.swappiness); cgroup v2 has no such knob (runc ignores "
        "it there)", "memory_v1", REFUSED),
    "linux.resources.memory.disableOOMKiller": (
        APPLIED, "cgroups/v1.py (memory.oom_control); cgroup v2 has no such knob (runc "
        "ignores it there)", "memory_v1", REFUSED),
    "linux.resources.memory.useHierarchy": (
        IGNORED, "the kernel has forced hierarchical accounting on since 5.16 (a v1 "
        "memory.use_hierarchy write of 0 fails) and cgroup v2 is always hierarchical"),
    "linux.resources.memory.checkBeforeUpdate": (APPLIED, _RES),
    "linux.resources.cpu": (APPLIED, _RES),
    "linux.resources.cpu.shares": (APPLIED, _RES),
    "linux.resources.cpu.quota": (APPLIED, _RES),
    "linux.resources.cpu.burst": (APPLIED, _RES),
    "linux.resources.cpu.period": (APPLIED, _RES),
    "linux.resources.cpu.realtimeRuntime": (APPLIED, "cgroups/v1.py (refused on cgroup v2)"),
    "linux.resources.cpu.realtimePeriod": (APPLIED, "cgroups/v1.py (refused on cgroup v2)"),
    "linux.resources.cpu.cpus": (APPLIED, "cgroups/v1.set_cpuset"),
    "linux.resources.cpu.mems": (APPLIED, "cgroups/v1.set_cpuset"),
    "linux.resources.cpu.idle": (APPLIED, _RES),
    "linux.resources.pids": (APPLIED, _RES),
    "linux.resources.pids.limit": (APPLIED, _RES),
    "linux.resources.blockIO": (APPLIED, _RES),
    "linux.resources.blockIO.weight": (APPLIED, _RES),
    "linux.resources.blockIO.leafWeight": (APPLIED, "cgroups/v1.py (refused on cgroup v2)"),
    "linux.resources.blockIO.weightDevice": (APPLIED, _RES),
    "linux.resources.blockIO.weightDevice[].major": (APPLIED, _RES),
    "linux.resources.blockIO.weightDevice[].minor": (APPLIED, _RES),
    "linux.resources.blockIO.weightDevice[].weight": (APPLIED, _RES),
    "linux.resources.blockIO.weightDevice[].leafWeight": (
        APPLIED, "cgroups/v1.py (refused on cgroup v2)"),
    "linux.resources.blockIO.throttleReadBpsDevice": (APPLIED, _RES),
    "linux.resources.blockIO.throttleReadBpsDevice[].major": (APPLIED, _RES),
    "linux.resources.blockIO.throttleReadBpsDevice[].minor": (APPLIED, _RES),
    "linux.resources.blockIO.throttleReadBpsDevice[].rate": (APPLIED, _RES),
    "linux.resources.blockIO.throttleWriteBpsDevice": (APPLIED, _RES),
    "linux.resources.blockIO.throttleWriteBpsDevice[].major": (APPLIED, _RES),
    "linux.resources.blockIO.throttleWriteBpsDevice[].minor": (APPLIED, _RES),
    "linux.resources.blockIO.throttleWriteBpsDevice[].rate": (APPLIED, _RES),
    "linux.resources.blockIO.throttleReadIOPSDevice": (APPLIED, _RES),
    "linux.resources.blockIO.throttleReadIOPSDevice[].major": (APPLIED, _RES),
    "linux.resources.blockIO.throttleReadIOPSDevice[].minor": (APPLIED, _RES),
    "linux.resources.blockIO.throttleReadIOPSDevice[].rate": (APPLIED, _RES),
    "linux.resources.blockIO.throttleWriteIOPSDevice": (APPLIED, _RES),
    "linux.resources.blockIO.throttleWriteIOPSDevice[].major": (APPLIED, _RES),
    "linux.resources.blockIO.throttleWriteIOPSDevice[].minor": (APPLIED, _RES),
    "linux.resources.blockIO.throttleWriteIOPSDevice[].rate": (APPLIED, _RES),
    "linux.resources.hugepageLimits": (APPLIED, "cgroups/v1.set_hugetlb (v1 or v2 files)"),
    "linux.resources.hugepageLimits[].pageSize": (APPLIED, "cgroups/v1.set_hugetlb"),
    "linux.resources.hugepageLimits[].limit": (APPLIED, "cgroups/v1.set_hugetlb"),
    "linux.resources.network": (
        APPLIED, "cgroups/v1.py (net_cls, net_prio)", "net_cls_v1", REFUSED),
    "linux.resources.network.classID": (
        APPLIED, "cgroups/v1.set_net_cls; cgroup v2 has no net_cls (runc ignores it there)",
        "net_cls_v1", REFUSED),
    "linux.resources.network.priorities": (
        APPLIED, "cgroups/v1.set_net_prio; cgroup v2 has no net_prio (runc ignores it there)",
        "net_cls_v1", REFUSED),
    "linux.resources.network.priorities[].name": (
        APPLIED, "cgroups/v1.set_net_prio", "net_cls_v1", REFUSED),
    "linux.resources.network.priorities[].priority": (
        APPLIED, "cgroups/v1.set_net_prio", "net_cls_v1", REFUSED),
    "linux.resources.rdma": (APPLIED, "cgroups/v1.set_rdma"),
    "linux.resources.rdma.*.hcaHandles": (APPLIED, "cgroups/v1.set_rdma"),
    "linux.resources.rdma.*.hcaObjects": (APPLIED, "cgroups/v1.set_rdma"),
    "linux.resources.unified": (APPLIED, "cgroups/v2.set_unified (refused without cgroup2)"),
    "linux.intelRdt": (
        APPLIED, "intelrdt.py: the init and exec'd processes join the resctrl groups; an error "
        "where no resctrl is mounted (config-linux.md: the runtime MUST)", "resctrl", REFUSED),
    "linux.intelRdt.closID": (APPLIED, "intelrdt.apply", "resctrl", REFUSED),
    "linux.intelRdt.schemata": (APPLIED, "intelrdt.apply", "resctrl", REFUSED),
    "linux.intelRdt.l3CacheSchema": (APPLIED, "intelrdt.apply", "resctrl", REFUSED),
    "linux.intelRdt.memBwSchema": (APPLIED, "intelrdt.apply", "resctrl", REFUSED),
    "linux.intelRdt.enableMonitoring": (APPLIED, "intelrdt.apply", "resctrl", REFUSED),
    "linux.intelRdt.enableCMT": (
        IGNORED, "config-linux.md: replaced by enableMonitoring in v1.3.0, \"there were no "
        "known implementations\""),
    "linux.intelRdt.enableMBM": (
        IGNORED, "config-linux.md: replaced by enableMonitoring in v1.3.0, \"there were no "
        "known implementations\""),
    "linux.memoryPolicy": (APPLIED, "mempolicy.py: set_mempolicy(2) in the init and for exec",
                           "numa", REFUSED),
    "linux.memoryPolicy.mode": (APPLIED, "mempolicy.py"),
    "linux.memoryPolicy.nodes": (APPLIED, "mempolicy.py"),
    "linux.memoryPolicy.flags": (APPLIED, "mempolicy.py"),
    "linux.sysctl": (APPLIED, "init.write_sysctl (only namespaced ones)"),
    "linux.seccomp": (APPLIED, "seccomp/ (libseccomp, loaded last)"),
    "linux.seccomp.defaultAction": (APPLIED, "seccomp/compile.py"),
    "linux.seccomp.defaultErrnoRet": (APPLIED, "seccomp/compile.py"),
    "linux.seccomp.architectures": (APPLIED, "seccomp/compile.py"),
    "linux.seccomp.flags": (APPLIED, "seccomp/compile.py"),
    "linux.seccomp.listenerPath": (APPLIED, "seccomp/notify.connect_listener"),
    "linux.seccomp.listenerMetadata": (APPLIED, "seccomp/notify.send_state"),
    "linux.seccomp.syscalls": (APPLIED, "seccomp/compile.py"),
    "linux.seccomp.syscalls[].names": (APPLIED, "seccomp/compile.py"),
    "linux.seccomp.syscalls[].action": (APPLIED, "seccomp/compile.py"),
    "linux.seccomp.syscalls[].errnoRet": (APPLIED, "seccomp/compile.py"),
    "linux.seccomp.syscalls[].args": (APPLIED, "seccomp/compile.py"),
    "linux.seccomp.syscalls[].args[].index": (APPLIED, "seccomp/compile.py"),
    "linux.seccomp.syscalls[].args[].value": (APPLIED, "seccomp/compile.py"),
    "linux.seccomp.syscalls[].args[].valueTwo": (APPLIED, "seccomp/compile.py"),
    "linux.seccomp.syscalls[].args[].op": (APPLIED, "seccomp/compile.py"),
    "linux.rootfsPropagation": (APPLIED, "rootfs.set_rootfs_propagation"),
    "linux.maskedPaths": (APPLIED, "rootfs.mask_paths"),
    "linux.readonlyPaths": (APPLIED, "rootfs.readonly_paths"),
    "linux.mountLabel": (APPLIED, "lsm.mount_context", "selinux", IGNORED),
    "linux.personality": (APPLIED, "process.set_personality"),
    "linux.personality.domain": (APPLIED, "process.set_personality"),
    "linux.personality.flags": (
        REFUSED, "process.set_personality: config-linux.md says \"Currently no flag values are "
        "supported\""),
    # Other platforms' sections: not in our Linux schema, listed so a config carrying them
    # is answered too.
    "solaris": (IGNORED, "config.md: platform-specific configuration for Solaris"),
    "windows": (IGNORED, "config.md: platform-specific configuration for Windows"),
    "vm": (IGNORED, "config.md: for virtual-machine-based containers"),
    "zos": (IGNORED, "config.md: platform-specific configuration for z/OS"),
}
# The hook entries are alike for every kind.
for _kind in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop"):
    FIELDS[f"hooks.{_kind}"] = (APPLIED, "hooks.py (the parent or the init runs them)")
    for _k in ("path", "args", "env", "timeout"):
        FIELDS[f"hooks.{_kind}[].{_k}"] = (APPLIED, "hooks._run_one")
for _k in ("uidMappings", "gidMappings"):
    for _f in ("containerID", "hostID", "size"):
        FIELDS[f"linux.{_k}[].{_f}"] = (APPLIED, "namespaces.write_id_maps")
for _k in ("allow", "type", "major", "minor", "access"):
    FIELDS[f"linux.resources.devices[].{_k}"] = (APPLIED, "cgroups/devices.py")

_FLAG = "rootfs.py: a mount(2) flag"
_PROP = "rootfs.py: mount propagation, set after the mount"
_REC = "mountattr.py: mount_setattr(2) with AT_RECURSIVE"
MOUNT_OPTIONS: dict[str, tuple] = {
    **{o: (APPLIED, _FLAG) for o in (
        "defaults", "ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "sync",
        "async", "dirsync", "remount", "nomand", "atime", "noatime", "diratime",
        "nodiratime", "bind", "rbind", "relatime", "norelatime", "strictatime",
        "nostrictatime", "lazytime", "nolazytime", "nosymfollow", "symfollow", "silent",
        "loud", "iversion", "noiversion")},
    "mand": (IGNORED, "config.md: MAY, \"Deprecated in kernel 5.15\": the kernel takes the "
             "flag and ignores it since mandatory locking was removed"),
    **{o: (APPLIED, _PROP) for o in (
        "private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable",
        "runbindable")},
    **{o: (APPLIED, _REC, "mount_setattr", REFUSED) for o in (
        "rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev", "rnoexec", "rexec", "rnosymfollow",
        "rsymfollow", "rnoatime", "ratime", "rrelatime", "rnorelatime", "rstrictatime",
        "rnostrictatime", "rnodiratime", "rdiratime")},
    "tmpcopyup": (APPLIED, "mountattr.copy_up (tmpfs only; refused elsewhere)"),
    "idmap": (APPLIED, "mountattr.open_idmapped (the top mount)", "mount_setattr", REFUSED),
    "ridmap": (APPLIED, "mountattr.open_idmapped (with every submount)", "mount_setattr",
               REFUSED),
    "x-*": (IGNORED, "mount(8): x-* options are for userspace applications, never the kernel"),
}


# ---------------------------------------------------------------- this host

def _exists(path: str) -> bool:
    return os.path.exists(path)


def _lsm():
    from pyruntime.linux import lsm
    return lsm


def _mount_setattr() -> bool:
    from pyruntime.setup import mountattr
    return mountattr.supported()


PROBES = {
    "apparmor": lambda: _lsm().apparmor_enabled(),
    "selinux": lambda: _lsm().selinux_enabled(),
    "memory_v1": lambda: _v1_or_ignored("memory/memory.limit_in_bytes"),
    "kmem_tcp": lambda: _exists("/sys/fs/cgroup/memory/memory.kmem.tcp.limit_in_bytes"),
    "net_cls_v1": lambda: _v1_or_ignored("net_cls/net_cls.classid"),
    "mount_setattr": _mount_setattr,
    "resctrl": lambda: _resctrl(),
    "numa": lambda: _exists("/sys/devices/system/node/online"),
    "pyroute2": lambda: _importable("pyroute2"),
}


def _importable(name: str) -> bool:
    from importlib.util import find_spec
    return find_spec(name) is not None


def _resctrl() -> bool:
    from pyruntime.oci.config import resctrl_mounted
    return resctrl_mounted()
_probed: dict[str, bool | str] = {}


def _v1_or_ignored(file: str) -> bool | str:
    """A v1-only knob: applied where its v1 hierarchy is mounted, ignored on a pure cgroup v2
    host (no v1 equivalent: runc ignores it there), refused otherwise (the controller is
    missing: cgroups/cgroupfs.py says so)."""
    if _exists(f"/sys/fs/cgroup/{file}"):
        return True
    return IGNORED if _exists("/sys/fs/cgroup/cgroup.controllers") else False


def effective(row: tuple) -> tuple[str, str]:
    """(kind, note) of a row on this host."""
    if len(row) == 2:
        return row
    kind, note, probe, otherwise = row
    if probe not in _probed:
        _probed[probe] = PROBES[probe]()
    found = _probed[probe]
    if found is True:
        return kind, note
    return (found or otherwise), f"{note} (not on this host: {probe})"


def mount_option_row(opt: str) -> tuple | None:
    return MOUNT_OPTIONS.get("x-*" if opt.startswith("x-") else opt)


def applied_mount_options() -> list[str]:
    return sorted(o for o, row in MOUNT_OPTIONS.items()
                  if o != "x-*" and effective(row)[0] == APPLIED)


def field_applied(path: str) -> bool:
    return effective(FIELDS[path])[0] == APPLIED


# ---------------------------------------------------------------- a config, field by field

def present_fields(config, path: str = "", key: str = ""):
    """Yield (JSON path as shown to users, table key) for every property in `config`."""
    if isinstance(config, dict):
        for k, v in config.items():
            if key in ("annotations", "linux.sysctl", "linux.resources.unified"):
                continue  # free-form maps: their keys are data
            here = f"{path}.{k}" if path else k
            if key in ("linux.timeOffsets", "linux.netDevices", "linux.resources.rdma"):
                here, k_key = f"{path}[{_quote(k)}]", f"{key}.*"
            else:
                k_key = f"{key}.{k}" if key else k
            yield here, k_key
            yield from present_fields(v, here, k_key)
    elif isinstance(config, list):
        for i, v in enumerate(config):
            yield from present_fields(v, f"{path}[{i}]", f"{key}[]")


def _quote(k: str) -> str:
    import json
    return json.dumps(k)


_UNKNOWN = (IGNORED, "not a runtime-spec property (config.md: runtimes MAY log unknown "
            "properties but MUST otherwise ignore them)")


def host_notes(config) -> list[tuple[str, str, str]]:
    """(JSON path, kind, note) for every field of `config` this host would not apply: fields
    and mount options it ignores or refuses."""
    out = []
    if not isinstance(config, dict):
        return out
    for here, key in present_fields(config):
        if key.endswith(".*"):
            continue  # an entry of a map (netDevices, rdma, timeOffsets): its fields have rows
        if out and here.startswith((out[-1][0] + ".", out[-1][0] + "[")):
            continue  # inside a field already reported
        kind, note = effective(FIELDS.get(key, _UNKNOWN))
        if kind != APPLIED:
            out.append((here, kind, note))
    for i, m in enumerate(config.get("mounts") or []):
        opts = m.get("options") if isinstance(m, dict) else None
        opts = opts if isinstance(opts, list) else []
        bind = m.get("type") == "bind" or "bind" in opts or "rbind" in opts
        for j, opt in enumerate(opts):
            row = mount_option_row(opt) if isinstance(opt, str) else None
            if bind and opt in SUPERBLOCK_OPTIONS:
                row = _ON_A_BIND
            if row is not None:
                kind, note = effective(row)
                if kind != APPLIED:
                    out.append((f"mounts[{i}].options[{j}]", kind, note))
    return out


# Flags of the filesystem itself, not of one mount: a bind shares its source's superblock, and
# the kernel ignores these in the bind remount that applies the others.
SUPERBLOCK_OPTIONS = {"sync", "async", "dirsync", "lazytime", "nolazytime", "iversion",
                      "noiversion", "mand", "nomand", "silent", "loud"}
_ON_A_BIND = (IGNORED, "a bind mount shares its source's superblock: the kernel ignores "
              "filesystem flags in the bind remount (mount(8): bind mounts take per-mount "
              "flags only)")
