"""linux.intelRdt by config-linux.md's rules, on a directory standing in for the resctrl
mount (this kind of machine has no resctrl: test_coverage.py checks create's error there)."""
from __future__ import annotations

import os

import pytest

from pyruntime.linux import intelrdt
from pyruntime.errors import RuntimeFailure


@pytest.fixture
def root(tmp_path, monkeypatch):
    """resctrl's groups hold files that rmdir takes with them; a plain dir needs help."""
    real_rmdir = os.rmdir

    def rmdir(path):
        for name in os.listdir(path):
            if os.path.isfile(os.path.join(path, name)):
                os.unlink(os.path.join(path, name))
        real_rmdir(path)
    monkeypatch.setattr(intelrdt.os, "rmdir", rmdir)
    r = tmp_path / "resctrl"
    (r / "info").mkdir(parents=True)
    (r / "mon_groups").mkdir()
    return r


def test_group_named_after_the_container(root):
    info = intelrdt.apply({"l3CacheSchema": "L3:0=7f0", "memBwSchema": "MB:0=20",
                           "schemata": ["L2:0=f"]}, "c1", 123, str(root))
    d = root / "c1"
    assert (d / "schemata").read_text() == "L3:0=7f0\nMB:0=20\nL2:0=f\n"  # the spec's order
    assert (d / "tasks").read_text() == "123"
    intelrdt.join(info, 456)
    assert (d / "tasks").read_text() == "456"
    intelrdt.remove(info)
    assert not d.exists()  # created for the container: removed with it


def test_preconfigured_closid_is_joined_and_kept(root):
    (root / "gold").mkdir()
    info = intelrdt.apply({"closID": "gold"}, "c1", 7, str(root))
    assert (root / "gold" / "tasks").read_text() == "7"
    intelrdt.remove(info)
    assert (root / "gold").is_dir()


def test_missing_preconfigured_closid_is_an_error(root):
    with pytest.raises(RuntimeFailure, match=r"linux.intelRdt.closID: 'gold': no such"):
        intelrdt.apply({"closID": "gold"}, "c1", 7, str(root))


def test_existing_closid_with_other_schemata_is_an_error(root):
    (root / "gold").mkdir()
    (root / "gold" / "schemata").write_text("    L3:0=fff\n")
    intelrdt.apply({"closID": "gold", "l3CacheSchema": "L3:0=fff"}, "c1", 7, str(root))
    with pytest.raises(RuntimeFailure, match="other schemata"):
        intelrdt.apply({"closID": "gold", "l3CacheSchema": "L3:0=00f"}, "c2", 8, str(root))


def test_default_clos_and_monitoring(root):
    (root / "mon_groups").mkdir(exist_ok=True)
    info = intelrdt.apply({"closID": "/", "enableMonitoring": True}, "c1", 9, str(root))
    assert (root / "tasks").read_text() == "9"
    assert (root / "mon_groups" / "c1" / "tasks").read_text() == "9"
    intelrdt.remove(info)
    assert not (root / "mon_groups" / "c1").exists() and root.is_dir()


@pytest.mark.parametrize("rdt,problem", [
    ({"memBwSchema": "L3:0=1"}, 'must start with "MB:"'),
    ({"schemata": ["L3:0=1\nMB:0=2"]}, "must be one line"),
    ({"closID": "../x"}, "is not a resctrl group name"),
    ({"closID": "info"}, "is not a resctrl group name"),
])
def test_bad_values(root, rdt, problem):
    with pytest.raises(RuntimeFailure, match=problem):
        intelrdt.apply(rdt, "c1", 1, str(root))
    assert sorted(os.listdir(root)) == ["info", "mon_groups"]  # nothing left behind
