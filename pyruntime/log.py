"""Logging to --log in runc's shape: text lines, or JSON lines {"level","msg","time"}.

containerd shows the last `level == "error"` line of this file to the user, so the file is
opened first thing and every error goes there as well as to stderr.
"""
from __future__ import annotations

import os
import sys
import time

from . import jsonio

_file = None
_json = False
_debug = False


def setup(path: str | None, fmt: str = "text", debug: bool = False) -> None:
    global _file, _json, _debug
    _json, _debug = fmt == "json", debug
    if path:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            _file = os.fdopen(fd, "a", buffering=1)
        except OSError as e:
            print(f"pyruntime: cannot open log file {path}: {e.strerror}", file=sys.stderr)


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def _write(level: str, msg: str) -> None:
    if _file is None:
        return
    if _json:
        line = jsonio.dumps({"level": level, "msg": msg, "time": _now()})
    else:
        line = f'time="{_now()}" level={level} msg="{msg}"'
    try:
        _file.write(line + "\n")
    except OSError:
        pass


def error(msg: str) -> None:
    _write("error", msg)
    print(f"pyruntime: {msg}", file=sys.stderr)


def warning(msg: str) -> None:
    _write("warning", msg)
    print(f"pyruntime: warning: {msg}", file=sys.stderr)


def debug(msg: str) -> None:
    if _debug:
        _write("debug", msg)


def close() -> None:
    global _file
    if _file is not None:
        try:
            _file.close()
        except OSError:
            pass
        _file = None
