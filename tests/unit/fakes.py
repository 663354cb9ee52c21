"""Test doubles of pyruntime's seams, for tests that need neither root nor a rootfs."""
from __future__ import annotations

import itertools
import os
import stat
from types import SimpleNamespace

from pyruntime.linux.syscalls import Sys

DIR = stat.S_IFDIR | 0o755


class RecordingSys:
    """A stand-in for linux.syscalls.Sys that does nothing and records each call as
    (name, args), keyword arguments as a trailing dict. It answers as a kernel would for an
    empty tree where every path exists: fds from a counter, each remembering the path it was
    opened at; fstat/stat from `files` (path -> st_mode, or (st_mode, st_rdev)), a directory
    for any path not listed; nothing is a symlink. Any method of Sys is recorded, so one
    added there can never reach the real kernel from a test."""

    def __init__(self, files: dict | None = None):
        self.calls: list[tuple] = []
        self.files = dict(files or {})
        self.paths: dict[int, str] = {}
        self._fds = itertools.count(1000)
        self._failures: list[tuple] = []
        self._answers: dict = {}
        self.closed: set[int] = set()

    def fail(self, name: str, err: int, when=None) -> None:
        """Make calls of `name` fail with errno `err` (OSError, or the subclass Python maps it
        to), all of them or those for which when(*args) is true."""
        self._failures.append((name, err, when))

    def answer(self, name: str, fn) -> None:
        """Answer calls of `name` with fn(*args, **kwargs) instead of the default."""
        self._answers[name] = fn

    def named(self, *names: str) -> list[tuple]:
        """The calls of these names, in order."""
        return [c for c in self.calls if c[0] in names]

    def where(self, path):
        """A /proc/self/fd/N path as the path fd N was opened at."""
        if isinstance(path, str) and path.startswith("/proc/self/fd/"):
            return self.paths.get(int(path.rsplit("/", 1)[1]), path)
        return path

    def mounts(self, since: int = 0) -> list[tuple]:
        """The mount(2) calls from call number `since` on, as (source, target, fstype, flags,
        data), fd paths resolved."""
        return [(self.where(a[0]), self.where(a[1]), *a[2:4], a[4] if len(a) > 4 else None)
                for name, a in self.calls[since:] if name == "mount"]

    def open_fds(self) -> set[int]:
        """The fds opened and not closed yet."""
        return set(self.paths) - self.closed

    def __getattr__(self, name: str):
        if name.startswith("_") or not callable(getattr(Sys, name, None)):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._call(name, args, kwargs)

    def _call(self, name: str, args: tuple, kwargs: dict):
        self.calls.append((name, args + ((kwargs,) if kwargs else ())))
        for failing, err, when in self._failures:
            if failing == name and (when is None or when(*args, **kwargs)):
                raise OSError(err, self._strerror(name, args, err))
        if name in self._answers:
            return self._answers[name](*args, **kwargs)
        if name == "close":
            self.closed.add(args[0])
        if name in ("open", "openat2", "open_tree"):
            return self._open(self._path(args[0], **kwargs) if name == "open"
                              else self._path(args[1], args[0]))
        if name == "fstat":
            return self._stat(self.paths.get(args[0], ""))
        if name == "stat":
            return self._stat(self._path(args[0], **kwargs))
        if name == "statvfs":
            return SimpleNamespace(f_flag=0)
        if name == "readlink":
            raise OSError(22, os.strerror(22))  # EINVAL: not a symlink
        return None

    @staticmethod
    def _strerror(name: str, args: tuple, err: int) -> str:
        """As the real layer words it: syscalls.py's own calls name themselves and their
        arguments, the os module's give the bare strerror."""
        if getattr(getattr(Sys, name), "__module__", "") == Sys.__module__:
            return f"{name}({', '.join(map(repr, args))}): {os.strerror(err)}"
        return os.strerror(err)

    def _path(self, path: str, dir_fd: int = -100, **_) -> str:
        if isinstance(dir_fd, int) and dir_fd in self.paths and not path.startswith("/"):
            path = os.path.join(self.paths[dir_fd], path)
        return os.path.normpath(os.path.join("/", path))

    def _open(self, path: str) -> int:
        fd = next(self._fds)
        self.paths[fd] = path
        return fd

    def _stat(self, path: str):
        st = self.files.get(path, DIR)
        mode, rdev = st if isinstance(st, tuple) else (st, 0)
        return SimpleNamespace(st_mode=mode, st_rdev=rdev)
