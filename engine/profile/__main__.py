"""`python -m engine.profile`: measure a model's latency profile and write it as JSON.

    python -m engine.profile --model default --draft checkpoints/draft    # + the int4 copy
    python -m engine.profile --model ./my-llama --draft ./my-draft --max-minutes 2
    python -m engine.profile --model default --num-threads 1 --clock cpu   # on a busy machine
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cli.dataclass_args import parse_dataclass
from data.paths import REPO_ROOT
from engine.config import engine_field, num_threads_field, parse_draft_specs
from engine.precision import PrecisionArgs


@dataclass
class ProfileArgs(PrecisionArgs):
    """Measure forward latency per level (target, drafts, model-free drafters) into a profile."""

    model: str = field(default="default", metadata={"help": "target: 'default' (embedded SmolLM2) or a local HF dir / .gguf"})
    draft: list[str] = field(default_factory=list, metadata={
        "help": "draft model as PATH (the level 'draft') or NAME=PATH; repeat for several"})
    quantized_levels: str = engine_field("quantized_levels")
    output_json: str = field(default="", metadata={
        "help": "output JSON (default: profiles/<model name>.<forward path>.json)", "aliases": ["--out"]})
    max_minutes: float = field(default=1.0, metadata={
        "help": "wall-clock budget in minutes for the whole run, loading included", "aliases": {"--budget-s": 1 / 60}})
    batches: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "batch sizes to time"})
    tokens: list[int] = field(default_factory=lambda: [1, 2, 3, 5, 9, 17],
                              metadata={"help": "tokens per row to time (K + 1 for a verifier, up to K + depth)"})
    contexts: list[int] = field(default_factory=lambda: [64, 512, 1536], metadata={"help": "context lengths to time"})
    repeats: int = field(default=2, metadata={"help": "samples per point where the budget allows (the minimum is kept)"})
    max_model_len: int = engine_field("max_model_len")
    num_threads: int = num_threads_field()
    clock: str = field(default="wall", metadata={"help": "'wall', or 'cpu' (own CPU time, needs --num-threads 1): "
                                                         "idle-machine latency measured on a busy machine",
                                                 "choices": ["wall", "cpu"]})

    def __post_init__(self) -> None:
        if self.max_minutes <= 0 or self.repeats < 1:
            raise ValueError("max_minutes must be > 0 and repeats >= 1")
        for name in ("batches", "tokens"):
            if not getattr(self, name) or min(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be non-empty integers >= 1")
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"--clock must be wall or cpu, got {self.clock!r}")
        if self.clock == "cpu" and self.num_threads != 1:
            raise ValueError("--clock cpu needs --num-threads 1")
        if not self.contexts or min(self.contexts) < 0:
            raise ValueError("contexts must be non-empty integers >= 0")
        parse_draft_specs(self.draft)


def parse_args(argv: list[str] | None = None) -> ProfileArgs:
    return parse_dataclass(ProfileArgs, argv, ProfileArgs.__doc__, prog="python -m engine.profile")


def main(cfg: ProfileArgs) -> Path:
    start = time.perf_counter()
    import torch

    from engine import Engine, EngineConfig
    from engine.build import DraftSpec
    from engine.profile import measure_profile, profile_file

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)      # this command owns the process
    drafts = [DraftSpec(name, path, kind=None)                 # a checkpoint of either kind or any local LM
              for name, path in parse_draft_specs(cfg.draft).items()]
    engine = Engine.from_pretrained(cfg.model, drafts=drafts,
                                    config=EngineConfig(max_model_len=cfg.max_model_len,
                                                        quantized_levels=cfg.quantized_levels,
                                                        **cfg.precision_kwargs(release_model_weights=True)))
    load_s = time.perf_counter() - start
    # the measurement gets what loading left of the budget, but always a little
    budget = max(60 * cfg.max_minutes - load_s - 1.0, 15 * cfg.max_minutes)
    profile = measure_profile(engine, batches=cfg.batches, tokens=cfg.tokens, contexts=cfg.contexts,
                              budget_s=budget, repeats=cfg.repeats, model=engine.model_name, clock=cfg.clock)
    profile.meta["load_s"] = round(load_s, 3)
    profile.meta["total_s"] = round(time.perf_counter() - start, 3)
    out = Path(cfg.output_json) if cfg.output_json else REPO_ROOT / profile_file(engine.model_name, engine.precision.name)
    profile.save(out)
    target_grid = profile.levels["target"]
    print(f"wrote {out} ({engine.precision.name}): levels {', '.join(profile.levels)}; load {load_s:.1f} s, "
          f"measure {profile.meta['measure_s']:.1f} s, total {profile.meta['total_s']:.1f} s; "
          f"estimated points {profile.meta['estimated_points']}")
    for context in target_grid.contexts:
        cells = [f"b{b}/t{t}={profile.forward_time('target', b, t, context) * 1e3:.0f}ms"
                 for b in (target_grid.batches[0], target_grid.batches[-1])
                 for t in (target_grid.tokens[0], target_grid.tokens[-1])]
        print(f"  target @ context {context}: {' '.join(cells)}")
    return out


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
