"""Mount option parsing and the config's mount checks (oci/mounts.py): no root, no rootfs."""
from __future__ import annotations

import pytest

from pyruntime.errors import ConfigError
from pyruntime.linux import syscalls as sc
from pyruntime.oci import config, mounts
from pyruntime.oci.coverage import APPLIED, MOUNT_OPTIONS


def mount(i=0, **fields) -> config.Mount:
    return config._mount(config.Reader({"destination": "/mnt", **fields}, f"mounts[{i}]"))


def test_flags_later_options_win():
    flags, prop, data = mounts.parse_options(["ro", "nosuid", "rw", "noexec", "rprivate",
                                              "mode=755", "x-tool", "rro", "tmpcopyup"])
    assert flags == sc.MS_NOSUID | sc.MS_NOEXEC
    assert prop == sc.MS_PRIVATE | sc.MS_REC
    assert data == ["mode=755"]  # x-*, recursive and special options never reach mount(2)
    assert mounts.parse_options(["rbind", "ro"])[0] == sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY


def test_mount_option_rows_match_the_code():
    handled = set(mounts.FLAGS) | set(mounts.PROPAGATION) | set(mounts.RECURSIVE) | \
        mounts.SPECIAL
    for opt, row in MOUNT_OPTIONS.items():
        if row[0] == APPLIED:
            assert opt in handled, f"{opt} is marked applied but oci/mounts.py does not know it"
            flags, prop, data = mounts.parse_options([opt])
            assert data == [], f"{opt} would go to mount(2) as filesystem data"
    assert handled <= MOUNT_OPTIONS.keys()


def test_recursive_options_combine_as_the_kernel_wants():
    s, c = mounts.recursive(["rro", "rnoatime", "rrw", "rnosuid"])
    assert s == sc.MOUNT_ATTR_NOATIME | sc.MOUNT_ATTR_NOSUID
    assert c == sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR__ATIME
    s, c = mounts.recursive(["rnoatime", "rstrictatime"])
    assert (s, c) == (sc.MOUNT_ATTR_STRICTATIME, sc.MOUNT_ATTR__ATIME)
    assert mounts.recursive(["ro", "rbind"]) is None


@pytest.mark.parametrize("fields, path, problem", [
    ({"type": "bind", "source": "/x", "options": ["rbind", "rox"]}, "mounts[0].options[1]",
     "is not a mount option"),
    ({"type": "tmpfs", "options": ["rnoexecc"]}, None, None),  # a tmpfs's data: the kernel checks
    ({"type": "proc", "options": ["rnodevv", "rsuidd"]}, None, None),
    ({"type": "tmpfs", "options": ["nosuid", "rnosuidx"]}, None, None),
    ({"type": "tmpfs", "options": ["rro"]}, None, None),
    ({"type": "proc", "options": ["rro2"]}, None, None),
    ({"type": "proc", "options": ["rexec"]}, None, None),
    ({"type": "proc", "options": ["rdefaults"]}, "mounts[0].options[0]", "is not a mount option"),
    ({"type": "proc", "options": ["tmpcopyup"]}, "mounts[0].options[0]", "needs a tmpfs mount"),
    ({"type": "tmpfs", "options": ["idmap"]}, "mounts[0].options[0]", "needs a bind mount"),
    ({"type": "cgroup", "options": ["ridmap"]}, "mounts[0].options[0]", "needs a bind mount"),
    ({"type": "cgroup", "options": ["ro", "nonsense"]}, "mounts[0].options[1]",
     "is not a mount option"),
    ({"type": "tmpfs", "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]},
     "mounts[0].uidMappings", "needs a bind mount"),
])
def test_check_options(fields, path, problem):
    m = mount(**fields)
    if problem is None:
        mounts.check_options(m)
        return
    with pytest.raises(ConfigError) as e:
        mounts.check_options(m)
    assert str(e.value).startswith(f"config.json: {path}: ") and problem in str(e.value)


def test_filesystem_data_on_a_bind_is_a_warning(capsys):
    mounts.check_options(mount(3, type="bind", source="/x", options=["rbind", "size=1k"]))
    assert "mounts[3].options[1]: 'size=1k' ignored: a bind mount takes no filesystem data" in \
        capsys.readouterr().err


def test_mount_id_mappings_are_parsed_with_the_config():
    m = mount(type="bind", source="/x", options=["rbind"],
              uidMappings=[{"containerID": 0, "hostID": 1000, "size": 10}])
    assert m.uid_mappings == [{"containerID": 0, "hostID": 1000, "size": 10}]
    assert m.gid_mappings == []
    with pytest.raises(ConfigError) as e:
        mount(2, type="bind", source="/x",
              gidMappings=[{"containerID": 0, "hostID": -1, "size": 1}])
    assert str(e.value).startswith("config.json: mounts[2].gidMappings[0].hostID: -1")
    with pytest.raises(ConfigError, match=r"mounts\[0\].uidMappings\[0\].size.*required"):
        mount(type="bind", source="/x", uidMappings=[{"containerID": 0, "hostID": 1}])


def test_a_mount_without_type_needs_a_bind():
    with pytest.raises(ConfigError, match=r"mounts\[0\].type"):
        mount(source="/x")
    assert mount(source="/x", options=["rbind"]).type == ""
