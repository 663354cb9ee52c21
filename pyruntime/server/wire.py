"""What the warm server and its clients agree on: where the socket is, the version check, and
the messages (JSON over SOCK_SEQPACKET; fds as SCM_RIGHTS). Builtin modules only.

    client                                   server
    CREATE id, bundle, version .. ----------> checks the peer, the version, the config (or
                                              REFUSED reason: the client runs in-process; or
                                              ERROR: the config's error, as in-process)
           <------------------- GO            the cgroups exist: tasks=<v1 dirs>, cgroup2=<dir>
    fork the init (clone3 into cgroup2, new pid namespace; it writes "0" to each v1 tasks)
    INIT pid, placed + fds: stdin, stdout, --> checks the init is the client's child (and puts
      stderr, the init's channel               it into cgroup2 unless placed), sets it up
                                               (the init's own messages: lifecycle/channel.py)
           <------------------- CREATED       (or ERROR; EOF: the server died)

    exec: as create, with EXEC (the container, the process, runc's flags) for CREATE, and
    the client's child the bootstrap child (no new pid namespace), to which the
    server sends PLAN (lifecycle/channel.py); EXECED pid=<the process> for CREATED.
"""
import sys

from pyruntime import __version__

PROTOCOL = 2  # 2: the init's PROCFS (lifecycle/channel.py)
# A client talks only to a server of its own build and interpreter: an upgraded package
# never uses an old server (nor an old client a new one).
VERSION = f"{__version__}/{PROTOCOL}/{sys.implementation.cache_tag}"
DIR = "@server"  # '@' is no container id's: never a state dir
SOCK = "sock"
MAX_MSG = 1 << 16

CREATE = "create"
REFUSED = "refused"
EXEC = "exec"
EXECED = "execed"
GO = "go"
INIT = "init"
CREATED = "created"
ERROR = "error"  # the channel's: lifecycle/channel.py ERROR


def socket_path(root: str) -> str:
    return f"{root}/{DIR}/{SOCK}"
