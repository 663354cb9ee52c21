"""The hot path's stand-ins for standard-library modules, each chosen once, here.

Every CLI call starts an interpreter, so what it imports is paid on every call. `signal.py` and
`socket.py` only wrap the C modules `_signal` and `_socket` in enums (and importing `enum` costs
milliseconds); `hashlib` loads OpenSSL for a sha256 that CPython's own C module computes alone.
Those C modules are CPython's private API and they do move: 3.12 merged `_sha256` into `_sha2`.
So each stand-in is picked from a list that ends with the public module: an interpreter without
the private one gets the same functions and results, only a slower import. `_thread` needs no
stand-in: it is documented, public API.

    from pyruntime.lean import signal, socket     # at import
    lean.sha256(b"...").hexdigest()      # resolved on first use, then kept
"""
from __future__ import annotations


def first_module(*names: str):
    """The first of `names` that imports; the last is the public fallback and must import."""
    for name in names[:-1]:
        try:
            return __import__(name)
        except ImportError:
            pass
    return __import__(names[-1])


def first_attr(attr: str, *names: str):
    """`attr` of the first of `names` that imports and has it (the last must)."""
    for name in names[:-1]:
        try:
            return getattr(__import__(name), attr)
        except (ImportError, AttributeError):
            pass
    return getattr(__import__(names[-1]), attr)


signal = first_module("_signal", "signal")
socket = first_module("_socket", "socket")

# Looked up lazily: most calls (state, kill, ...) never hash, and each of these is a shared
# library on some builds.
_LAZY = {"sha256": ("sha256", "_sha2", "_sha256", "hashlib")}


def __getattr__(name: str):
    try:
        attr, *modules = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = globals()[name] = first_attr(attr, *modules)
    return value
