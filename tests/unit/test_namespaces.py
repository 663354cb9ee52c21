"""Joining namespaces given by path, against a recording fake of the syscall layer: the type
check, the order (user first, mount last) and the errors."""
from __future__ import annotations

import errno

import pytest

from pyruntime.errors import ConfigError, RuntimeFailure
from pyruntime.linux import namespaces, syscalls as sc
from pyruntime.oci import config

from .fakes import RecordingSys


def linux(*namespaces_):
    return config._linux(config.Reader({"namespaces": list(namespaces_)}, "linux"))


def ns(kind, path=""):
    return {"type": kind, "path": path} if path else {"type": kind}


def fake_of_types(types: dict[str, str]) -> RecordingSys:
    """A fake whose NS_GET_NSTYPE answers the type `types` gives the opened path."""
    fake = RecordingSys()
    fake.answer("ioctl", lambda fd, req: namespaces.FLAGS[types[fake.paths[fd]]])
    return fake


CONFIG = linux(ns("mount", "/proc/9/ns/mnt"), ns("pid"), ns("network", "/proc/9/ns/net"),
               ns("uts"), ns("user", "/proc/9/ns/user"), ns("ipc", "/proc/9/ns/ipc"))
TYPES = {"/proc/9/ns/mnt": "mount", "/proc/9/ns/net": "network", "/proc/9/ns/user": "user",
         "/proc/9/ns/ipc": "ipc"}


def test_join_order_user_first_mount_last():
    fake = fake_of_types(TYPES)
    opened = namespaces.open_paths(CONFIG, fake)
    assert [kind for kind, _ in opened] == ["user", "network", "ipc", "mount"]
    namespaces.join(opened, fake)
    joined = [(fake.paths[a[0]], a[1]) for _, a in fake.named("setns")]
    assert joined == [("/proc/9/ns/user", sc.CLONE_NEWUSER), ("/proc/9/ns/net", sc.CLONE_NEWNET),
                      ("/proc/9/ns/ipc", sc.CLONE_NEWIPC), ("/proc/9/ns/mnt", sc.CLONE_NEWNS)]
    # each fd is closed once joined: the mount namespace's paths may not resolve after it
    names = [name for name, _ in fake.named("setns", "close")]
    assert names == ["setns", "close"] * 4 and fake.open_fds() == set()


def test_the_namespaces_to_create():
    assert namespaces.new_flags(CONFIG) == sc.CLONE_NEWPID | sc.CLONE_NEWUTS
    assert namespaces.new_flags(CONFIG, ("user",)) == 0
    fresh = linux(ns("user"), ns("mount"), ns("cgroup"))
    assert namespaces.new_flags(fresh, ("user",)) == sc.CLONE_NEWUSER
    assert namespaces.new_flags(fresh) == sc.CLONE_NEWUSER | sc.CLONE_NEWNS | sc.CLONE_NEWCGROUP


def test_a_path_of_another_type_is_refused_and_nothing_leaks():
    fake = fake_of_types(dict(TYPES, **{"/proc/9/ns/net": "uts"}))
    with pytest.raises(ConfigError) as e:
        namespaces.open_paths(CONFIG, fake)
    assert str(e.value) == ('config.json: linux.namespaces[2].path: "/proc/9/ns/net" is not a '
                            'network namespace')
    assert fake.open_fds() == set() and not fake.named("setns")


def test_a_path_that_cannot_be_opened():
    fake = fake_of_types(TYPES)
    fake.fail("open", errno.ENOENT, when=lambda path, *_: path == "/proc/9/ns/net")
    with pytest.raises(ConfigError) as e:
        namespaces.open_paths(CONFIG, fake)
    assert str(e.value) == ('config.json: linux.namespaces[2].path: "/proc/9/ns/net" cannot be '
                            'opened: No such file or directory')
    assert fake.open_fds() == set()


def test_a_refused_setns_names_the_namespace():
    fake = fake_of_types(TYPES)
    fake.fail("setns", errno.EPERM, when=lambda fd, nstype: nstype == sc.CLONE_NEWNET)
    opened = namespaces.open_paths(CONFIG, fake)
    with pytest.raises(RuntimeFailure) as e:
        namespaces.join(opened, fake)
    assert str(e.value).startswith("joining the network namespace: setns(")
    assert str(e.value).endswith(": Operation not permitted")
    assert len(fake.named("setns")) == 2  # the user namespace was joined, nothing after


def test_creation_order_user_namespace_first_and_mapped():
    """Join what is given by path, then a new user namespace alone, mapped by the parent
    before we become its root, then the rest at once (owned by it)."""
    fake = fake_of_types({"/proc/9/ns/net": "network"})
    cfg = linux(ns("user"), ns("network", "/proc/9/ns/net"), ns("pid"), ns("mount"))
    namespaces.enter(cfg, namespaces.open_paths(cfg, fake),
                     lambda: fake.calls.append(("parent writes the maps", ())), fake)
    assert [c for c in fake.calls if c[0] not in ("open", "ioctl", "close")] == [
        ("setns", (1000, sc.CLONE_NEWNET)),
        ("unshare", (sc.CLONE_NEWUSER,)),
        ("parent writes the maps", ()),
        ("setresgid", (0, 0, 0)), ("setresuid", (0, 0, 0)),
        ("unshare", (sc.CLONE_NEWPID | sc.CLONE_NEWNS,)),
    ]


def test_without_a_new_user_namespace_nothing_waits_for_maps():
    fake = RecordingSys()
    namespaces.enter(linux(ns("pid"), ns("uts")), [], lambda: pytest.fail("no maps to write"),
                     fake)
    assert fake.calls == [("unshare", (sc.CLONE_NEWPID | sc.CLONE_NEWUTS,))]
