"""Check config.json, state and features documents against our runtime-spec v1.3.0 schemas.

Each problem comes back as one line, ``config.json: <json.path[index]>: <value> <problem>``
(the format of :class:`pyruntime.errors.ConfigError`), e.g.::

    config.json: linux.namespaces[2].type: "pidd" is not one of ["pid", "network", ...]

jsonschema is slow to import, so it is imported inside the functions only: importing
this module stays cheap, and nothing on the hot path should call into it.

The schemas live in ``spec/`` beside the package (an editable install); a wheel would carry
them as package data in ``pyruntime/schemas/``, which is looked at first.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

from pyruntime.errors import MISSING, ConfigError

SCHEMA_BASE = "https://pyruntime.invalid/spec/"
SCHEMA_FILES = ("config.schema.json", "state.schema.json", "features.schema.json")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT_RANGES = {"int32", "int64", "uint16", "uint32", "uint64"}

_validators: dict[str, Any] = {}


# ---------------------------------------------------------------- schema loading

def schema_dir() -> Path:
    """The directory holding the *.schema.json files."""
    here = Path(__file__).resolve().parents[1]  # the package: pyruntime/oci/ -> pyruntime/
    for candidate in (here / "schemas", here.parent / "spec"):
        if (candidate / "config.schema.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"runtime-spec schemas not found in {here / 'schemas'} or {here.parent / 'spec'}")


def load_schema(name: str) -> dict:
    with open(schema_dir() / name, encoding="utf-8") as f:
        return json.load(f)


def _validator(name: str, fragment: str | None = None):
    """A cached Draft 2020-12 validator for schema file `name` (or one of its $defs)."""
    key = f"{name}#{fragment or ''}"
    v = _validators.get(key)
    if v is not None:
        return v
    from jsonschema import Draft202012Validator

    schemas = {SCHEMA_BASE + fname: load_schema(fname) for fname in SCHEMA_FILES}
    ref = {"$ref": f"{SCHEMA_BASE}{name}#/$defs/{fragment}"} if fragment else None
    try:
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012
    except ImportError:  # jsonschema < 4.18 (e.g. Debian 12's python3-jsonschema 4.10)
        from jsonschema import RefResolver
        schema = schemas[SCHEMA_BASE + name]
        resolver = RefResolver(SCHEMA_BASE + name, schema, store=schemas)
        v = Draft202012Validator(ref or schema, resolver=resolver)
    else:
        registry = Registry().with_resources(
            (uri, Resource.from_contents(contents, default_specification=DRAFT202012))
            for uri, contents in schemas.items())
        v = Draft202012Validator(ref or schemas[SCHEMA_BASE + name], registry=registry)
    _validators[key] = v
    return v


# ---------------------------------------------------------------- formatting

def format_path(parts: Iterable[Any]) -> str:
    """["linux", "namespaces", 2, "type"] -> 'linux.namespaces[2].type'.

    Keys that are not plain identifiers (sysctl names, annotation keys, ...) are quoted:
    linux.sysctl["net.ipv4.ip_forward"].
    """
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _IDENT.match(p):
            out += f".{p}" if out else p
        else:
            out += f"[{json.dumps(p)}]"
    return out or "(root)"


def _line(file: str, path: str, value: Any, problem: str) -> str:
    return str(ConfigError(path, MISSING if value is _ABSENT else value, problem, file=file))


_ABSENT = object()


def _type_name(t: Any) -> str:
    names = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "a boolean", "null": "null"}
    if isinstance(t, list):
        return " or ".join(names.get(x, x) for x in t)
    return names.get(t, str(t))


def _enum_text(values: list) -> str:
    shown = ", ".join(json.dumps(v) for v in values)
    return f"[{shown}]"


def _problems(err) -> list[tuple[list, Any, str]]:
    """[(path parts, offending value, problem text)] for one jsonschema error."""
    if err.validator == "required":
        inst = err.instance if isinstance(err.instance, dict) else {}
        return [(list(err.absolute_path) + [name], _ABSENT, "is required")
                for name in err.validator_value if name not in inst]
    return [_problem(err)]


def _problem(err) -> tuple[list, Any, str]:
    """(path parts, offending value, problem text) for one jsonschema error."""
    path = list(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    kw = err.validator
    value = err.instance
    custom = schema.get("x-error")
    in_names = "propertyNames" in err.relative_schema_path or "propertyNames" in err.absolute_schema_path

    if kw == "dependentRequired":
        for prop, deps in err.validator_value.items():
            if prop in err.instance:
                for dep in deps:
                    if dep not in err.instance:
                        return path + [dep], _ABSENT, f"is required when {prop} is set"
        return path, value, err.message
    if in_names:
        path = path + [value]  # point at the offending key itself
    if kw == "type":
        text = f"is not {_type_name(err.validator_value)}"
        types = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        if isinstance(value, bool) and ("integer" in types or "number" in types):
            text += " (booleans are not numbers)"
        return path, value, text
    if custom:
        return path, value, custom
    if kw == "enum":
        return path, value, f"is not one of {_enum_text(err.validator_value)}"
    if kw == "const":
        return path, value, f"is not {json.dumps(err.validator_value)}"
    if kw in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        title = schema.get("title")
        if title in _INT_RANGES:
            return path, value, f"is out of range for {title} ({schema['minimum']}..{schema['maximum']})"
        if title:
            lo, hi = schema.get("minimum"), schema.get("maximum")
            return path, value, f"is out of range for the {title} ({lo}..{hi})"
        word = "less than the minimum" if kw.startswith(("minimum", "exclusiveMinimum")) else "greater than the maximum"
        return path, value, f"is {word} of {err.validator_value}"
    if kw == "pattern":
        return path, value, f"does not match {err.validator_value!r}"
    if kw == "minItems":
        return path, value, f"must have at least {err.validator_value} item(s)"
    if kw == "minLength":
        return path, value, "must not be empty" if err.validator_value == 1 else f"is shorter than {err.validator_value}"
    if kw == "maxLength":
        return path, value, f"is longer than {err.validator_value} characters"
    if kw in ("anyOf", "oneOf"):
        from jsonschema.exceptions import best_match
        inner = best_match(err.context) if err.context else None
        if inner is not None:
            return _problems(inner)[0]
    return path, value, err.message


def _doc_order(doc) -> dict[tuple, int]:
    """Position of every node of `doc` in document order, keyed by its path."""
    order: dict[tuple, int] = {}
    stack = [((), doc)]
    while stack:
        path, node = stack.pop()
        order[path] = len(order)
        if isinstance(node, dict):
            kids = [(path + (k,), v) for k, v in node.items()]
        elif isinstance(node, list):
            kids = [(path + (i,), v) for i, v in enumerate(node)]
        else:
            continue
        stack.extend(reversed(kids))
    return order


def _report(doc, problems: list[tuple[list, Any, str]], file: str) -> list[str]:
    """Format (path, value, problem) triples as lines, in document order, without repeats."""
    order = _doc_order(doc)

    def key(item):
        parts = tuple(item[0])
        while parts not in order:  # a missing property sorts with its parent
            parts = parts[:-1]
        return (order[parts], len(item[0]))

    seen: set[str] = set()
    out = []
    for parts, value, problem in sorted(problems, key=key):
        line = _line(file, format_path(parts), value, problem)
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


def _schema_problems(validator, doc) -> list[tuple[list, Any, str]]:
    out = []
    for err in validator.iter_errors(doc):
        out.extend(_problems(err))
    return out


# ---------------------------------------------------------------- semantic checks

def _duplicates(items, key: str):
    """Yield (index, value) for each entry of `items` whose `key` repeats an earlier one."""
    seen = set()
    if not isinstance(items, list):
        return
    for i, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get(key), str):
            if item[key] in seen:
                yield i, item[key]
            seen.add(item[key])


def _semantic_process(process: Any, prefix: list) -> list[tuple[list, Any, str]]:
    if not isinstance(process, dict):
        return []
    return [(prefix + ["rlimits", i, "type"], t, "is a duplicate rlimit type (runtimes MUST reject it)")
            for i, t in _duplicates(process.get("rlimits"), "type")]


def _semantic(config: dict) -> list[tuple[list, Any, str]]:
    """MUSTs the schema cannot express."""
    out = _semantic_process(config.get("process"), ["process"])
    linux = config.get("linux")
    if isinstance(linux, dict):
        out += [(["linux", "namespaces", i, "type"], t, "is a duplicate namespace type (runtimes MUST reject it)")
                for i, t in _duplicates(linux.get("namespaces"), "type")]
    return out


# ---------------------------------------------------------------- public API

def validate_config(config: Any, file: str = "config.json") -> list[str]:
    """Every problem in a parsed config.json, one line each; [] when it is valid."""
    problems = _schema_problems(_validator("config.schema.json"), config)
    if isinstance(config, dict):
        problems += _semantic(config)
    return _report(config, problems, file)


def validate_process(process: Any, file: str = "process.json") -> list[str]:
    """Problems in an exec --process document (an OCI `process` object)."""
    problems = _schema_problems(_validator("config.schema.json", "process"), process)
    problems += _semantic_process(process, [])
    return _report(process, problems, file)


def validate_resources(resources: Any, file: str = "resources") -> list[str]:
    """Problems in a LinuxResources document (update --resources)."""
    return _report(resources, _schema_problems(_validator("config.schema.json", "resources"), resources), file)


def validate_state(state: Any, file: str = "state") -> list[str]:
    """Problems in a container state document (runtime.md, plus runc's extras)."""
    return _report(state, _schema_problems(_validator("state.schema.json"), state), file)


def validate_features(features: Any, file: str = "features") -> list[str]:
    """Problems in a features document (features.md)."""
    return _report(features, _schema_problems(_validator("features.schema.json"), features), file)


def validate_bundle(bundle_dir: str | os.PathLike) -> list[str]:
    """Problems with the bundle at `bundle_dir`: its config.json and its root filesystem."""
    bundle = Path(bundle_dir)
    cfg_path = bundle / "config.json"
    if not bundle.is_dir():
        return [f"{bundle}: bundle directory does not exist"]
    try:
        raw = cfg_path.read_bytes()
    except FileNotFoundError:
        return [f"config.json: no such file or directory in bundle {bundle}"]
    except OSError as e:
        return [f"config.json: cannot read {cfg_path}: {e.strerror or e}"]
    try:
        config = json.loads(raw)
    except UnicodeDecodeError as e:
        return [f"config.json: not valid UTF-8: {e}"]
    except json.JSONDecodeError as e:
        return [f"config.json: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"]

    problems = validate_config(config)
    root = config.get("root") if isinstance(config, dict) else None
    if isinstance(root, dict) and isinstance(root.get("path"), str):
        rootfs = bundle / root["path"]  # an absolute root.path replaces the bundle prefix
        if not rootfs.exists():
            problems.append(_line("config.json", "root.path", root["path"],
                                  f"does not exist ({rootfs}: no such file or directory)"))
        elif not rootfs.is_dir():
            problems.append(_line("config.json", "root.path", root["path"], f"is not a directory ({rootfs})"))
    return problems


def host_check(bundle_dir: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(problems, warnings) of a schema-valid bundle on this host: what `create` would refuse
    (its own checks, then coverage.py's refused fields), and the fields it would ignore."""
    from pyruntime.oci import config as configmod
    from pyruntime.oci.coverage import IGNORED, host_notes
    from pyruntime.errors import RuntimeFailure

    bundle = Path(bundle_dir)
    raw = json.loads((bundle / "config.json").read_bytes())
    problems, warnings = [], []
    from pyruntime.oci.mounts import check_options
    for i, m in enumerate(raw.get("mounts") or []):  # each mount, not only the first bad one
        try:
            check_options(configmod._mount(configmod.Reader(m, f"mounts[{i}]")))
        except RuntimeFailure as e:
            problems.append(str(e))
    try:
        configmod.parse(raw, str(bundle.resolve()))
    except RuntimeFailure as e:
        if str(e) not in problems:
            problems.append(str(e))
    for path, kind, note in host_notes(raw):
        if kind == IGNORED:
            warnings.append(f"config.json: {path}: warning: ignored on this host: {note}")
        elif not any(p.startswith(f"config.json: {path}:") for p in problems):
            problems.append(f"config.json: {path}: refused on this host: {note}")
    return problems, warnings
