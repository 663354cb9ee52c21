"""The parent <-> child channel of `create` and `exec`: JSON messages over SOCK_SEQPACKET."""
from __future__ import annotations

import os

from pyruntime.lean import socket
from pyruntime.lean import jsonio
from pyruntime.errors import RuntimeFailure

# PYRUNTIME_TRACE=1: full tracebacks from the container side on stderr, for debugging. Imported
# up front because nothing can be imported once the process has switched to the container's root.
TRACE = __import__("traceback") if os.environ.get("PYRUNTIME_TRACE") else None


class Channel:
    """JSON messages over a SOCK_SEQPACKET socket; EOF means the peer died."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def send(self, kind: str, **fields) -> None:
        self.sock.send(jsonio.dumps({"type": kind, **fields}).encode())

    def recv(self, expect: str | None = None) -> dict:
        data = self.sock.recv(1 << 16)
        if not data:
            raise RuntimeFailure("the container init exited during setup")
        msg = jsonio.loads(data)
        if msg["type"] == "error":
            raise RuntimeFailure(msg["msg"])
        if expect and msg["type"] != expect:
            raise RuntimeFailure(f"protocol error: expected {expect!r}, got {msg['type']!r}")
        return msg
