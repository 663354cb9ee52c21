"""The command line, in runc's shape: `pyruntime [global flags] COMMAND [flags] ARGS`.

Each command lives in pyruntime/cli/commands/<name>.py with configure(parser) and main(opts, ctx);
only the one being run is imported, so `state` never pays for what `run` needs.
"""
from __future__ import annotations

import sys

from pyruntime import SPEC_VERSION, __version__, log
from pyruntime.errors import RuntimeFailure

COMMANDS = {
    "checkpoint": "checkpoint a running container (needs CRIU)",
    "create": "create a container",
    "delete": "delete any resources held by the container",
    "demo": "run a demo container from a built-in busybox bundle (not a runc command)",
    "events": "display container events such as OOM notifications, cpu, memory, and IO usage",
    "exec": "execute new process inside the container",
    "features": "show the enabled features",
    "kill": "kill sends the specified signal (default: SIGTERM) to the container's init process",
    "list": "lists containers started by pyruntime with the given root",
    "pause": "pause suspends all processes inside the container",
    "ps": "ps displays the processes running inside a container",
    "restore": "restore a container from a previous checkpoint (needs CRIU)",
    "resume": "resumes all processes that have been previously paused",
    "run": "create and run a container",
    "server": "serve create and run for --root from a warm process (not a runc command)",
    "spec": "create a new specification file",
    "start": "executes the user defined process in a created container",
    "state": "output the state of a container",
    "update": "update container resource constraints",
    "validate": "check a bundle's config.json against the runtime-spec JSON Schema",
}
GLOBAL_VALUE_FLAGS = {"root", "log", "log-format", "rootless", "criu"}
GLOBAL_BOOL_FLAGS = {"debug", "systemd-cgroup"}
# Commands whose first cgroup move would otherwise wait for an RCU grace period (see
# cgroups.common.prime_attach_lock), where the parent still moves its child by pid: with the
# systemd driver or rootless. Elsewhere the child needs no such move (cgroups/placement.py),
# and priming would cost: its move holds cgroup_mutex through the wait (our mkdirs queue
# behind it) and its thread, while it lives, keeps clone3 out.
MOVE_A_CHILD_INTO_A_CGROUP = ("create", "run", "exec")


class Context:
    """The global flags, as the commands see them (rootless: resolved to a bool)."""
    root = ""
    log: str | None = None
    log_format = "text"
    debug = False
    systemd_cgroup = False
    rootless = "auto"


def _split_global(argv: list[str]) -> tuple[Context, list[str]]:
    """Parse the global flags that precede the command (--flag v, --flag=v, -flag v)."""
    ctx = Context()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if name in ("v", "version"):
            print(f"runc version {__version__}-pyruntime\ncommit: pyruntime-{__version__}\n"
                  f"spec: {SPEC_VERSION}")
            raise SystemExit(0)
        if name in ("h", "help"):
            _usage(sys.stdout)
            raise SystemExit(0)
        if name in GLOBAL_BOOL_FLAGS:
            val = value.lower() not in ("false", "0") if eq else True
            setattr(ctx, name.replace("-", "_"), val)
        elif name in GLOBAL_VALUE_FLAGS:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise RuntimeFailure(f"flag needs an argument: {arg}")
                value = argv[i]
            setattr(ctx, name.replace("-", "_"), value)
        else:
            raise RuntimeFailure(f"flag provided but not defined: {arg}")
        i += 1
    if ctx.log_format not in ("text", "json"):
        raise RuntimeFailure(f"invalid --log-format {ctx.log_format!r}: want text or json")
    from pyruntime.lifecycle import rootless
    ctx.rootless = rootless.resolve(ctx.rootless)
    if not ctx.root:
        ctx.root = rootless.default_root()
    return ctx, argv[i:]


GLOBAL_HELP = [
    ("--debug", "enable debug logging"),
    ("--log value", "set the log file to write runtime logs to (default: stderr)"),
    ("--log-format value", "set the log format ('text' (default), or 'json')"),
    ("--root value", 'root directory for storage of container state (default: "/run/pyruntime", '
                     'or "$XDG_RUNTIME_DIR/pyruntime" for a rootless caller)'),
    ("--systemd-cgroup", "enable systemd cgroup support: cgroupsPath is slice:prefix:name"),
    ("--rootless value", "rootless mode: only delegated cgroups, no device rules, id maps "
                         "through newuidmap ('true', 'false', or 'auto' (default))"),
    ("--help, -h", "show help"),
    ("--version, -v", "print the version"),
]


def _usage(out) -> None:
    """The program's help in urfave/cli's shape, as runc prints it (tools and runc's tests
    read its first lines)."""
    w = max(map(len, COMMANDS)) + 2
    out.write("NAME:\n   runc - Open Container Initiative runtime (pyruntime, in Python)\n\n"
              "USAGE:\n   runc [global options] command [command options] [arguments...]\n\n"
              f"VERSION:\n   {__version__}-pyruntime\n   spec: {SPEC_VERSION}\n\nCOMMANDS:\n")
    for name, text in COMMANDS.items():
        out.write(f"   {name:<{w}}{text}\n")
    out.write(f"   {'help, h':<{w}}Shows a list of commands or help for one command\n\n"
              "GLOBAL OPTIONS:\n")
    gw = max(len(f) for f, _ in GLOBAL_HELP) + 2
    for flag, text in GLOBAL_HELP:
        out.write(f"   {flag:<{gw}}{text}\n")


def _no_help_topic(name: str) -> int:
    log.error(f"No help topic for '{name}'")
    return 3  # urfave/cli's exit code, as runc's


def normalize_flags(args: list[str], long_flags: set[str]) -> list[str]:
    """runc's parser accepts -flag for --flag; options.Parser does not, so rewrite known ones."""
    out = []
    for a in args:
        if a == "--":
            out.extend(args[len(out):])
            break
        if a.startswith("-") and not a.startswith("--") and len(a) > 2:
            name = a[1:].split("=", 1)[0]
            if name in long_flags:
                a = "-" + a
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        ctx, rest = _split_global(argv)
    except RuntimeFailure as e:
        print(f"pyruntime: {e}", file=sys.stderr)
        return 2
    log.setup(ctx.log, ctx.log_format, ctx.debug)
    if not rest:
        _usage(sys.stderr)
        return 2
    name = rest[0]
    if name in ("help", "h"):
        if len(rest) == 1:
            _usage(sys.stdout)
            return 0
        if rest[1] not in COMMANDS:
            return _no_help_topic(rest[1])
        name, rest = rest[1], [rest[1], "--help"]
    if name not in COMMANDS:
        return _no_help_topic(name)
    # exec's process may itself exit 1: the runtime's own failure must stay distinguishable
    # (containerd relies on it), so exec fails with 255, as runc's does
    failed = 255 if name == "exec" else 1
    try:
        if name in MOVE_A_CHILD_INTO_A_CGROUP and (ctx.systemd_cgroup or ctx.rootless):
            # as early as we can: the move's lock wait then overlaps the imports and preparation
            from pyruntime.cgroups.common import prime_attach_lock
            prime_attach_lock()
        from pyruntime.cli.options import Parser
        # __import__, not importlib.import_module: the importlib package is one more import a call
        module = getattr(__import__("pyruntime.cli.commands", fromlist=[name]), name)
        parser = Parser(prog=f"pyruntime {name}", description=COMMANDS[name],
                        help_name=f"runc {name}")
        module.configure(parser)
        opts = parser.parse_args(normalize_flags(rest[1:], parser.long_flags))
        return module.main(opts, ctx) or 0
    except RuntimeFailure as e:
        log.error(str(e))
        return failed
    except KeyboardInterrupt:
        return 130
    except OSError as e:  # one the command did not name itself: still say which file and why
        where = f" {e.filename}" if e.filename else ""
        log.error(f"{name}:{where}: {e.strerror or e}")
        return 1
    except MemoryError:
        log.error(f"{name}: out of memory")
        return 1
    except RecursionError:
        log.error(f"{name}: input nested too deeply")
        return 1
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    except ModuleNotFoundError as e:  # a dependency not installed for this interpreter
        log.error(f"{sys.executable} cannot import {e.name}: install pyruntime's dependencies "
                  f"for it ({sys.executable} -m pip install pyruntime)")
        return 1
    except Exception as e:  # a bug: still one line for the user, the traceback only with --debug
        if ctx.debug:
            import traceback
            traceback.print_exc()
        log.error(f"internal error: {type(e).__name__}: {e}")
        return failed
    finally:
        log.close()


def run() -> None:
    """Entry point: main(), then leave without tearing the interpreter down (module and GC
    teardown is pure cost for a process that exits anyway)."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    import os
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    run()
