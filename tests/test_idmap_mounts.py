"""Idmapped mounts (mounts[].uidMappings/gidMappings, idmap, ridmap): open_tree(OPEN_TREE_CLONE)
+ mount_setattr(MOUNT_ATTR_IDMAP) on the host, moved into place by the init; checked from
inside a real container by the owners it shows."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import is_pyruntime
from corehelp import assert_failed, run_sh
from test_init import userns_bundle  # noqa: F401 (a fixture)

MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "mine").write_text("x")
    os.chown(d / "mine", 0, 0)
    (d / "other").write_text("y")
    os.chown(d / "other", 1000, 2000)
    return d


def _stat(runtime, bundle, paths=("/mnt/mine", "/mnt/other")) -> list[str]:
    return run_sh(runtime, bundle, "stat -c '%u:%g' " + " ".join(paths)).split()


def test_mount_mappings_shift_the_owners(runtime, bundle, src):
    bundle.config["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(src),
                                    "options": ["rbind"], "uidMappings": MAP, "gidMappings": MAP})
    assert _stat(runtime, bundle) == ["100000:100000", "101000:102000"]
    assert os.stat(src / "other").st_uid == 1000  # the host's view is unchanged


def test_plain_bind_is_not_shifted(runtime, bundle, src):
    bundle.config["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(src),
                                    "options": ["rbind"]})
    assert _stat(runtime, bundle) == ["0:0", "1000:2000"]


def test_idmap_option_uses_the_mounts_mappings_and_ro(runtime, bundle, src):
    bundle.config["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(src),
                                    "options": ["bind", "idmap", "ro"], "uidMappings": MAP,
                                    "gidMappings": MAP})
    out = run_sh(runtime, bundle, "stat -c '%u' /mnt/mine; touch /mnt/new 2>/dev/null || echo ro")
    assert out.split() == ["100000", "ro"]


@pytest.fixture
def src_with_submount(src):
    sub = src / "sub"
    sub.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(sub)], check=True)  # ext4 again: idmappable
    try:
        yield src
    finally:
        subprocess.run(["umount", "-l", str(sub)], check=True)


@pytest.mark.parametrize("option,sub_owner", [("idmap", "0"), ("ridmap", "100000")])
def test_idmap_and_ridmap_on_submounts(runtime, bundle, src_with_submount, option, sub_owner):
    bundle.config["mounts"].append({"destination": "/mnt", "type": "bind",
                                    "source": str(src_with_submount),
                                    "options": ["rbind", option], "uidMappings": MAP,
                                    "gidMappings": MAP})
    owners = run_sh(runtime, bundle, "stat -c '%u' /mnt/mine /mnt/sub/mine").split()
    assert owners == ["100000", sub_owner]


def test_idmap_with_the_containers_user_namespace(runtime, userns_bundle, src):
    """A bare idmap takes the container's own mappings: root's file is root's inside."""
    bundle = userns_bundle
    bundle.config["linux"]["namespaces"].append({"type": "user"})
    bundle.config["linux"]["uidMappings"] = MAP
    bundle.config["linux"]["gidMappings"] = MAP
    bundle.config["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(src),
                                    "options": ["rbind", "idmap"]})
    assert _stat(runtime, bundle) == ["0:0", "1000:2000"]


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's error wording")
def test_idmap_without_any_mapping_is_an_error(runtime, bundle, src):
    bundle.config["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(src),
                                    "options": ["rbind", "idmap"]})
    bundle.config["process"]["args"] = ["true"]
    bundle.write()
    r = runtime.run(bundle, None, check=False)
    assert_failed(r, "an idmapped mount needs uidMappings and gidMappings")


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's error wording")
def test_filesystem_without_idmap_support_is_refused(runtime, bundle):
    """procfs cannot be idmapped: a clear error naming the mount, nothing left behind."""
    bundle.config["mounts"].append({"destination": "/mnt", "type": "bind", "source": "/proc/sys",
                                    "options": ["bind"], "uidMappings": MAP, "gidMappings": MAP})
    bundle.config["process"]["args"] = ["true"]
    bundle.write()
    cid = runtime.new_id()
    r = runtime("run", "--bundle", bundle.path, cid, check=False)
    n = len(bundle.config["mounts"]) - 1
    assert_failed(r, f"mounts[{n}]: '/proc/sys' cannot be idmapped")
    assert r.returncode == 1 and not (runtime.root / cid).exists()


@pytest.mark.skipif(not is_pyruntime(), reason="pyruntime's error wording")
def test_idmap_on_a_tmpfs_mount_is_refused(runtime, bundle):
    bundle.config["mounts"].append({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["idmap"], "uidMappings": MAP, "gidMappings": MAP})
    bundle.write()
    n = len(bundle.config["mounts"]) - 1
    r = runtime("run", "--bundle", bundle.path, runtime.new_id(), check=False)
    assert_failed(r, f'config.json: mounts[{n}].options[0]: "idmap" needs a bind mount')
