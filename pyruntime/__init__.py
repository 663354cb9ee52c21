"""pyruntime: an OCI runtime in Python, a drop-in replacement for runc."""

__version__ = "0.1.0"
SPEC_VERSION = "1.3.0"
