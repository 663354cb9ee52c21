"""OCI hooks: run each with the container state on stdin, its args, env and timeout."""
from __future__ import annotations

import os
import select
import time

from pyruntime.lean import signal
from pyruntime.lean import jsonio
from pyruntime.errors import RuntimeFailure


def run(kind: str, hooks: list, state: dict, cwd: str | None = None) -> None:
    """Run hooks of one kind in order; the first failure raises (the caller decides whether
    that is fatal: poststart and poststop only warn and go on, see run_all_warn). A hook runs
    in our cwd, as runc's do, or in `cwd` (the warm server's: its client's)."""
    payload = jsonio.dumps(state).encode()
    for i, hook in enumerate(hooks):
        _run_one(f"hooks.{kind}[{i}]", hook, payload, cwd)


def run_warn(kind: str, hooks: list, state: dict, warn) -> None:
    payload = jsonio.dumps(state).encode()
    for i, hook in enumerate(hooks):
        try:
            _run_one(f"hooks.{kind}[{i}]", hook, payload)
        except RuntimeFailure as e:
            warn(str(e))


def _get(hook, key):
    return hook[key] if isinstance(hook, dict) else getattr(hook, key)


def _run_one(where: str, hook, payload: bytes, cwd: str | None = None) -> None:
    path, args, env, timeout = (_get(hook, k) for k in ("path", "args", "env", "timeout"))
    args = args or [path]
    r, w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(r, 0)
            os.dup2(err_w, 2)
            # Hooks run detached from the container's stdio, like runc's: stdout goes to stderr.
            os.dup2(err_w, 1)
            os.closerange(3, 65536)
            if cwd is not None:
                os.chdir(cwd)
            os.execve(path, args, dict(e.split("=", 1) for e in env or []))
        except OSError as e:
            os.write(2, f"exec {path}: {e.strerror}".encode())
        finally:
            os._exit(127)
    os.close(r)
    os.close(err_w)
    try:
        os.write(w, payload)
    except OSError:
        pass  # the hook did not read its stdin: not an error
    os.close(w)
    output = b""
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([err_r], [], [], wait)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(err_r)
            raise RuntimeFailure(f"{where} ({path}): timed out after {timeout}s")
        chunk = os.read(err_r, 65536)
        if not chunk:
            break
        output += chunk[:4096]
    os.close(err_r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        detail = output.decode(errors="replace").strip()
        # runc's (Go's) wording, which people and tools match: "signal: bad system call"
        how = f"exit status {code}" if code > 0 else \
            f"signal: {(signal.strsignal(-code) or str(-code)).lower()}"
        raise RuntimeFailure(f"error running hook {where} ({path}): {how}" +
                             (f": {detail}" if detail else ""))
