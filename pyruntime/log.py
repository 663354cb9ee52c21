"""Logging to --log in runc's shape: text lines, or JSON lines {"level","msg","time"}.

containerd shows the last `level == "error"` line of this file to the user, so the file is
opened first thing and every error goes there as well as to stderr.
"""
from __future__ import annotations

import os
import sys
import time

from pyruntime.lean import jsonio

# Plain fds written with one os.write a line, no file objects: a file object's lock, held by
# one thread of the warm server while another forks, would stay held in the child for good.
_file = -1
_json = False
_debug = False
# --debug without --log: runc writes the debug lines to stderr. A dup taken at setup, because
# the init's fd 2 later becomes the container's console, which must not get them.
_debug_out = -1


def setup(path: str | None, fmt: str = "text", debug: bool = False) -> None:
    global _file, _json, _debug, _debug_out
    _json, _debug = fmt == "json", debug
    if path:
        try:
            _file = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            print(f"pyruntime: cannot open log file {path}: {e.strerror}", file=sys.stderr)
    if debug and _file < 0:
        try:
            _debug_out = os.dup(2)  # (close-on-exec)
        except OSError:
            pass


def now_rfc3339() -> str:
    """UTC, nanoseconds: the time of log lines and the state's `created`, as runc writes them."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def _write(level: str, msg: str, out: int = -1) -> None:
    out = out if out >= 0 else _file
    if out < 0:
        return
    if _json:  # as logrus's: Go's encoding/json
        line = jsonio.go_dumps({"level": level, "msg": msg, "time": now_rfc3339()})
    else:  # logrus's text: the message quoted (and escaped) as Go's %q does
        line = f'time="{now_rfc3339()}" level={level} msg={go_q(msg)}'
    try:
        os.write(out, (line + "\n").encode("utf-8", "backslashreplace"))
    except OSError:
        pass


_GO_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "\v": "\\v", '"': '\\"', "\\": "\\\\"}


def go_q(s: str) -> str:
    """s as Go's %q (strconv.Quote) writes it: what Go counts printable (Python's
    isprintable is the same classes) as it is, the rest escaped; a byte that was not UTF-8
    (a surrogate escape, as in an undecodable path) as \\xNN, as Go shows it."""
    if s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'
    out = []
    for c in s:
        n = ord(c)
        if c in _GO_SHORT:
            out.append(_GO_SHORT[c])
        elif c.isprintable():
            out.append(c)
        elif n < 0x80 or 0xDC80 <= n <= 0xDCFF:
            out.append(f"\\x{n & 0xFF:02x}")
        elif 0xD800 <= n <= 0xDFFF:
            out.append("\\ufffd")
        else:
            out.append(f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
    return '"' + "".join(out) + '"'


def error(msg: str) -> None:
    _write("error", msg)
    print(f"pyruntime: {msg}", file=sys.stderr)


def warning(msg: str) -> None:
    lines = getattr(_capture, "lines", None) if _capture is not None else None
    if lines is not None:
        lines.append(msg)
        return
    _write("warning", msg)
    print(f"pyruntime: warning: {msg}", file=sys.stderr)


def debug(msg: str, stage: int | None = None) -> None:
    """One runc-style debug line per setup step (--debug): where a slow or failing start
    stands is then visible, in every process that sets the container up. As runc's: only
    the namespace setup (runc's nsexec, in C) says which process, as `nsexec-STAGE[pid]`;
    the init's own lines say no pid (its pid in its namespace, 1, would tell nothing: the
    host pid is in the parent's "init forked" line)."""
    if _debug:
        if stage is not None:
            msg = f"nsexec-{stage}[{os.getpid()}]: {msg}"
        _write("debug", msg, _file if _file >= 0 else _debug_out)


def drop_stderr_copy() -> None:
    """For a process that outlives the command (the init blocked until `start`) and no
    longer has the caller's stderr as its own: holding a copy would keep the caller from
    seeing EOF on it."""
    global _debug_out
    if _debug_out >= 0:
        try:
            os.close(_debug_out)
        except OSError:
            pass
        _debug_out = -1


def fds() -> tuple[int, ...]:
    """The fds this module writes to (a child that closes the others keeps these)."""
    return tuple(fd for fd in (_file, _debug_out) if fd >= 0)


def close() -> None:
    global _file, _debug_out
    for fd in (_file, _debug_out):
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
    _file = _debug_out = -1


# The warm server's requests run in threads: each one's warnings go back to its client.
_capture = None


def capture_warnings(local) -> None:
    global _capture
    _capture = local


def capture_start() -> list:
    lines = _capture.lines = []
    return lines


def capture_end() -> None:
    _capture.lines = None
