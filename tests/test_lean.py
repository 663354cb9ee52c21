"""pyruntime.lean: the private CPython modules the hot path prefers, and their public fallbacks.
Unit tests: no root, no container."""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys

import pytest

from pyruntime import lean

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fresh_lean(monkeypatch, blocked=()):
    """Import lean anew with the given modules made unimportable (None in sys.modules)."""
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "pyruntime.lean")
    mod = importlib.import_module("pyruntime.lean")
    monkeypatch.setitem(sys.modules, "pyruntime.lean", lean)  # leave the original for others
    return mod


def test_the_private_modules_are_preferred():
    assert lean.signal.__name__ == "_signal"
    assert lean.socket.__name__ == "_socket"


def test_signal_and_socket_fall_back_to_the_public_modules(monkeypatch):
    mod = fresh_lean(monkeypatch, ("_signal", "_socket"))
    assert mod.signal.__name__ == "signal" and mod.socket.__name__ == "socket"
    # what the package uses of them is there either way
    for name in ("SIGKILL", "SIGTERM", "SIG_DFL", "signal", "pidfd_send_signal", "pthread_sigmask"):
        assert getattr(mod.signal, name) is not None
    for name in ("AF_UNIX", "SOCK_STREAM", "SOCK_CLOEXEC", "SOL_SOCKET", "SCM_RIGHTS", "socket",
                 "socketpair"):
        assert getattr(mod.socket, name) is not None
    a, b = mod.socket.socketpair(mod.socket.AF_UNIX, mod.socket.SOCK_STREAM)
    with a, b:
        a.sendall(b"x")
        assert b.recv(1) == b"x"


@pytest.mark.parametrize("blocked", [(), ("_sha2",), ("_sha2", "_sha256")])
def test_sha256_gives_the_same_digest_whichever_module_computes_it(monkeypatch, blocked):
    mod = fresh_lean(monkeypatch, blocked)
    data = b"pyruntime seccomp cache key \0 \xff"
    assert mod.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    if len(blocked) == 2:
        assert mod.sha256 is hashlib.sha256


def test_sha256_is_chosen_once(monkeypatch):
    mod = fresh_lean(monkeypatch)
    first = mod.sha256
    assert "sha256" in vars(mod)  # kept: later uses do not look again
    assert mod.sha256 is first


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="nosuch"):
        lean.nosuch  # noqa: B018


def test_first_module_needs_its_public_fallback():
    with pytest.raises(ImportError):
        lean.first_module("_pyruntime_nosuch", "pyruntime_nosuch_either")
    assert lean.first_module("_pyruntime_nosuch", "json") is json


def _cache_path(blocked: list[str]) -> str:
    code = ("import sys\n"
            f"for m in {blocked!r}: sys.modules[m] = None\n"
            "from pyruntime.seccomp import compile as seccomp\n"
            "print(seccomp._cache_path('/c', {'defaultAction': 'SCMP_ACT_ALLOW', 'syscalls': []}))\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def test_the_seccomp_cache_key_does_not_depend_on_the_hash_module():
    paths = {_cache_path(b) for b in ([], ["_sha2"], ["_sha2", "_sha256"])}
    assert len(paths) == 1, paths
    assert paths.pop().endswith(".bpf")
