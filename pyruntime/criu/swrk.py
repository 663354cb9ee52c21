"""One conversation with `criu swrk 3`: CRIU's RPC service on a SOCK_SEQPACKET socketpair.

The service end is the child's fd 3 and `extra_fds` follow at 4, 5, ... (inherit_fd entries
name them by those numbers). One request goes out; NOTIFY messages (with notify_scripts) are
handed to `notify` and acknowledged; the first other answer ends the call.
"""
from __future__ import annotations

import array
import os
import shutil
import socket

from pyruntime.errors import RuntimeFailure
from pyruntime.criu import rpc

_BUF = 10 * 4096


class CriuError(RuntimeFailure):
    pass


def find(criu: str | None) -> str:
    """The criu binary: --criu PATH, else criu on PATH."""
    name = criu or "criu"
    found = shutil.which(name)
    if not found:
        how = f"--criu {name}: no such executable" if criu else \
            "criu: executable file not found in $PATH"
        raise CriuError(f"{how} (checkpoint/restore need CRIU 3.15 or later: tests/criu-setup.sh "
                        "installs one)")
    return found


def spawn(criu: str, server: socket.socket, extra_fds=(), stdio=None, err_fd=-1) -> int:
    """Start `criu swrk 3` with the server socket at fd 3 and extra_fds from fd 4 on; without
    stdio, /dev/null and err_fd."""
    wanted = [server.fileno(), *extra_fds]
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC) if stdio is None else -1
    stdio = [devnull, devnull, err_fd if err_fd >= 0 else devnull] if stdio is None else \
        list(stdio)
    pid = os.fork()
    if pid == 0:
        try:
            # Out of the way first: a source fd may sit on a number we are about to fill.
            high = [os.dup(fd) for fd in (*stdio, *wanted)]
            for target, fd in enumerate(high):
                os.dup2(fd, target)
            os.closerange(len(high), os.sysconf("SC_OPEN_MAX"))
            os.execv(criu, [criu, "swrk", "3"])
        except OSError as e:
            os.write(2, f"exec {criu}: {e.strerror}\n".encode())
        os._exit(127)
    if devnull >= 0:
        os.close(devnull)
    return pid


def call(criu: str, req, *, extra_fds=(), stdio=None, started=None, notify=None):
    """Send req to a new criu swrk; return (its final criu_resp, the criu pid's exit status).

    started(pid) runs before the request is sent; notify(script, pid, fds) for each NOTIFY."""
    client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # What a criu that dies before its log is set up says (a broken build, a bad config file).
    err_fd = os.memfd_create("criu-stderr", os.MFD_CLOEXEC) if stdio is None else -1
    try:
        pid = spawn(criu, server, extra_fds, stdio, err_fd)
    finally:
        server.close()
    status = None
    what = rpc.REQ_NAME[req.type]
    try:
        if started is not None:
            started(pid)
        while True:
            try:
                if req is not None:
                    client.sendall(req.SerializeToString())
                    req = None
                data, fds = _recv(client)
            except (ConnectionResetError, BrokenPipeError):
                data = b""  # criu went away: its exit status says how
            if not data:
                _, status = os.waitpid(pid, 0)
                said = _last_line(err_fd)
                raise CriuError(f"criu swrk ({criu}) {exited(status)} before it answered "
                                f"the {what} request" + (f": {said}" if said else
                                                         f" (does `{criu} check` pass?)"))
            resp = rpc.Resp()
            resp.ParseFromString(data)
            if resp.type != rpc.REQ_TYPE["NOTIFY"] or not resp.success:
                break
            try:
                if notify is not None:
                    notify(resp.notify.script, resp.notify.pid, fds)
            finally:
                for fd in fds:
                    os.close(fd)
            req = rpc.Req(type=rpc.REQ_TYPE["NOTIFY"], notify_success=True)
    finally:
        client.close()
        if status is None:
            _, status = os.waitpid(pid, 0)
        if err_fd >= 0:
            os.close(err_fd)
    return resp, status


def _last_line(fd: int) -> str:
    if fd < 0:
        return ""
    os.lseek(fd, 0, os.SEEK_SET)
    lines = os.read(fd, 65536).decode(errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


def _recv(sock: socket.socket) -> tuple[bytes, list[int]]:
    ints = array.array("i")
    data, anc, flags, _ = sock.recvmsg(_BUF, socket.CMSG_SPACE(4 * ints.itemsize))
    fds = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            ints.frombytes(payload[: len(payload) - len(payload) % ints.itemsize])
            fds.extend(ints)
    if len(data) == _BUF:
        raise CriuError("criu swrk: an answer larger than the receive buffer")
    return data, fds


def exited(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def features(criu: str, **wanted) -> None:
    """Refuse what this CRIU lacks (FEATURE_CHECK): e.g. mem_track for --pre-dump."""
    req = rpc.Req(type=rpc.REQ_TYPE["FEATURE_CHECK"], features=rpc.Features(**wanted))
    resp, _ = call(criu, req)
    if not resp.success:
        raise CriuError(f"criu feature check failed (errno {resp.cr_errno})")
    missing = [k for k in wanted if not getattr(resp.features, k)]
    if missing:
        flags = {"mem_track": "--pre-dump (memory tracking)", "lazy_pages": "--lazy-pages"}
        raise CriuError(f"{criu} does not support {', '.join(flags.get(m, m) for m in missing)}"
                        " on this kernel")


def failure(what: str, resp, log_path: str) -> CriuError:
    """One line for a failed request: CRIU's own message or its log's first error, and where
    the log is."""
    msg = first_error(log_path)  # cr_errmsg is CRIU's first error, maybe a harmless one
    if not msg and resp is not None and resp.HasField("cr_errmsg"):
        msg = " ".join(resp.cr_errmsg.split())
    errno_part = f" (errno {resp.cr_errno})" if resp is not None and resp.cr_errno else ""
    return CriuError(f"{what} failed{errno_part}: {msg or 'criu reported no error'}; "
                     f"see {log_path}")


def first_error(log_path: str) -> str:
    """The error that made CRIU give up: the first Error line of its log, past the rlimit one
    it logs and goes on after where CAP_SYS_RESOURCE is missing."""
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                if "Error" in line and "rlimit:" not in line:
                    if line.startswith("("):  # "(00.014977) [pid: ]Error ...": noise here
                        line = line.partition(") ")[2]
                        head, sep, rest = line.partition(": ")
                        if sep and head.isdigit():
                            line = rest
                    return line.strip()
    except OSError:
        pass
    return ""
