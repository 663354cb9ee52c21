"""checkpoint/restore through CRIU's RPC service (`criu swrk`), as runc and crun drive it:
rpc.py the protobuf messages, swrk.py one conversation, mounts.py the external mounts,
dump.py `checkpoint`, restore.py `restore`. Only those two and `features` (criu_works,
below, which needs no protobuf) import this package."""


def criu_works(criu: str | None = None) -> bool:
    """`features`' test: a criu that passes `criu check`, and the protobuf package."""
    import importlib.util
    import shutil
    import subprocess
    path = shutil.which(criu or "criu")
    if not path or importlib.util.find_spec("google.protobuf") is None:
        return False
    try:
        # -o: a log-file set in /etc/criu/default.conf would land in our caller's cwd
        return subprocess.run([path, "check", "-o", "/dev/null"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
