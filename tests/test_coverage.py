"""The coverage table (pyruntime/oci/coverage.py): every config.json property and mount option of
the runtime-spec has a row, features and validate follow it, and a refused field fails
`create` with its JSON path."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import is_pyruntime
from corehelp import assert_failed

from pyruntime.oci import coverage
from pyruntime.setup import mountattr
from pyruntime.oci.coverage import APPLIED, FIELDS, IGNORED, MOUNT_OPTIONS, REFUSED

SCHEMA = Path(__file__).resolve().parent.parent / "spec" / "config.schema.json"
# Sections of other platforms: not in our Linux schema, still answered.
OTHER_PLATFORMS = {"solaris", "windows", "vm", "zos"}
# runtime-spec config.md's table of mount options (v1.3.0), plus idmap and ridmap.
SPEC_MOUNT_OPTIONS = """async atime bind defaults dev diratime dirsync exec iversion lazytime loud
    mand noatime nodev nodiratime noexec noiversion nolazytime nomand norelatime nostrictatime
    nosuid nosymfollow private ratime rbind rdev rdiratime relatime remount rexec rnoatime
    rnodiratime rnoexec rnorelatime rnostrictatime rnosuid rnosymfollow ro rprivate rrelatime
    rro rrw rshared rslave rstrictatime rsuid rsymfollow runbindable rw shared silent slave
    strictatime suid symfollow sync tmpcopyup unbindable idmap ridmap""".split()


def schema_properties() -> set[str]:
    """Every property path of the schema, following $refs: `a.b`, `a[].b` (array items),
    `a.*.b` (map values)."""
    schema = json.loads(SCHEMA.read_text())
    defs, out = schema["$defs"], set()

    def walk(node, path, seen):
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[1]
            if name not in seen:
                walk(defs[name], path, seen | {name})
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in node.get(key, []):
                walk(sub, path, seen)
        for name, sub in node.get("properties", {}).items():
            p = f"{path}.{name}" if path else name
            out.add(p)
            walk(sub, p, seen)
        if "items" in node:
            walk(node["items"], path + "[]", seen)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], path + ".*", seen)
        for sub in node.get("patternProperties", {}).values():
            walk(sub, path + ".*", seen)

    walk(schema, "", frozenset())
    return out


def test_the_walk_sees_deep_properties():
    props = schema_properties()
    assert len(props) > 200
    assert {"linux.resources.blockIO.throttleReadBpsDevice[].rate", "linux.timeOffsets.*.secs",
            "linux.netDevices.*.name", "hooks.poststop[].timeout",
            "mounts[].uidMappings[].size"} <= props


def test_every_schema_property_has_a_row():
    missing = sorted(schema_properties() - FIELDS.keys())
    assert not missing, f"config.schema.json properties without a row in coverage.FIELDS: {missing}"


def test_every_row_is_a_schema_property():
    assert sorted(FIELDS.keys() - schema_properties() - OTHER_PLATFORMS) == []


def test_every_spec_mount_option_has_a_row():
    assert sorted(set(SPEC_MOUNT_OPTIONS) - MOUNT_OPTIONS.keys()) == []


@pytest.mark.parametrize("table", ["FIELDS", "MOUNT_OPTIONS"])
def test_rows_are_well_formed(table):
    for key, row in getattr(coverage, table).items():
        assert len(row) in (2, 4), key
        assert row[0] in (APPLIED, REFUSED, IGNORED) and row[1], key
        if len(row) == 4:
            assert row[2] in coverage.PROBES and row[3] in (REFUSED, IGNORED), key
        if row[0] == IGNORED:  # ignoring needs a reason a reader can check
            assert any(w in row[1] for w in (".md", "mount(8)", "kernel")), key


def test_host_notes_name_each_field_once():
    cfg = {"ociVersion": "1.3.0", "process": {"commandLine": "x", "args": ["sh"], "cwd": "/"},
           "windows": {"layerFolders": ["a"]},
           "linux": {"resources": {"memory": {"kernel": 5}}, "intelRdt": {"closID": "a"},
                     "sysctl": {"whatever.key": "1"}},
           "mounts": [{"destination": "/x", "options": ["rbind", "x-mine", "ro", "sync"]},
                      {"destination": "/y", "type": "tmpfs", "options": ["sync"]}],
           "custom": {"a": 1}}
    notes = {path: kind for path, kind, _ in coverage.host_notes(cfg)}
    assert notes == {"process.commandLine": IGNORED, "windows": IGNORED,
                     "linux.resources.memory.kernel": IGNORED, "linux.intelRdt": REFUSED,
                     "mounts[0].options[1]": IGNORED, "mounts[0].options[3]": IGNORED,
                     "custom": IGNORED}


# ---------------------------------------------------------------- features and validate

@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own table")
def test_features_follow_the_table(runtime):
    feats = json.loads(runtime("features").stdout)
    assert feats["mountOptions"] == coverage.applied_mount_options()
    assert "rro" in feats["mountOptions"] and mountattr.supported()
    for opt in feats["mountOptions"]:
        assert coverage.effective(MOUNT_OPTIONS[opt])[0] == APPLIED
    linux = feats["linux"]
    assert linux["intelRdt"]["enabled"] == coverage.field_applied("linux.intelRdt")
    assert linux["netDevices"]["enabled"] == coverage.field_applied("linux.netDevices")
    assert linux["mountExtensions"]["idmap"]["enabled"] == \
        coverage.field_applied("mounts[].uidMappings")
    assert bool(linux["memoryPolicy"]["modes"]) == coverage.field_applied("linux.memoryPolicy")


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own features")
def test_checkpoint_is_advertised_only_when_it_works(runtime, tmp_path):
    feats = json.loads(runtime("features").stdout)
    enabled = feats["annotations"]["org.opencontainers.runc.checkpoint.enabled"]
    criu_ok = subprocess.run(["criu", "check", "-o", "/dev/null"], capture_output=True,
                             cwd=tmp_path).returncode == 0
    assert enabled == str(criu_ok).lower()  # protobuf is installed here (pyproject)
    if enabled == "false":
        return
    assert runtime("checkpoint", "--help", check=False).returncode == 0


@pytest.mark.skipif(not is_pyruntime(), reason="`validate` is pyruntime's own command")
def test_validate_warns_about_ignored_fields(runtime, bundle):
    bundle.config["process"]["commandLine"] = "sh"
    bundle.config["linux"].setdefault("resources", {})["memory"] = {"kernel": 1 << 30}
    bundle.config["mounts"].append({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["x-gvfs-show"]})
    bundle.write()
    r = runtime("validate", "--bundle", bundle.path)
    lines = r.stdout.splitlines()
    assert lines[-1] == "config.json is valid"
    n = len(bundle.config["mounts"]) - 1
    for path in ("process.commandLine", "linux.resources.memory.kernel", f"mounts[{n}].options[0]"):
        assert any(line.startswith(f"config.json: {path}: warning: ignored on this host: ")
                   for line in lines), (path, lines)


@pytest.mark.skipif(not is_pyruntime(), reason="`validate` is pyruntime's own command")
def test_validate_reports_what_create_refuses(runtime, bundle):
    bundle.config["linux"]["intelRdt"] = {"closID": "guaranteed"}
    bundle.config["mounts"].append({"destination": "/mnt", "type": "bind", "source": "/tmp",
                                    "options": ["rbind", "rrox"]})
    bundle.write()
    r = runtime("validate", "--bundle", bundle.path, check=False)
    n = len(bundle.config["mounts"]) - 1
    assert r.returncode == 1, r
    assert "config.json is valid" not in r.stdout
    assert f'config.json: mounts[{n}].options[1]: "rrox" is not a mount option' in r.stdout
    assert "config.json: linux.intelRdt: " in r.stdout


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's error wording")
def test_intel_rdt_without_resctrl_is_an_error(runtime, bundle):
    from pyruntime.oci.config import resctrl_mounted
    if resctrl_mounted():
        pytest.skip("this host has resctrl mounted")
    bundle.config["linux"]["intelRdt"] = {"closID": "guaranteed", "l3CacheSchema": "L3:0=ff"}
    bundle.write()
    r = runtime.run(bundle, None, check=False)
    assert_failed(r, 'config.json: linux.intelRdt: {"closID": "guaranteed", "l3CacheSchema": '
                  '"L3:0=ff"} cannot be applied: no resctrl filesystem is mounted on this host')


# ---------------------------------------------------------------- refused means refused

def _mount(bundle, **kw):
    m = {"destination": "/mnt", "type": "bind", "source": str(bundle.rootfs / "etc"),
         "options": ["rbind"]}
    m.update(kw)
    bundle.config["mounts"].append(m)
    return f"mounts[{len(bundle.config['mounts']) - 1}]"


def _set(section, key, value):
    def apply(bundle):
        bundle.config.setdefault(section, {})[key] = value
        return f"{section}.{key}"
    return apply


def _sched(key, value):
    def apply(bundle):
        bundle.config["process"]["scheduler"] = {"policy": "SCHED_OTHER", key: value}
        return f"process.scheduler.{key}"
    return apply


# A config that uses each refused field (what refuses it is in the table's note).
REFUSED_SAMPLES = {
    "process.apparmorProfile": _set("process", "apparmorProfile", "docker-default"),
    "process.scheduler.flags": _sched("flags", ["SCHED_FLAG_RESET_ON_FORK"]),
    "process.scheduler.runtime": _sched("runtime", 1000),
    "process.scheduler.deadline": _sched("deadline", 1000),
    "process.scheduler.period": _sched("period", 1000),
    "linux.intelRdt": _set("linux", "intelRdt", {"closID": "guaranteed"}),
    "linux.personality.flags": lambda b: _set("linux", "personality", {
        "domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]})(b) + ".flags",
    "linux.resources.network": lambda b: _set("linux", "resources", {
        "network": {"classID": 1048577}})(b) + ".network",
    "linux.resources.memory.swappiness": lambda b: _set("linux", "resources", {
        "memory": {"swappiness": 10}})(b) + ".memory.swappiness",
    "linux.resources.memory.disableOOMKiller": lambda b: _set("linux", "resources", {
        "memory": {"disableOOMKiller": True}})(b) + ".memory.disableOOMKiller",
    "rrox": lambda b: _mount(b, options=["rbind", "rrox"]) + ".options[1]",
    "tmpcopyup on a bind": lambda b: _mount(b, options=["rbind", "tmpcopyup"]) + ".options[1]",
}


def _refused_here() -> list[str]:
    rows = list(FIELDS.items()) + list(MOUNT_OPTIONS.items())
    refused = [k for k, row in rows if coverage.effective(row)[0] == REFUSED]
    # a sample of the parent covers its fields
    return [k for k in refused if not any(k.startswith((p + ".", p + "[")) for p in refused)]


def test_every_refused_row_has_a_sample():
    refused = set(_refused_here())
    assert sorted(refused - REFUSED_SAMPLES.keys()) == []
    # and every field sample is refused here (a sample must not hide an applied field)
    for name in REFUSED_SAMPLES:
        assert name not in FIELDS or name in refused or len(FIELDS[name]) == 4, name


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's own refusals")
@pytest.mark.parametrize("name", sorted(REFUSED_SAMPLES))
def test_create_refuses_with_the_json_path(runtime, bundle, name):
    if name in FIELDS and coverage.effective(FIELDS[name])[0] != REFUSED:
        pytest.skip(f"{name} is {coverage.effective(FIELDS[name])[0]} on this host")
    path = REFUSED_SAMPLES[name](bundle)
    bundle.write()
    cid = runtime.new_id()
    r = runtime("create", "--bundle", bundle.path, cid, check=False, stdin=subprocess.DEVNULL)
    assert_failed(r, f"config.json: {path}: ", f"{path}.")  # the cgroup code names a subfield
    assert r.returncode == 1
    assert "internal error" not in r.stderr
    assert not os.path.exists(runtime.root / cid)
