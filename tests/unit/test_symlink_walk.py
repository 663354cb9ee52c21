"""The symlink walk inside a root that setup/rootfs.make_path and criu/mounts.in_root share:
checked through in_root on a plain directory (no root, no mount)."""
from __future__ import annotations

import os

import pytest

from pyruntime.criu.mounts import in_root
from pyruntime.errors import RuntimeFailure


def test_links_resolve_inside_the_root(tmp_path):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    os.symlink("/real/../../../real", tmp_path / "abs")   # .. stops at the root
    os.symlink("real/sub", tmp_path / "rel")
    os.symlink("../abs", tmp_path / "real" / "up")        # a link through a link
    assert in_root(str(tmp_path), "/abs/x") == "/real/x"
    assert in_root(str(tmp_path), "rel/./y") == "/real/sub/y"
    assert in_root(str(tmp_path), "/real/up/sub") == "/real/sub"
    assert in_root(str(tmp_path), "/missing/z") == "/missing/z"  # not there yet: as it is


def test_a_loop_is_an_error(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(RuntimeFailure, match="/a/x: too many levels of symbolic links"):
        in_root(str(tmp_path), "/a/x")
