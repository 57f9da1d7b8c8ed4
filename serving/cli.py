"""Dataclass configs on the command line: one `--flag` per field, its help from the field metadata."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def _flag_type(annotation) -> type | None:
    """The scalar type argparse converts a value to; None for booleans (handled as switches)."""
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation.split("|")[0].strip(), str)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args:
        annotation = args[0]
    return None if annotation is bool else annotation


def parse_dataclass(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None,
                    prog: str | None = None) -> T:
    """Build `cls` from `argv`; the dataclass' own `__post_init__` checks the values.

    Field names map to flags with dashes (`max_batch` -> `--max-batch`); booleans become
    `--flag/--no-flag`; each field's `metadata["help"]` is its help text. A value the config
    rejects exits with argparse's usage error rather than a traceback.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description or (cls.__doc__ or "").split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        kind = _flag_type(hints.get(f.name, f.type))
        help_text = f.metadata.get("help", "")
        if kind is None:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=help_text,
                                choices=f.metadata.get("choices"))
    namespace = parser.parse_args(argv)
    try:
        return cls(**vars(namespace))
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
