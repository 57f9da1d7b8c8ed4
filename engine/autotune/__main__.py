"""`python -m engine.autotune`: run the forward-path self-test now, print its table, rewrite the cache."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field

import torch

from engine.autotune import cache_file, choose_path
from cli.dataclass_args import parse_dataclass
from engine.models import ModelLoadError, load_model
from engine.precision import DTYPE_CHOICES, KERNEL_CHOICES


@dataclass
class AutotuneArgs:
    """Measure every candidate forward path on this machine and model; print the table and the choice."""

    model: str = field(default="default", metadata={"help": "'default' (embedded SmolLM2), a local HF dir or .gguf"})
    dtype: str = field(default="auto", metadata={"help": "restrict the candidates to one dtype",
                                                  "choices": DTYPE_CHOICES})
    kernel: str = field(default="auto", metadata={"help": "restrict the candidates to one kernel",
                                                   "choices": KERNEL_CHOICES})
    num_threads: int = field(default=2, metadata={"help": "torch threads (the cache is keyed by them)"})
    json: bool = field(default=False, metadata={"help": "print the cached JSON instead of the table"})


def main(args: AutotuneArgs) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.num_threads)
    try:
        loaded = load_model(args.model)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    choice = choose_path(loaded.model, args.dtype, args.kernel, refresh=True)
    print(json.dumps(choice.to_json(), indent=1) if args.json else choice.table())
    print(f"cache: {cache_file(choice.key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_dataclass(AutotuneArgs)))
