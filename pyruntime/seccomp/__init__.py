"""linux.seccomp: the filter (libseccomp through ctypes) and the notify agent's socket."""
