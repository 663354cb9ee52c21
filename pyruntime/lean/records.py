"""@record: the part of dataclasses that the parsed config uses, declared the same way.

`import dataclasses` pulls in inspect, re, enum and tokenize, and @dataclass exec()s generated
source for every class: together the largest single cost of `create` and `exec`, paid on every
call. A record is written exactly like a dataclass (annotated fields, defaults,
field(default_factory=...)) and gets __init__ (positional or keyword), __repr__ and __eq__;
asdict() works as dataclasses.asdict does.
"""
from __future__ import annotations


class field:  # noqa: N801 - named like dataclasses.field, which it stands for
    def __init__(self, default_factory):
        self.default_factory = default_factory


_MISSING = object()


def record(cls):
    names = tuple(cls.__dict__.get("__annotations__", {}))
    defaults = {}
    for n in names:
        d = cls.__dict__.get(n, _MISSING)
        if d is not _MISSING:
            defaults[n] = d
            if isinstance(d, field):
                delattr(cls, n)

    def __init__(self, *args, **kw):
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__}() takes {len(names)} arguments, got {len(args)}")
        for n, v in zip(names, args):
            if n in kw:
                raise TypeError(f"{cls.__name__}() got multiple values for {n!r}")
            kw[n] = v
        for n in names:
            if n in kw:
                v = kw.pop(n)
            elif n in defaults:
                v = defaults[n]
                if isinstance(v, field):
                    v = v.default_factory()
            else:
                raise TypeError(f"{cls.__name__}() missing argument {n!r}")
            setattr(self, n, v)
        if kw:
            raise TypeError(f"{cls.__name__}() got unexpected arguments {sorted(kw)}")

    def __repr__(self):
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{cls.__name__}({inner})"

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in names)

    cls.__init__, cls.__repr__, cls.__eq__ = __init__, __repr__, __eq__
    cls.__hash__ = None  # mutable, like a dataclass with eq=True
    cls._record_fields = names
    return cls


def asdict(obj):
    """A record as plain dicts and lists, recursively (records inside lists and dicts too)."""
    if hasattr(type(obj), "_record_fields"):
        return {n: asdict(getattr(obj, n)) for n in type(obj)._record_fields}
    if isinstance(obj, (list, tuple)):
        return type(obj)(asdict(v) for v in obj)
    if isinstance(obj, dict):
        return {k: asdict(v) for k, v in obj.items()}
    return obj


_TAG = "\x00record"
_SET = "\x00set"


def to_plain(obj):
    """A record as JSON-able values that from_plain() turns back into the same records (the
    warm server hands the parsed config to the container's init this way)."""
    cls = type(obj)
    if hasattr(cls, "_record_fields"):
        return {_TAG: f"{cls.__module__}:{cls.__qualname__}",
                **{n: to_plain(getattr(obj, n)) for n in cls._record_fields}}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return {_SET: sorted(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def from_plain(data, allowed: tuple[str, ...]):
    """to_plain()'s inverse, for record classes of the modules in `allowed` only."""
    if isinstance(data, list):
        return [from_plain(v, allowed) for v in data]
    if not isinstance(data, dict):
        return data
    if _SET in data:
        return set(data[_SET])
    if _TAG not in data:
        return {k: from_plain(v, allowed) for k, v in data.items()}
    module, _, name = data[_TAG].partition(":")
    if module not in allowed:
        raise ValueError(f"record class {data[_TAG]!r} is not one this message may carry")
    cls = getattr(__import__(module, fromlist=[name]), name)
    if not hasattr(cls, "_record_fields"):
        raise ValueError(f"{data[_TAG]!r} is not a record class")
    return cls(**{k: from_plain(v, allowed) for k, v in data.items() if k != _TAG})
