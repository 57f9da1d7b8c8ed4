"""Command-line arguments from a dataclass: one `--flag` per field, its help from the field's metadata.

    @dataclass
    class Args:
        seed: int = field(default=0, metadata={"help": "RNG seed"})
        loads: tuple[float, ...] = field(default=(0.5, 1.0), metadata={"help": "loads to sweep"})

    cfg = parse_dataclass(Args, argv, "what the script does")

Every script of the project parses its config this way, so every command line reads alike:

- `max_num_seqs` is `--max-num-seqs`; `--max_num_seqs` is accepted too.
- `bool` fields are switches: `--flag` / `--no-flag` (`bool | None` keeps None when neither is given).
- `X | None` fields take `none` (or an empty value) for None.
- tuple / list fields take one or more values, each of which may itself be comma-separated
  (`--loads 0.5 1.0` = `--loads 0.5,1.0`; `--loads ""` is empty); the first use replaces the
  default, repeating the flag adds to it.
- `metadata={"choices": [...]}` limits a field's values (each value of a list field): a bad
  value is a usage error before the command loads anything.
- `metadata={"aliases": ["--old-name"]}` keeps a renamed flag working for one release: the old
  spelling (`--old-name`, `--old_name`, `--no-old-name`) is rewritten to the field's flag with a
  one-line deprecation warning on stderr. `{"aliases": {"--old-ms": 1e-3}}` also converts the
  value of an alias whose unit changed (`--old-ms 250` -> `--new-s 0.25`).
- usage reads `python -m package.module` for the module that runs (`prog=` overrides it).
- The dataclass checks its own values in `__post_init__`: a ValueError (or TypeError) there is
  reported like any other usage error, one `error:` line and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
NONE_WORDS = ("none", "")


@dataclass(frozen=True)
class Alias:
    """An old spelling of a flag: `flag` is the current one, `scale` converts an old unit's value."""

    flag: str
    scale: float | None = None


class DataclassArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that also accepts `--foo_bar` (and `--no-foo_bar`) for a `--foo-bar` it
    defines, and the deprecated aliases registered with `add_alias` (with a warning).

    Both spellings are rewritten before parsing rather than registered as second options, so
    help lists each flag once and abbreviations (`--max-b`) stay unambiguous.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._dashed_flags: set[str] = set()          # before super(), which adds --help
        self._aliases: dict[str, Alias] = {}
        super().__init__(*args, **kwargs)

    def add_alias(self, old: str, flag: str, scale: float | None = None, is_switch: bool = False) -> None:
        """Accept `old` (and `--no-old` for a switch) for `flag`, warning that it is deprecated."""
        self._aliases[old] = Alias(flag, scale)
        if is_switch:
            self._aliases["--no-" + old[2:]] = Alias("--no-" + flag[2:])

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self._dashed_flags.update(flag for flag in action.option_strings if flag.startswith("--"))
        return action

    def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):
        argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._dash_spelling(argv), namespace)

    def _dash_spelling(self, argv: list[str]) -> list[str]:
        """`--foo_bar[=v]` -> `--foo-bar[=v]` where only the dashed flag exists, an alias -> its
        flag (value converted when its unit changed); stops at `--`."""
        rewritten: list[str] = []
        scale_next: float | None = None
        for position, token in enumerate(argv):
            if token == "--":
                return rewritten + argv[position:]
            if scale_next is not None:
                token, scale_next = _scaled(token, scale_next), None
                rewritten.append(token)
                continue
            flag, sep, value = token.partition("=")
            if flag.startswith("--") and "_" in flag and flag not in self._dashed_flags:
                dashed = "--" + flag[2:].replace("_", "-")
                if dashed in self._dashed_flags or dashed in self._aliases:
                    flag = dashed
            alias = self._aliases.get(flag) if flag.startswith("--") else None
            if alias is not None:
                unit = f" (value x {alias.scale:g})" if alias.scale is not None else ""
                print(f"{self.prog}: warning: {flag} is deprecated, use {alias.flag}{unit}", file=sys.stderr)
                if alias.scale is not None and sep:
                    value = _scaled(value, alias.scale)
                elif alias.scale is not None:
                    scale_next = alias.scale
                flag = alias.flag
            rewritten.append(flag + sep + value)
        return rewritten


def _scaled(text: str, scale: float) -> str:
    """An alias's value in the current unit; left as it is when it is not a number (argparse says why)."""
    try:
        return repr(float(text) * scale)
    except ValueError:
        return text


class _ExtendOnRepeat(argparse.Action):
    """Values of a list flag: the first use replaces the default, later uses add to it."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        current = getattr(namespace, self.dest, None)
        items = [] if current is self.default else list(current)     # still the default: first use
        for part in values:                   # each value is already a converted tuple / list
            items.extend(part)
        setattr(namespace, self.dest, type(values[0])(items))


def _field_type(annotation) -> tuple[Any, bool]:
    """(the type without `| None`, whether None is allowed) for int, float | None, tuple[str, ...]..."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def _element_type(container_annotation) -> type:
    """int for tuple[int, ...] / list[int]; str when the annotation does not say."""
    args = [a for a in typing.get_args(container_annotation) if a is not Ellipsis]
    return _field_type(args[0])[0] if args else str


def _scalar_converter(kind: type, optional: bool):
    def convert(text: str):
        if optional and text.strip().lower() in NONE_WORDS:
            return None
        return kind(text)
    convert.__name__ = getattr(kind, "__name__", "value")     # argparse names it in "invalid int value"
    return convert


def _list_converter(container: type, element: type):
    def convert(text: str):
        return container(element(part.strip()) for part in text.split(",") if part.strip())
    convert.__name__ = f"{getattr(element, '__name__', 'value')} list"
    return convert


def _default_of(spec: dataclasses.Field):
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None


def _choices_converter(convert, choices: Sequence[str]):
    """`convert`, then refuse a value (each value of a list) outside `choices` as a usage error."""
    def checked(text: str):
        value = convert(text)
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if item is not None and item not in choices:
                raise argparse.ArgumentTypeError(f"invalid choice: {item!r} (choose from {', '.join(map(str, choices))})")
        return value
    checked.__name__ = convert.__name__
    return checked


def add_dataclass_arguments(parser: DataclassArgumentParser, cls: type, positional: Sequence[str] = ()) -> None:
    """Add one argument per init field of dataclass `cls` to `parser` (see the module docstring);
    fields named in `positional` become positional arguments."""
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        if not spec.init:
            continue
        kind, optional = _field_type(hints[spec.name])
        container = typing.get_origin(kind) or kind
        help_text = spec.metadata.get("help", "")
        default = _default_of(spec)
        if spec.name in positional:
            parser.add_argument(spec.name, help=help_text, type=_scalar_converter(str, optional))
            continue
        flag = "--" + spec.name.replace("_", "-")
        aliases = spec.metadata.get("aliases", ())
        for old in aliases:
            parser.add_alias(old, flag, aliases.get(old) if isinstance(aliases, dict) else None, kind is bool)
        choices = spec.metadata.get("choices")
        metavar = "{" + ",".join(map(str, choices)) + "}" if choices else None
        if kind is bool:
            parser.add_argument(flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        elif container in (list, tuple):
            # a string default is converted by `type` when the flag is absent, and shows as typed
            shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            convert = _list_converter(container, _element_type(kind))
            parser.add_argument(flag, dest=spec.name, nargs="+", action=_ExtendOnRepeat, default=shown,
                                type=_choices_converter(convert, choices) if choices else convert, help=help_text,
                                metavar=metavar)
        else:
            convert = _scalar_converter(kind, optional)
            parser.add_argument(flag, dest=spec.name, default=default, help=help_text, metavar=metavar,
                                type=_choices_converter(convert, choices) if choices else convert)


def build_dataclass(parser: argparse.ArgumentParser, cls: type[T], namespace: argparse.Namespace) -> T:
    """`cls` from parsed arguments; a value its `__post_init__` rejects becomes `parser.error` (exit 2)."""
    values = {spec.name: getattr(namespace, spec.name) for spec in dataclasses.fields(cls) if spec.init}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        parser.error(" ".join(str(error).split()))
        raise                                 # unreachable: parser.error exits


def running_command() -> str:
    """How the running script was started: `python -m package.module`, or `python path.py`."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name.removesuffix('.__main__')}"
    return f"python {sys.argv[0]}" if sys.argv and sys.argv[0] else "python"


def parse_dataclass(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None, *,
                    prog: str | None = None, positional: Sequence[str] = ()) -> T:
    """Parse `argv` (default: sys.argv[1:]) into an instance of dataclass `cls`.

    `description` defaults to the first line of the class docstring; help shows every default.
    """
    parser = DataclassArgumentParser(prog=prog or running_command(), description=description or (cls.__doc__ or "").split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_arguments(parser, cls, positional)
    return build_dataclass(parser, cls, parser.parse_args(argv))
