"""Command-line options of one subcommand: the part of argparse's API the commands use.

argparse costs more than a lifecycle call can afford (it pulls in gettext, locale and shutil
on every call). This parser takes the same add_argument() calls: options with action
store/store_true/append, type, default and choices; positionals with nargs None, "?", "*" and
"..." (the rest of the line, options included). Options may come between positionals until a
"..." positional starts; "--" ends the options; "--name=value" and "-xVALUE" work.
"""
from __future__ import annotations

import sys

REMAINDER = "..."


class UsageError(Exception):
    pass


class Namespace:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self) -> str:
        return f"Namespace({self.__dict__!r})"


class _Arg:
    def __init__(self, names, action="store", default=None, type=None, choices=None,
                 nargs=None, help="", dest=None):
        self.names = names
        self.positional = not names[0].startswith("-")
        longs = [n for n in names if n.startswith("--")]
        self.dest = dest or (names[0] if self.positional else (longs or names)[0].lstrip("-"))
        self.dest = self.dest.replace("-", "_")
        self.action, self.type, self.choices, self.nargs, self.help = \
            action, type, choices, nargs, help
        self.default = [] if default is None and (action == "append" or nargs in ("*", "...")) \
            else default
        if action == "store_true" and default is None:
            self.default = False

    @property
    def label(self) -> str:
        return "/".join(self.names) if not self.positional else self.dest

    def convert(self, value: str):
        if self.type is not None:
            try:
                value = self.type(value)
            except ValueError:
                raise UsageError(f"argument {self.label}: invalid {self.type.__name__} value: "
                                 f"{value!r}") from None
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"argument {self.label}: invalid choice: {value!r} (choose from "
                             f"{', '.join(map(repr, self.choices))})")
        return value


class Parser:
    def __init__(self, prog: str, description: str = "", help_name: str = ""):
        self.prog, self.description, self.help_name = prog, description, help_name
        self._args: list[_Arg] = []
        self._by_name: dict[str, _Arg] = {}

    def add_argument(self, *names: str, **kw) -> None:
        a = _Arg(names, **kw)
        self._args.append(a)
        for n in names if not a.positional else ():
            self._by_name[n] = a

    @property
    def long_flags(self) -> set[str]:
        return {n[2:] for n in self._by_name if n.startswith("--")}

    def parse_args(self, argv: list[str]) -> Namespace:
        try:
            return self._parse(argv)
        except UsageError as e:
            print(f"{self.usage()}\n{self.prog}: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None

    def _parse(self, argv: list[str]) -> Namespace:
        values = {a.dest: (list(a.default) if isinstance(a.default, list) else a.default)
                  for a in self._args}
        words: list[str] = []
        i, rest = 0, None
        while i < len(argv):
            arg = argv[i]
            i += 1
            if rest is not None:
                rest.append(arg)
                continue
            if arg == "--":
                words.extend(argv[i:])
                break
            if arg in ("-h", "--help"):
                print(self.help())
                raise SystemExit(0)
            # "-1" is a value (`kill ID -1`, as runc and argparse take it), not an option
            if arg.startswith("-") and arg != "-" and not arg[1:].isdigit():
                i = self._option(arg, argv, i, values)
                continue
            words.append(arg)
            # Once the positionals before a "..." one are filled, the rest of the line is its own.
            if self._remainder_starts(len(words)):
                rest = words
        self._positionals(words, values)
        return Namespace(**values)

    def _option(self, arg: str, argv: list[str], i: int, values: dict) -> int:
        value = None
        if arg.startswith("--") and "=" in arg:
            arg, value = arg.split("=", 1)
        elif not arg.startswith("--") and len(arg) > 2:
            arg, value = arg[:2], arg[2:]
        a = self._by_name.get(arg)
        if a is None:
            raise UsageError(f"unrecognized arguments: {arg}")
        if a.action == "store_true":
            if value is not None:
                raise UsageError(f"argument {a.label}: ignored explicit argument {value!r}")
            values[a.dest] = True
            return i
        if value is None:
            if i >= len(argv):
                raise UsageError(f"argument {a.label}: expected one argument")
            value, i = argv[i], i + 1
        value = a.convert(value)
        if a.action == "append":
            values[a.dest].append(value)
        else:
            values[a.dest] = value
        return i

    def _remainder_starts(self, nwords: int) -> bool:
        fixed = 0
        for a in self._args:
            if not a.positional:
                continue
            if a.nargs == REMAINDER:
                return nwords == max(fixed, 1)
            if a.nargs is not None:  # "?" / "*" before a remainder: not used by any command
                return False
            fixed += 1
        return False

    def _positionals(self, words: list[str], values: dict) -> None:
        pos = [a for a in self._args if a.positional]
        for n, a in enumerate(pos):
            if a.nargs is None:
                if not words:
                    missing = [p.dest for p in pos[n:] if p.nargs is None]
                    raise UsageError("the following arguments are required: "
                                     + ", ".join(missing))
                values[a.dest] = a.convert(words.pop(0))
            elif a.nargs == "?":
                if words:
                    values[a.dest] = a.convert(words.pop(0))
            else:  # "*" or "...": all that is left
                values[a.dest] = [a.convert(w) for w in words]
                words = []
        if words:
            raise UsageError(f"unrecognized arguments: {' '.join(words)}")

    def usage(self) -> str:
        parts = [f"[{a.names[0]}{'' if a.action == 'store_true' else ' ' + a.dest.upper()}]"
                 for a in self._args if not a.positional]
        for a in self._args:
            if a.positional:
                parts.append({None: a.dest, "?": f"[{a.dest}]"}.get(a.nargs, f"[{a.dest} ...]"))
        return f"usage: {self.prog} {' '.join(parts)}"

    def help(self) -> str:
        """urfave/cli's shape, as runc prints it: tools and runc's tests read these lines."""
        name = self.help_name or self.prog
        pos = []
        for a in self._args:
            if a.positional:
                label = f"<{a.dest.replace('_', '-')}>"
                pos.append(label if a.nargs is None else f"[{label} ...]" if a.nargs in ("*", REMAINDER)
                           else f"[{label}]")
        rows = []
        for a in self._args:
            if a.positional:
                continue
            longs = [n for n in a.names if n.startswith("--")] + \
                [n for n in a.names if not n.startswith("--")]
            value = "" if a.action == "store_true" else " value"
            text = a.help or ""
            if a.default not in (None, False, [], "") and a.action != "store_true":
                text += f' (default: "{a.default}")' if isinstance(a.default, str) \
                    else f" (default: {a.default})"
            rows.append((", ".join(n + value for n in longs), text.strip()))
        width = max((len(r[0]) for r in rows), default=0)
        lines = ["NAME:", f"   {name} - {self.description}", "", "USAGE:",
                 f"   {name} [command options] {' '.join(pos)}".rstrip()]
        if rows:
            lines += ["", "OPTIONS:"] + [f"   {f:<{width}}  {t}".rstrip() for f, t in rows]
        return "\n".join(lines)
