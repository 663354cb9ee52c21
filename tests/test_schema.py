"""Unit tests for spec/*.schema.json and pyruntime.oci.validate: no containers are started."""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyruntime.oci import validate as v
from pyruntime.cli.commands import validate as validate_cmd

SPEC_DIR = Path(__file__).resolve().parent.parent / "spec"

# A config shaped like the one Docker 20.10 writes (see CONTRACT.md), plus the v1.2/v1.3
# fields, so that every part of the schema sees a valid value.
FULL_CONFIG = {
    "ociVersion": "1.3.0",
    "process": {
        "terminal": True,
        "consoleSize": {"height": 25, "width": 80},
        "user": {"uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [4, 27]},
        "args": ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=web", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {
            caps: ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                   "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                   "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
            for caps in ("bounding", "effective", "permitted")
        } | {"inheritable": [], "ambient": []},
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1048576, "hard": 1048576},
                    {"type": "RLIMIT_CORE", "soft": 18446744073709551615, "hard": 18446744073709551615}],
        "apparmorProfile": "docker-default",
        "selinuxLabel": "system_u:system_r:container_t:s0:c1,c2",
        "noNewPrivileges": True,
        "oomScoreAdj": -500,
        "scheduler": {"policy": "SCHED_DEADLINE", "nice": 0, "priority": 0, "flags": ["SCHED_FLAG_RESET_ON_FORK"],
                      "runtime": 10000000, "deadline": 30000000, "period": 30000000},
        "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4},
        "execCPUAffinity": {"initial": "0", "final": "0-3,7"},
    },
    "root": {"path": "/var/lib/docker/overlay2/1f0e3c/merged", "readonly": False},
    "hostname": "web",
    "domainname": "example.com",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]},
        {"destination": "/etc/resolv.conf", "type": "bind",
         "source": "/var/lib/docker/containers/1f0e3c/resolv.conf", "options": ["rbind", "rprivate"]},
        {"destination": "/data", "source": "/srv/data", "options": ["rbind", "rw", "idmap"],
         "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
         "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]},
    ],
    "hooks": {
        "prestart": [{"path": "/proc/1234/exe", "args": ["libnetwork-setkey", "-exec-root=/var/run/docker", "1f0e3c",
                                                          "c3a1"]}],
        "createRuntime": [{"path": "/usr/bin/nvidia-ctk", "args": ["nvidia-ctk", "hook"], "env": ["A=b"],
                           "timeout": 10}],
        "createContainer": [{"path": "/bin/true"}],
        "startContainer": [{"path": "/bin/true"}],
        "poststart": [{"path": "/usr/bin/notify", "timeout": 5}],
        "poststop": [{"path": "/usr/sbin/cleanup.sh", "args": ["cleanup.sh", "-f"]}],
    },
    "annotations": {"com.example.gpu-cores": "2", "org.opencontainers.image.ref.name": ""},
    "linux": {
        "namespaces": [{"type": "mount"}, {"type": "network", "path": "/var/run/netns/blue"}, {"type": "uts"},
                       {"type": "pid"}, {"type": "ipc"}, {"type": "cgroup"}, {"type": "user"}, {"type": "time"}],
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "timeOffsets": {"monotonic": {"secs": -3600, "nanosecs": 0}, "boottime": {"secs": 86400}},
        "devices": [
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0},
            {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0, "fileMode": 432},
            {"path": "/run/fifo", "type": "p"},
        ],
        "netDevices": {"eth1": {"name": "net0"}, "dummy0": {}},
        "cgroupsPath": "/docker/1f0e3c",
        "resources": {
            "devices": [{"allow": False, "access": "rwm"},
                        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                        {"allow": True, "type": "c", "major": 136, "access": "rwm"},
                        {"allow": True, "type": "b", "major": 8, "minor": 0, "access": "r"}],
            "memory": {"limit": 536870912, "reservation": 268435456, "swap": -1, "kernel": -1, "kernelTCP": -1,
                       "swappiness": 60, "disableOOMKiller": False, "useHierarchy": True, "checkBeforeUpdate": True},
            "cpu": {"shares": 1024, "quota": 100000, "burst": 10000, "period": 100000, "realtimeRuntime": 950000,
                    "realtimePeriod": 1000000, "cpus": "0-3", "mems": "0", "idle": 0},
            "pids": {"limit": -1},
            "blockIO": {
                "weight": 500, "leafWeight": 300,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 500, "leafWeight": 300},
                                 {"major": 8, "minor": 16, "weight": 500}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 104857600}],
                "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 104857600}],
                "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 300}],
            },
            "hugepageLimits": [{"pageSize": "2MB", "limit": 209715200}, {"pageSize": "1GB", "limit": 0}],
            "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 500}]},
            "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}, "mlx4_0": {"hcaObjects": 1000}},
            "unified": {"io.max": "259:0 rbps=2097152 wiops=120", "memory.high": "max"},
        },
        "intelRdt": {"closID": "guaranteed_group", "schemata": ["L3:0=7f0;1=1f", "MB:0=20;1=70"],
                     "l3CacheSchema": "L3:0=7f0;1=1f", "memBwSchema": "MB:0=20;1=70", "enableMonitoring": True},
        "memoryPolicy": {"mode": "MPOL_INTERLEAVE", "nodes": "0-3", "flags": ["MPOL_F_STATIC_NODES"]},
        "sysctl": {"net.ipv4.ip_forward": "1", "net.core.somaxconn": "256"},
        "seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
            "listenerPath": "/run/seccomp-agent.sock",
            "listenerMetadata": "MKNOD=/dev/null",
            "syscalls": [
                {"names": ["accept", "accept4", "access", "read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 4294967295, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
                 "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"},
                          {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"}]},
                {"names": ["mknod", "mknodat"], "action": "SCMP_ACT_NOTIFY"},
                {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["kexec_load"], "action": "SCMP_ACT_KILL_THREAD"},
                {"names": ["reboot"], "action": "SCMP_ACT_KILL"},
                {"names": ["syslog"], "action": "SCMP_ACT_TRAP"},
                {"names": ["uselib"], "action": "SCMP_ACT_TRACE", "errnoRet": 1},
                {"names": ["acct"], "action": "SCMP_ACT_LOG"},
                {"names": ["bpf"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 1, "value": 1, "op": op} for op in
                          ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GE", "SCMP_CMP_GT")]},
            ],
        },
        "rootfsPropagation": "rslave",
        "maskedPaths": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        "mountLabel": "system_u:object_r:container_file_t:s0:c1,c2",
        "personality": {"domain": "LINUX32", "flags": []},
    },
}


def full_config() -> dict:
    return copy.deepcopy(FULL_CONFIG)


# ---------------------------------------------------------------- the schemas themselves

@pytest.mark.parametrize("name", v.SCHEMA_FILES)
def test_schema_files_are_valid_draft_2020_12(name):
    from jsonschema import Draft202012Validator
    schema = json.loads((SPEC_DIR / name).read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_schema_dir_is_found():
    # spec/ itself, or pyruntime/schemas/ if that is a symlink to it (for wheels)
    assert v.schema_dir().resolve() == SPEC_DIR


def test_importing_validate_does_not_import_jsonschema():
    code = ("import sys, pyruntime.oci.validate, pyruntime.cli.commands.validate; "
            "sys.exit(1 if 'jsonschema' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------- valid configs

def test_full_config_is_valid():
    assert v.validate_config(full_config()) == []


def test_minimal_config_is_valid():
    assert v.validate_config({"ociVersion": "1.0.0", "root": {"path": "rootfs"}}) == []


def test_unknown_properties_and_annotations_are_allowed():
    cfg = full_config()
    cfg["com.example.extension"] = {"anything": [1, 2]}
    cfg["process"]["futureField"] = True
    cfg["linux"]["resources"]["memory"]["newKnob"] = "x"
    cfg["linux"]["seccomp"]["syscalls"][0]["comment"] = "allowed"
    cfg["annotations"]["io.unknown.key"] = "value"
    cfg["windows"] = {"layerFolders": ["C:\\layers"]}
    assert v.validate_config(cfg) == []


def test_conftest_default_config_is_valid():
    conftest = pytest.importorskip("conftest")
    assert v.validate_config(conftest.default_config(["true"])) == []


@pytest.mark.parametrize("tool,args", [
    ("runc", ["spec"]), ("runc", ["spec", "--rootless"]),
    ("crun", ["spec"]), ("crun", ["spec", "--rootless"]),
])
def test_generated_specs_are_valid(tmp_path, tool, args):
    exe = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if exe is None:
        pytest.skip(f"{tool} is not installed")
    subprocess.run([exe, *args], cwd=tmp_path, check=True, capture_output=True)
    config = json.loads((tmp_path / "config.json").read_text())
    assert v.validate_config(config) == []


# ---------------------------------------------------------------- typical mistakes

def _set(path: str, value):
    """A mutator that sets config[path] = value, path like 'linux.namespaces[2].type'."""
    import re
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]

    def mutate(cfg):
        node = cfg
        for p in parts[:-1]:
            node = node[p]
        if value is _DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return mutate


_DELETE = object()

MISTAKES = [
    ("namespace type", _set("linux.namespaces[2].type", "pidd"),
     'config.json: linux.namespaces[2].type: "pidd" is not one of '
     '["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"]'),
    ("negative uid", _set("process.user.uid", -1),
     "config.json: process.user.uid: -1 is out of range for uint32 (0..4294967295)"),
    ("gid as a string", _set("process.user.gid", "0"),
     'config.json: process.user.gid: "0" is not an integer'),
    ("rlimit without soft/hard", _set("process.rlimits[0]", {"type": "RLIMIT_NOFILE", "limit": 1024}),
     ("config.json: process.rlimits[0].soft: (missing) is required",
      "config.json: process.rlimits[0].hard: (missing) is required")),
    ("rlimit as a map", _set("process.rlimits", {"RLIMIT_NOFILE": 1024}),
     'config.json: process.rlimits: {"RLIMIT_NOFILE": 1024} is not an array'),
    ("rlimit type", _set("process.rlimits[0].type", "NOFILE"),
     'config.json: process.rlimits[0].type: "NOFILE" is not one of'),
    ("duplicate rlimit", _set("process.rlimits[1].type", "RLIMIT_NOFILE"),
     'config.json: process.rlimits[1].type: "RLIMIT_NOFILE" is a duplicate rlimit type'),
    ("seccomp action", _set("linux.seccomp.syscalls[1].action", "SCMP_ACT_DENY"),
     'config.json: linux.seccomp.syscalls[1].action: "SCMP_ACT_DENY" is not one of ["SCMP_ACT_KILL", '),
    ("seccomp default action", _set("linux.seccomp.defaultAction", "allow"),
     'config.json: linux.seccomp.defaultAction: "allow" is not one of'),
    ("seccomp operator", _set("linux.seccomp.syscalls[1].args[0].op", "=="),
     'config.json: linux.seccomp.syscalls[1].args[0].op: "==" is not one of'),
    ("seccomp flag", _set("linux.seccomp.flags", ["SECCOMP_FILTER_FLAG_BOGUS"]),
     'config.json: linux.seccomp.flags[0]: "SECCOMP_FILTER_FLAG_BOGUS" is not one of'),
    ("seccomp arch", _set("linux.seccomp.architectures[0]", "x86_64"),
     'config.json: linux.seccomp.architectures[0]: "x86_64" is not one of'),
    ("seccomp empty names", _set("linux.seccomp.syscalls[0].names", []),
     "config.json: linux.seccomp.syscalls[0].names: [] must contain at least one syscall name"),
    ("seccomp metadata without listener", _set("linux.seccomp.listenerPath", _DELETE),
     "config.json: linux.seccomp.listenerPath: (missing) is required when listenerMetadata is set"),
    ("relative mount destination", _set("mounts[2].destination", "dev/pts"),
     'config.json: mounts[2].destination: "dev/pts" is not an absolute path'),
    ("mount without destination", _set("mounts[0].destination", _DELETE),
     "config.json: mounts[0].destination: (missing) is required"),
    ("relative cwd", _set("process.cwd", "home"),
     'config.json: process.cwd: "home" is not an absolute path'),
    ("empty args", _set("process.args", []),
     "config.json: process.args: [] must contain at least one entry (the program to run)"),
    ("args as a string", _set("process.args", "nginx -g daemon"),
     'config.json: process.args: "nginx -g daemon" is not an array'),
    ("terminal as a string", _set("process.terminal", "true"),
     'config.json: process.terminal: "true" is not a boolean'),
    ("boolean uid", _set("process.user.uid", True),
     "config.json: process.user.uid: true is not an integer (booleans are not numbers)"),
    ("relative hook path", _set("hooks.prestart[0].path", "libnetwork-setkey"),
     'config.json: hooks.prestart[0].path: "libnetwork-setkey" is not an absolute path'),
    ("zero hook timeout", _set("hooks.poststart[0].timeout", 0),
     "config.json: hooks.poststart[0].timeout: 0 must be greater than zero"),
    ("unknown hook list is ignored but a bad entry is not", _set("hooks.createRuntime[0]", "/bin/true"),
     'config.json: hooks.createRuntime[0]: "/bin/true" is not an object'),
    ("annotation value", _set("annotations.com\x00", 1), None),  # replaced below
    ("sysctl value", _set("linux.sysctl", {"net.ipv4.ip_forward": 1}),
     'config.json: linux.sysctl["net.ipv4.ip_forward"]: 1 is not a string'),
    ("memory limit as text", _set("linux.resources.memory.limit", "512m"),
     'config.json: linux.resources.memory.limit: "512m" is not an integer'),
    ("memory limit too large", _set("linux.resources.memory.limit", 2 ** 63),
     "config.json: linux.resources.memory.limit: 9223372036854775808 is out of range for int64"),
    ("blkio weight", _set("linux.resources.blockIO.weight", 70000),
     "config.json: linux.resources.blockIO.weight: 70000 is out of range for uint16 (0..65535)"),
    ("weightDevice without weights", _set("linux.resources.blockIO.weightDevice[1]", {"major": 8, "minor": 16}),
     'config.json: linux.resources.blockIO.weightDevice[1]: {"major": 8, "minor": 16} '
     'must set at least one of weight, leafWeight'),
    ("pids without limit", _set("linux.resources.pids", {}),
     "config.json: linux.resources.pids.limit: (missing) is required"),
    ("device cgroup access", _set("linux.resources.devices[1].access", "rwx"),
     'config.json: linux.resources.devices[1].access: "rwx" is not a combination of r, w and m'),
    ("device type", _set("linux.devices[0].type", "x"),
     'config.json: linux.devices[0].type: "x" is not one of ["c", "b", "u", "p"]'),
    ("char device without minor", _set("linux.devices[0].minor", _DELETE),
     "config.json: linux.devices[0].minor: (missing) is required"),
    ("uid mapping size", _set("linux.uidMappings[0].size", 2 ** 32),
     "config.json: linux.uidMappings[0].size: 4294967296 is out of range for uint32 (0..4294967295)"),
    ("relative namespace path", _set("linux.namespaces[1].path", "netns/blue"),
     'config.json: linux.namespaces[1].path: "netns/blue" is not an absolute path'),
    ("duplicate namespace", _set("linux.namespaces[4].type", "pid"),
     'config.json: linux.namespaces[4].type: "pid" is a duplicate namespace type'),
    ("rootfs propagation", _set("linux.rootfsPropagation", "rshare"),
     'config.json: linux.rootfsPropagation: "rshare" is not one of'),
    ("relative masked path", _set("linux.maskedPaths[2]", "proc/kcore"),
     'config.json: linux.maskedPaths[2]: "proc/kcore" is not an absolute path'),
    ("capability name", _set("process.capabilities.bounding[0]", "chown"),
     'config.json: process.capabilities.bounding[0]: "chown" is not a capability name (CAP_...)'),
    ("capabilities as a list (pre-1.0 shape)", _set("process.capabilities", ["CAP_KILL"]),
     'config.json: process.capabilities: ["CAP_KILL"] is not an object'),
    ("ociVersion", _set("ociVersion", "1.0"),
     'config.json: ociVersion: "1.0" is not a SemVer 2.0.0 version (e.g. "1.3.0")'),
    ("missing ociVersion", _set("ociVersion", _DELETE), "config.json: ociVersion: (missing) is required"),
    ("missing root", _set("root", _DELETE), "config.json: root: (missing) is required"),
    ("io priority class", _set("process.ioPriority.class", "BE"),
     'config.json: process.ioPriority.class: "BE" is not one of'),
    ("io priority level", _set("process.ioPriority.priority", 8),
     "config.json: process.ioPriority.priority: 8 is out of range for the I/O priority level (0..7)"),
    ("scheduler policy", _set("process.scheduler.policy", "FIFO"),
     'config.json: process.scheduler.policy: "FIFO" is not one of'),
    ("memory policy mode", _set("linux.memoryPolicy.mode", "MPOL_RANDOM"),
     'config.json: linux.memoryPolicy.mode: "MPOL_RANDOM" is not one of'),
    ("time offset clock", _set("linux.timeOffsets", {"realtime": {"secs": 1}}),
     'config.json: linux.timeOffsets.realtime: "realtime" is not a clock a time namespace can offset'),
    ("net device name", _set("linux.netDevices", {"eth0": {"name": "a/b"}}),
     'config.json: linux.netDevices.eth0.name: "a/b" is not a valid network interface name'),
    ("personality domain", _set("linux.personality.domain", "BSD"),
     'config.json: linux.personality.domain: "BSD" is not one of ["LINUX", "LINUX32"]'),
    ("hugepage size", _set("linux.resources.hugepageLimits[0].pageSize", "2M"),
     'config.json: linux.resources.hugepageLimits[0].pageSize: "2M" is not a hugepage size'),
    ("cpuset", _set("linux.resources.cpu.cpus", "0-3;5"),
     'config.json: linux.resources.cpu.cpus: "0-3;5" is not a CPU list'),
    ("memBwSchema", _set("linux.intelRdt.memBwSchema", "L3:0=1"),
     'config.json: linux.intelRdt.memBwSchema: "L3:0=1" must start with "MB:"'),
]
# Annotation keys are awkward to reach with a dotted path: set that case by hand.
MISTAKES[[m[0] for m in MISTAKES].index("annotation value")] = (
    "annotation value",
    lambda cfg: cfg["annotations"].update({"com.example.replicas": 3}),
    'config.json: annotations["com.example.replicas"]: 3 is not a string',
)


@pytest.mark.parametrize("mutate,expected", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_mistake_is_reported(mutate, expected):
    cfg = full_config()
    mutate(cfg)
    problems = v.validate_config(cfg)
    expected = [expected] if isinstance(expected, str) else list(expected)
    # Exactly the expected lines (each given by its start): nothing else in the valid config is blamed.
    assert len(problems) == len(expected), problems
    for want, got in zip(expected, problems):
        assert got.startswith(want), problems


def test_all_problems_are_reported_in_document_order():
    cfg = full_config()
    cfg["linux"]["namespaces"][0]["type"] = "mnt"
    cfg["process"]["user"]["uid"] = -5
    cfg["mounts"][1]["destination"] = "dev"
    del cfg["ociVersion"]
    # A missing property sorts with its parent: ociVersion with the root object.
    assert v.validate_config(cfg) == [
        "config.json: ociVersion: (missing) is required",
        "config.json: process.user.uid: -5 is out of range for uint32 (0..4294967295)",
        'config.json: mounts[1].destination: "dev" is not an absolute path',
        'config.json: linux.namespaces[0].type: "mnt" is not one of '
        '["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"]',
    ]


def test_non_object_config():
    assert v.validate_config([]) == ["config.json: (root): [] is not an object"]


def test_long_values_are_shortened():
    cfg = full_config()
    cfg["process"]["env"] = "X=" + "y" * 500
    [problem] = v.validate_config(cfg)
    assert problem.startswith('config.json: process.env: "X=yyy') and problem.endswith("... is not an array")
    assert len(problem) < 200


def test_format_path():
    assert v.format_path([]) == "(root)"
    assert v.format_path(["linux", "namespaces", 2, "type"]) == "linux.namespaces[2].type"
    assert v.format_path(["linux", "sysctl", "net.ipv4.ip_forward"]) == 'linux.sysctl["net.ipv4.ip_forward"]'
    assert v.format_path(["annotations", ""]) == 'annotations[""]'


def test_validate_process_and_resources():
    assert v.validate_process(full_config()["process"]) == []
    assert v.validate_process({"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": -1}}) == [
        "process.json: user.gid: -1 is out of range for uint32 (0..4294967295)"]
    assert v.validate_resources(full_config()["linux"]["resources"]) == []
    assert v.validate_resources({"memory": {"limit": "1g"}}, file="update") == [
        'update: memory.limit: "1g" is not an integer']


# ---------------------------------------------------------------- state

RUNC_STATE = {  # the shape `runc state` prints
    "ociVersion": "1.0.2-dev",
    "id": "web",
    "pid": 4422,
    "status": "running",
    "bundle": "/run/containerd/io.containerd.runtime.v2.task/default/web",
    "rootfs": "/run/containerd/io.containerd.runtime.v2.task/default/web/rootfs",
    "created": "2024-05-01T10:20:30.123456789Z",
    "owner": "",
}


@pytest.mark.parametrize("status,pid", [
    ("creating", None), ("created", 4422), ("running", 4422), ("paused", 4422), ("stopped", 0), ("stopped", None),
])
def test_state_samples_are_valid(status, pid):
    state = dict(RUNC_STATE, status=status, annotations={"com.example": "x"})
    if pid is None:
        del state["pid"]
    else:
        state["pid"] = pid
    assert v.validate_state(state) == []


def test_spec_state_example_is_valid():
    assert v.validate_state({"ociVersion": "0.2.0", "id": "oci-container1", "status": "running", "pid": 4422,
                             "bundle": "/containers/redis", "annotations": {"myKey": "myValue"}}) == []


def test_state_mistakes():
    assert v.validate_state(dict(RUNC_STATE, status="exited")) == [
        'state: status: "exited" is not one of ["creating", "created", "running", "stopped", "paused"]']
    running = dict(RUNC_STATE)
    del running["pid"]
    assert v.validate_state(running) == ["state: pid: (missing) is required"]
    assert v.validate_state(dict(RUNC_STATE, pid=0)) == [
        "state: pid: 0 must be a positive pid while the container is created, running or paused"]
    assert v.validate_state(dict(RUNC_STATE, bundle="bundle")) == [
        'state: bundle: "bundle" is not an absolute path']
    assert v.validate_state(dict(RUNC_STATE, created="yesterday")) == [
        'state: created: "yesterday" is not an RFC 3339 timestamp']


# ---------------------------------------------------------------- features

SPEC_FEATURES_EXAMPLE = {
    "ociVersionMin": "1.0.0",
    "ociVersionMax": "1.3.0",
    "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
    "mountOptions": ["bind", "nosuid", "rbind", "ro", "rro", "rw", "idmap", "tmpcopyup"],
    "linux": {
        "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
        "capabilities": ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_CHECKPOINT_RESTORE"],
        "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": True, "rdma": True},
        "seccomp": {"enabled": True, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_NOTIFY"],
                    "operators": ["SCMP_CMP_EQ", "SCMP_CMP_MASKED_EQ"], "archs": ["SCMP_ARCH_X86_64"],
                    "knownFlags": ["SECCOMP_FILTER_FLAG_LOG"], "supportedFlags": ["SECCOMP_FILTER_FLAG_LOG"]},
        "apparmor": {"enabled": True},
        "selinux": {"enabled": False},
        "intelRdt": {"enabled": True, "schemata": True},
        "memoryPolicy": {"modes": ["MPOL_DEFAULT", "MPOL_BIND"], "flags": ["MPOL_F_STATIC_NODES"]},
        "mountExtensions": {"idmap": {"enabled": True}},
        "netDevices": {"enabled": True},
    },
    "annotations": {"org.opencontainers.runc.version": "1.1.0"},
    "potentiallyUnsafeConfigAnnotations": ["com.example.unsafe."],
}


def test_features_example_is_valid():
    assert v.validate_features(SPEC_FEATURES_EXAMPLE) == []


def test_features_nulls_are_valid():
    doc = {"ociVersionMin": "1.0.0", "ociVersionMax": "1.3.0", "hooks": None, "mountOptions": None,
           "annotations": None, "potentiallyUnsafeConfigAnnotations": None,
           "linux": {"namespaces": None, "capabilities": None, "cgroup": {"v1": None}, "seccomp": None,
                     "apparmor": None, "selinux": {"enabled": None}, "intelRdt": None, "memoryPolicy": None,
                     "mountExtensions": {"idmap": None}, "netDevices": None}}
    assert v.validate_features(doc) == []


def test_features_mistakes():
    doc = copy.deepcopy(SPEC_FEATURES_EXAMPLE)
    del doc["ociVersionMax"]
    doc["hooks"].append("preStart")
    doc["linux"]["namespaces"].append("net")
    doc["linux"]["seccomp"]["enabled"] = "yes"
    assert v.validate_features(doc) == [
        "features: ociVersionMax: (missing) is required",
        'features: hooks[6]: "preStart" is not one of ["prestart", "createRuntime", "createContainer", '
        '"startContainer", "poststart", "poststop"]',
        'features: linux.namespaces[8]: "net" is not one of '
        '["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"]',
        'features: linux.seccomp.enabled: "yes" is not a boolean or null',
    ]


@pytest.mark.parametrize("tool", ["runc", "crun"])
def test_runtime_features_output_is_valid(tool):
    exe = shutil.which(tool)
    if exe is None:
        pytest.skip(f"{tool} is not installed")
    res = subprocess.run([exe, "features"], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"{tool} has no features command: {res.stderr.strip() or res.stdout.strip()}")
    assert v.validate_features(json.loads(res.stdout)) == []


# ---------------------------------------------------------------- bundles and the CLI command

def make_bundle(tmp_path: Path, config: dict | None = None, rootfs: bool = True) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    if rootfs:
        (bundle / "rootfs").mkdir()
    cfg = full_config() if config is None else config
    if config is None:
        cfg["root"]["path"] = "rootfs"
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


def test_validate_bundle_valid(tmp_path):
    assert v.validate_bundle(make_bundle(tmp_path)) == []


def test_validate_bundle_absolute_root(tmp_path):
    rootfs = tmp_path / "elsewhere"
    rootfs.mkdir()
    cfg = full_config()
    cfg["root"]["path"] = str(rootfs)
    assert v.validate_bundle(make_bundle(tmp_path, cfg, rootfs=False)) == []


def test_validate_bundle_missing_rootfs(tmp_path):
    bundle = make_bundle(tmp_path, rootfs=False)
    assert v.validate_bundle(bundle) == [
        f'config.json: root.path: "rootfs" does not exist ({bundle}/rootfs: no such file or directory)']


def test_validate_bundle_rootfs_not_a_directory(tmp_path):
    bundle = make_bundle(tmp_path, rootfs=False)
    (bundle / "rootfs").write_text("")
    assert v.validate_bundle(bundle) == [f'config.json: root.path: "rootfs" is not a directory ({bundle}/rootfs)']


def test_validate_bundle_missing_config(tmp_path):
    assert v.validate_bundle(tmp_path) == [f"config.json: no such file or directory in bundle {tmp_path}"]


def test_validate_bundle_missing_dir(tmp_path):
    assert v.validate_bundle(tmp_path / "nope") == [f"{tmp_path / 'nope'}: bundle directory does not exist"]


def test_validate_bundle_bad_json(tmp_path):
    (tmp_path / "config.json").write_text('{"ociVersion": "1.0.0",\n "root": }')
    [problem] = v.validate_bundle(tmp_path)
    assert problem.startswith("config.json: not valid JSON: Expecting value at line 2 column")


def _run_cli(argv: list[str], capsys) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="pyruntime validate")
    validate_cmd.configure(parser)
    opts = parser.parse_args(argv)
    rc = validate_cmd.main(opts, ctx=None)
    return rc, capsys.readouterr().out


# The full config uses fields this host refuses or ignores (test_coverage.py checks those
# lines): the CLI's own behaviour is checked on a config it applies whole.
MINIMAL = {"ociVersion": "1.0.0", "root": {"path": "rootfs"}}


def test_cli_valid(tmp_path, capsys):
    bundle = make_bundle(tmp_path, MINIMAL)
    assert _run_cli(["--bundle", str(bundle)], capsys) == (0, "config.json is valid\n")
    assert _run_cli(["-b", str(bundle)], capsys) == (0, "config.json is valid\n")


def test_cli_defaults_to_cwd(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(make_bundle(tmp_path, MINIMAL))
    assert _run_cli([], capsys) == (0, "config.json is valid\n")


def test_cli_full_config_on_this_host(tmp_path, capsys):
    """Schema-valid, but this host refuses some of its fields: each is named, exit 1."""
    rc, out = _run_cli(["--bundle", str(make_bundle(tmp_path))], capsys)
    assert rc == 1 and "config.json is valid" not in out
    assert "config.json: linux.intelRdt: " in out
    assert "config.json: process.selinuxLabel: warning: ignored on this host: " in out


def test_cli_invalid(tmp_path, capsys):
    cfg = full_config()
    cfg["root"]["path"] = "rootfs"
    cfg["linux"]["namespaces"][2]["type"] = "pidd"
    cfg["process"]["user"]["uid"] = -1
    rc, out = _run_cli(["--bundle", str(make_bundle(tmp_path, cfg))], capsys)
    assert rc == 1
    assert out.splitlines() == [
        "config.json: process.user.uid: -1 is out of range for uint32 (0..4294967295)",
        'config.json: linux.namespaces[2].type: "pidd" is not one of '
        '["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"]',
    ]


def test_cli_module_has_help_line():
    assert validate_cmd.__doc__.splitlines()[0].strip()
