"""Where rootless --systemd-cgroup looks for the user's systemd (no root, no bus needed)."""
from __future__ import annotations

import pytest

from pyruntime.cgroups.systemd import dbus, names
from pyruntime.errors import RuntimeFailure

pytest.importorskip("jeepney")


def test_session_bus_address_comes_first():
    env = {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus",
           "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert dbus.user_addresses(env) == [("/run/user/1000/bus", "bus"),
                                        ("/run/user/1000/systemd/private", "private")]
    del env["XDG_RUNTIME_DIR"]
    assert dbus.user_addresses(env) == [("/run/user/1000/bus", "bus")]


def test_abstract_session_bus():
    env = {"DBUS_SESSION_BUS_ADDRESS": "unix:abstract=/tmp/dbus-x,guid=0123"}
    assert dbus.user_addresses(env) == [("\0/tmp/dbus-x", "bus")]


def test_without_a_session_bus_the_user_managers_private_socket():
    assert dbus.user_addresses({"XDG_RUNTIME_DIR": "/run/user/1000"}) == \
        [("/run/user/1000/systemd/private", "private")]
    assert dbus.user_addresses({"DBUS_SESSION_BUS_ADDRESS": "", "XDG_RUNTIME_DIR": "/x"}) == \
        [("/x/systemd/private", "private")]


def test_neither_is_an_error_naming_both():
    with pytest.raises(RuntimeFailure) as e:
        dbus.user_addresses({})
    msg = str(e.value)
    assert "$DBUS_SESSION_BUS_ADDRESS" in msg and "$XDG_RUNTIME_DIR/systemd/private" in msg
    assert "\n" not in msg


def test_a_non_unix_session_bus_is_an_error():
    with pytest.raises(RuntimeFailure, match="DBUS_SESSION_BUS_ADDRESS='tcp:host=x,port=1' is "
                       "not a unix address"):
        dbus.user_addresses({"DBUS_SESSION_BUS_ADDRESS": "tcp:host=x,port=1"})


def test_rootless_default_slice_is_user_slice():
    assert names.parse_cgroups_path(None, "c", names.USER_SLICE) == \
        ("user.slice", "pyruntime-c.scope")
    assert names.parse_cgroups_path(":p:c", "c", names.USER_SLICE) == ("user.slice", "p-c.scope")
    assert names.parse_cgroups_path("a.slice:p:c", "c", names.USER_SLICE) == \
        ("a.slice", "p-c.scope")


class FakeUserManager:
    """Stands in for the user's systemd: the one property _build_user asks."""

    def __init__(self, user=False):
        assert user, "rootless mode must ask the user's systemd"

    def get_property(self, path, iface, name):
        assert (iface, name) == ("org.freedesktop.systemd1.Manager", "ControlGroup")
        return "/user.slice/user-1000.slice/user@1000.service"


def test_rootless_unit_lives_under_the_user_manager_on_cgroup2_only(monkeypatch):
    from pyruntime.cgroups.common import Layout
    from pyruntime.cgroups.systemd import manager as sdm
    monkeypatch.setattr(sdm, "Systemd", FakeUserManager)
    hybrid = Layout({"pids": ("/sys/fs/cgroup/pids", "/")}, ("/sys/fs/cgroup/unified", "/"), {})
    m = sdm.build(None, "c1", hybrid, rootless=True)
    scope = "/user.slice/user-1000.slice/user@1000.service/user.slice/pyruntime-c1.scope"
    assert m.mode == "v2" and m.dirs == {"": "/sys/fs/cgroup/unified" + scope}
    assert m.extra["systemd"]["cgroup"] == scope
    assert m.extra["systemd"]["user"] == \
        "/sys/fs/cgroup/unified/user.slice/user-1000.slice/user@1000.service"
    # a cgroup namespace's mount shows the tree below its root
    nested = Layout({}, ("/sys/fs/cgroup", "/user.slice"), {})
    m = sdm.build("a.slice:p:n", "c1", nested, rootless=True)
    assert m.dirs == {"": "/sys/fs/cgroup/user-1000.slice/user@1000.service/a.slice/p-n.scope"}
    with pytest.raises(RuntimeFailure, match="rootless --systemd-cgroup needs a cgroup v2"):
        sdm.build(None, "c1", Layout({"pids": ("/sys/fs/cgroup/pids", "/")}, None, {}),
                  rootless=True)
