"""Command-line arguments from a dataclass: one flag per field, its help from the field's metadata.

    @dataclass
    class Args:
        seed: int = field(default=0, metadata={"help": "RNG seed"})

    cfg = parse_dataclass(Args, argv, "what the script does")

bool fields become --flag / --no-flag; `X | None` fields accept "none"; tuple/list fields take
a comma-separated list. Validation stays in the dataclass's __post_init__ (a ValueError there is
reported as a usage error).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence


def _base_type(annotation):
    """(type, optional?) for annotations like int, float | None, tuple[str, ...]."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])[0], True
    return (origin or annotation), False


def _converter(kind, optional: bool, element):
    def convert(text: str):
        if optional and text.strip().lower() in ("none", ""):
            return None
        if kind in (tuple, list):
            parts = [p.strip() for p in text.split(",") if p.strip()]
            return kind(element(p) for p in parts)
        return kind(text)
    return convert


def parse_dataclass(cls, argv: Sequence[str] | None = None, description: str | None = None,
                    positional: Sequence[str] = ()):
    """Parse argv into an instance of dataclass `cls`; fields named in `positional` are positional."""
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(description=description or (cls.__doc__ or "").split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        kind, optional = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if f.name in positional:
            parser.add_argument(f.name, help=help_text, type=_converter(kind, optional, str))
            continue
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
            continue
        element = str
        if kind in (tuple, list):
            inner = hints[f.name]
            if typing.get_origin(inner) in (typing.Union, types.UnionType):
                inner = next(a for a in typing.get_args(inner) if a is not type(None))
            args = typing.get_args(inner) or (str,)
            element = next((a for a in args if a is not Ellipsis and a is not type(None)), str)
            element = _base_type(element)[0]
        shown = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else default
        parser.add_argument(flag, dest=f.name, default=shown, type=_converter(kind, optional, element),
                            help=help_text)
    namespace = parser.parse_args(argv)
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if f.init}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
