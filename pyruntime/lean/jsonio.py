"""JSON for the lifecycle commands, over the C accelerator that the json package itself uses.

Importing `json` compiles regular expressions at import time (json.decoder, json.encoder), which
pulls in `re` and `enum`, on every CLI call. The C scanner and string encoder in `_json`
need neither. Output is the same as json.dumps with its defaults (ensure_ascii, and with indent
the "," / ": " separators); parse errors are json.JSONDecodeError (a ValueError), as with json,
also for input nested deeper than the interpreter's recursion limit.

`_json` is CPython's private module: where it (or its C scanner or encoder) is missing, the
public `json` module serves instead, chosen once here at import.
"""
from __future__ import annotations

try:
    import _json
    if _json.make_scanner is None or _json.make_encoder is None:
        raise ImportError("_json has no C scanner or encoder")
    FAST = True
except (ImportError, AttributeError):
    import json as _public
    FAST = False

_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_WS = " \t\n\r"


class _Context:
    """The settings the C scanner reads: json.JSONDecoder's defaults."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict = {}


def _error(msg: str, s: str, pos: int) -> Exception:
    from json import JSONDecodeError  # only on bad input: the cost moves to the error path
    return JSONDecodeError(msg, s, pos)


def _slow_loads(s: str):
    """json.loads, with a nesting too deep for the interpreter's stack as a JSONDecodeError."""
    import json
    try:
        return json.loads(s)
    except RecursionError:
        raise _error("nested too deeply", s, 0) from None


if FAST:
    _scan = _json.make_scanner(_Context())

    def loads(s: str | bytes):
        if isinstance(s, (bytes, bytearray)):
            s = s.decode()
        i = len(s) - len(s.lstrip(_WS))
        try:
            obj, end = _scan(s, i)
        except StopIteration as e:
            raise _error("Expecting value", s, e.value) from None
        except Exception:
            # On Python 3.11 the C scanner can only raise once json.decoder has been imported
            # (it looks JSONDecodeError up in sys.modules, and returns NULL without an
            # exception if it is not there: a SystemError). Parse again where it can.
            return _slow_loads(s)
        end += len(s[end:]) - len(s[end:].lstrip(_WS))
        if end != len(s):
            raise _error("Extra data", s, end)
        return obj
else:
    def loads(s: str | bytes):
        if isinstance(s, (bytes, bytearray)):
            s = s.decode()
        return _slow_loads(s)


def load(f):
    return loads(f.read())


def _unserializable(o):
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


if FAST:
    # The C encoders json.dumps uses without indent (check_circular off: our data comes from JSON)
    _compact = _json.make_encoder(None, _unserializable, _json.encode_basestring_ascii, None,
                                  ": ", ", ", False, False, True)
    _sorted = _json.make_encoder(None, _unserializable, _json.encode_basestring_ascii, None,
                                 ": ", ", ", True, False, True)
    # Go's encoding/json has no spaces: what runc prints where tools match its output
    _tight = _json.make_encoder(None, _unserializable, _json.encode_basestring_ascii, None,
                                ":", ",", False, False, True)
    _quote = _json.encode_basestring_ascii

    def dumps(obj, indent: int | None = None, sort_keys: bool = False, tight: bool = False) -> str:
        """json.dumps(obj, indent=indent, sort_keys=sort_keys); sort_keys without indent only;
        tight: json.dumps(obj, separators=(",", ":"))."""
        if tight:
            return "".join(_tight(obj, 0))
        if indent is None:
            return "".join((_sorted if sort_keys else _compact)(obj, 0))
        if sort_keys:
            raise ValueError("jsonio.dumps: sort_keys is only supported without indent")
        out: list[str] = []
        _encode(obj, out, indent, 0)
        return "".join(out)
else:
    def dumps(obj, indent: int | None = None, sort_keys: bool = False, tight: bool = False) -> str:
        if indent is not None and sort_keys:
            raise ValueError("jsonio.dumps: sort_keys is only supported without indent")
        if tight:
            return _public.dumps(obj, separators=(",", ":"), default=_unserializable)
        return _public.dumps(obj, indent=indent, sort_keys=sort_keys, default=_unserializable)


def dump(obj, f, indent: int | None = None) -> None:
    f.write(dumps(obj, indent))


def go_dumps(obj, indent: int | None = None) -> str:
    """What runc prints: Go's encoding/json, as json.NewEncoder (no indent) or MarshalIndent
    write it. No spaces without indent; strings as go_quote writes them."""
    out: list[str] = []
    _encode(obj, out, indent, 0, go_quote, ",", ":")
    return "".join(out)


_GO_ESCAPES: dict | None = None


def go_quote(s: str) -> str:
    """A string as Go's encoder writes it: UTF-8, not ASCII escapes; <, >, & and U+2028/9
    escaped (HTML-safe); control characters as \\u00XX but \\n, \\r, \\t; a byte that was
    not UTF-8 (a surrogate escape, as in an undecodable path) as \\ufffd, as Go writes it; any
    other lone surrogate (which Go's decoder makes U+FFFD) as U+FFFD."""
    global _GO_ESCAPES
    if _GO_ESCAPES is None:
        _GO_ESCAPES = {c: f"\\u{c:04x}" for c in (*range(0x20), *map(ord, "<>&"), 0x2028, 0x2029)}
        _GO_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                            ord('"'): '\\"', ord("\\"): "\\\\"})
    q = s.translate(_GO_ESCAPES)
    if not q.isascii():
        try:
            q.encode()
        except UnicodeEncodeError:
            q = "".join(ch if not "\ud800" <= ch <= "\udfff" else
                        "\\ufffd" if "\udc80" <= ch <= "\udcff" else "\ufffd" for ch in q)
    return f'"{q}"'


# The indented form, in Python: json's C encoder has no indent; and Go's form.
def _encode(o, out: list[str], indent: int | None, level: int, quote=None, item_sep=", ",
            key_sep=": ") -> None:
    if isinstance(o, str):
        out.append((quote or _quote)(o))
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, float):
        out.append(_float(o))
    elif isinstance(o, dict):
        _container(out, "{", "}", o.items(), indent, level, True, quote, item_sep, key_sep)
    elif isinstance(o, (list, tuple)):
        _container(out, "[", "]", ((None, v) for v in o), indent, level, False, quote, item_sep,
                   key_sep)
    else:
        _unserializable(o)


def _float(f: float) -> str:
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "Infinity" if f > 0 else "-Infinity"
    return float.__repr__(f)


def _container(out, open_, close, items, indent, level, keyed, quote, item_sep, key_sep) -> None:
    if indent is None:
        sep, inner, end = item_sep, "", ""
    else:
        inner = "\n" + " " * (indent * (level + 1))
        sep, end = "," + inner, "\n" + " " * (indent * level)
    out.append(open_)
    first = True
    for k, v in items:
        out.append(inner if first else sep)
        first = False
        if keyed:
            out.append((quote or _quote)(_key(k)))
            out.append(key_sep if indent is None else ": ")
        _encode(v, out, indent, level + 1, quote, item_sep, key_sep)
    if first:  # empty: "{}" / "[]" as json writes them
        out.append(close)
        return
    out.append(end + close)


def _key(k) -> str:
    if isinstance(k, str):
        return k
    if k is True or k is False or k is None:
        return {True: "true", False: "false", None: "null"}[k]
    if isinstance(k, (int, float)):
        return _float(k) if isinstance(k, float) else int.__repr__(k)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(k).__name__}")
