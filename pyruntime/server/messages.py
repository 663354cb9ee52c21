"""The server's side of the messages (wire.py): framing, field checks, refusals."""
from __future__ import annotations

import os

from pyruntime.lean import fdpass, jsonio
from pyruntime.server import wire


class Refused(Exception):
    """The client should run this command in-process (the reason is for --debug)."""


def send(conn, kind, **fields) -> None:
    conn.send(jsonio.dumps(dict(fields, type=kind)).encode())


def recv(conn, *kinds: str) -> tuple[dict, list[int]]:
    data, fds = fdpass.recv(conn, wire.MAX_MSG)
    try:
        if not data:
            raise EOFError
        try:
            msg = jsonio.loads(data)
        except (ValueError, RecursionError):
            raise Refused("not a message") from None
        if not isinstance(msg, dict) or msg.get("type") not in kinds:
            raise Refused(f"expected a {' or '.join(kinds)} message")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return msg, fds


def field(msg: dict, name: str, kind, check=None):
    v = msg.get(name)
    if type(v) is not kind or (check is not None and not check(v)):
        raise Refused(f"bad field {name!r}: {v!r}")
    return v


def parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return -1
    return int(stat[stat.rindex(b")") + 2:].split()[1])
