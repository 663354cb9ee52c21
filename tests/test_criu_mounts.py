"""criu/mounts.py without root or CRIU: which mounts the dump and the restore name external,
and the host source each one maps back to."""
from __future__ import annotations

import json
import os

from pyruntime.oci import config as configmod
from pyruntime.criu import mounts


def load(tmp_path, binds):
    (tmp_path / "rootfs").mkdir()
    cfg = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
           "process": {"args": ["sh"], "cwd": "/"},
           "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}] + binds,
           "linux": {"namespaces": [{"type": "mount"}]}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return configmod.load(str(tmp_path))


def test_bind_sources_are_resolved_as_mount_resolves_them(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    os.symlink("real", tmp_path / "rel-link")
    cfg = load(tmp_path, [
        {"destination": "/a", "type": "bind", "source": str(tmp_path / "link")},
        {"destination": "/b", "type": "none", "source": "rel-link", "options": ["rbind"]},
        {"destination": "/c", "type": "bind", "source": str(tmp_path / "real")}])
    real = str(tmp_path / "real")
    # keys are the mountpoints in the rootfs; /proc is not external
    assert mounts.external(cfg, str(tmp_path), {}, "") == [("/a", real), ("/b", real),
                                                           ("/c", real)]


def test_keys_follow_symlinks_inside_the_rootfs_only(tmp_path):
    cfg = load(tmp_path, [{"destination": "/conf", "type": "bind", "source": "/etc"}])
    os.makedirs(tmp_path / "rootfs" / "real")
    os.symlink("/real/../../../real", tmp_path / "rootfs" / "conf")
    assert mounts.in_root(cfg.root_path, "/conf/x") == "/real/x"
