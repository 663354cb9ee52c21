"""pyruntime: an OCI runtime in Python, a drop-in replacement for runc."""

__version__ = "0.1.0"
SPEC_VERSION = "1.3.0"


# The Python API (pyruntime/api.py), loaded on first use: the command line, which imports this
# package on every call, never pays for it.
_API = ("Runtime", "ContainerState", "ExecResult", "Event")


def __getattr__(name):
    if name in _API:
        from pyruntime import api
        return getattr(api, name)
    raise AttributeError(f"module 'pyruntime' has no attribute {name!r}")


def __dir__():
    return [*globals(), *_API]
