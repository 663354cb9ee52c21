"""The warm server: `pyruntime server` keeps the package imported, so that `create` and `run`
pay neither the imports nor the config's parsing, while the container's init stays what the
runtimes' callers need: a child of the calling process, which inherits its stdio.

    caller (shim, docker, podman)
      `pyruntime create` = client.py (builtin modules only) ----- request ----> daemon.py
        |                                                                      (a thread)
        | fork, in a new pid namespace:                           create(): the same code
        v                                                         as in-process, with a
      the init (PID 1) <-------- JOIN (namespace fds) ----------  remote.Joiner: its
        joins the namespaces the server prepared,                 bootstrap child joins
        then finishes as any init (setup/init.py become)          the init's pid namespace

Without a server (or for what it does not serve) every command runs in-process, as before.
wire.py holds what both sides must agree on; the socket is <root>/@server/sock.
"""
