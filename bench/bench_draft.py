"""Benchmark of the intermediate levels on Spec-Bench: acceptance, step cost and speedup, per category.

One process, greedy, chat-templated prompts. For each prompt every configuration runs back to
back (order rotated per prompt, so machine load hits all alike): HF `generate` plain, our plain
decoding, and for each intermediate level (the distilled draft; the EAGLE head of --eagle; the
target's quantized copies of --quantized-levels) [level, target] at K in --draft-ks and [ngram, level, target] at K in --ngram-ks,
plus [draft, q, target] and the 4-level [ngram, draft, q, target] through both.
Acceptance per pair comes from `engine.last_step.results[i].pairs`; the draft's step cost from
timing single-token forwards of each level and the target at the prompt's context, interleaved;
its teacher-forced top-1 agreement from one forward of the level over the target's greedy output
(bench/level_probes.py; the EAGLE head's on the target's own features).
A cost table (untrained drafts of 1-4 layers x vocabulary sizes) shows the size trade-off.
Writes <output-dir>/<output-name>.json (default bench/results/draft.json) and .md.

    .venv/bin/python -m bench.bench_draft                      # 13 categories x 1 prompt, 64 tokens
    .venv/bin/python -m bench.bench_draft --categories qa,writing --max-tokens 16 --output-name draft_smoke
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from bench.bench_models import draft_spec, encode_chat, load_bench_model, resolve_checkpoint
from bench.common import check_spec_bench_args, parse_categories, sample_prompts
from bench.draft_report import render_markdown, summarise
from bench.level_probes import step_time_ratio, top1_agreement
from cli.dataclass_args import parse_dataclass
from cli.results import machine_info, publish_results
from engine import Decision, Engine, EngineConfig, SamplingParams, StaticRouter
from engine.config import engine_field, num_threads_field, parse_quantized_levels
from engine.precision import PrecisionArgs
from engine.trackers import pair_key


@dataclass
class DraftBenchArgs(PrecisionArgs):
    """Benchmark the distilled draft in [draft, target] and [ngram, draft, target] chains."""

    model: str = field(default="default", metadata={"help": "'default' (embedded SmolLM2) or a local path"})
    draft: str = field(default="checkpoints/draft", metadata={"help": "distilled draft checkpoint directory"})
    eagle: str = field(default="checkpoints/eagle", metadata={
        "help": "EAGLE head checkpoint (distill.eagle), benched as a level beside the draft; '' = none"})
    prompts_per_category: int = field(default=1, metadata={"help": "Spec-Bench prompts per category"})
    categories: str = field(default="", metadata={"help": "comma-separated categories; empty = all 13"})
    max_tokens: int = field(default=64, metadata={"help": "new tokens per prompt (greedy; EOS may stop earlier)",
                                                  "aliases": ["--max-new-tokens"]})
    draft_ks: str = field(default="2,4,6", metadata={"help": "K values of [draft, target]"})
    ngram_ks: str = field(default="4,8", metadata={"help": "K values of [ngram, draft, target]"})
    quantized_levels: str = engine_field("quantized_levels")
    cost_table: bool = field(default=True, metadata={"help": "also time untrained drafts of other sizes"})
    seed: int = field(default=0, metadata={"help": "prompt sampling seed (bench.common.sample_prompts)"})
    num_threads: int = num_threads_field()
    max_minutes: float = field(default=0.0, metadata={"help": "stop starting new prompts after this; 0 = no limit"})
    output_name: str = field(default="draft", metadata={"help": "writes <output-dir>/<output-name>.json and .md"})
    output_dir: str = field(default="", metadata={"help": "directory of the result files; empty = bench/results",
                                                  "aliases": ["--results-dir"]})

    def __post_init__(self) -> None:
        check_spec_bench_args(self.prompts_per_category, self.max_tokens, self.categories, self.output_name)
        if self.num_threads < 0 or self.max_minutes < 0:
            raise ValueError("--num-threads and --max-minutes must be >= 0")
        for name in ("draft_ks", "ngram_ks"):
            try:
                ks = [int(k) for k in getattr(self, name).split(",") if k.strip()]
            except ValueError:
                raise ValueError(f"--{name.replace('_', '-')} must be comma-separated integers") from None
            if not ks or min(ks) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} needs K values > 0")

    @property
    def category_list(self) -> list[str]:
        return parse_categories(self.categories)

    @property
    def quantized_formats(self) -> list[str]:
        return list(parse_quantized_levels(self.quantized_levels))

    @property
    def levels(self) -> list[str]:
        """The intermediate levels compared: the distilled draft, the EAGLE head, each quantized copy."""
        return ["draft", *(["eagle"] if self.eagle else []), *self.quantized_formats]


@dataclass(frozen=True)
class Column:
    """One configuration: HF generate plain, or our engine with a chain and K."""

    name: str
    chain: tuple[str, ...] = ("target",)
    k: int = 0
    is_hf: bool = False


def columns(cfg: DraftBenchArgs) -> list[Column]:
    """Plain, then per level [level, target] and [ngram, level, target]; with a quantized copy also
    the chains through both: [draft, q, target] and the 4-level [ngram, draft, q, target]."""
    cols = [Column("hf-plain", is_hf=True), Column("plain")]
    draft_ks, ngram_ks = [int(k) for k in cfg.draft_ks.split(",")], [int(k) for k in cfg.ngram_ks.split(",")]
    ladders = [(level,) for level in cfg.levels] + [("draft", q) for q in cfg.quantized_formats]
    for ladder in ladders:
        name = "-".join(ladder)
        cols += [Column(f"{name}-k{k}", (*ladder, "target"), k) for k in draft_ks]
        cols += [Column(f"ngram-{name}-k{k}", ("ngram", *ladder, "target"), k) for k in ngram_ks]
    return cols


def run_hf(model, ids: list[int], max_new_tokens: int, eos: int) -> tuple[list[int], float]:
    prompt = torch.tensor([ids])
    start = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                max_new_tokens=max_new_tokens, pad_token_id=eos)
    return output[0, len(ids):].tolist(), time.perf_counter() - start


def run_engine(engine: Engine, ids: list[int], column: Column, max_new_tokens: int) -> tuple[list[int], float, dict]:
    """Generate one request step by step; per-pair counts from each step's RowResult."""
    engine.set_router(StaticRouter(Decision(column.chain, column.k)))
    pairs: dict[str, dict] = defaultdict(lambda: dict(proposed=0, accepted=0, drafts=0, rejections=0))
    start = time.perf_counter()
    engine.add_request(ids, SamplingParams(max_tokens=max_new_tokens))
    tokens: list[int] = []
    while engine.has_unfinished:
        for output in engine.step():
            tokens = output.output_token_ids
        for result in engine.last_step.results:
            for pair in result.pairs:
                entry = pairs[pair_key(pair.drafter, pair.verifier)]
                if pair.num_proposed:
                    entry["drafts"] += 1
                    entry["proposed"] += pair.num_proposed
                    entry["accepted"] += pair.num_accepted
                    entry["rejections"] += pair.num_accepted < pair.num_proposed
    return tokens, time.perf_counter() - start, dict(pairs)


def cost_table(engine: Engine, target_model, context: list[int], repeats: int = 7) -> list[dict]:
    """Single-token step time of untrained drafts (layers x vocabulary) relative to the target."""
    from engine.draft_model import build_draft
    from engine.runner import ModelRunner

    target = engine.levels["target"].runner
    runners = {"target": target}
    vocab = target.vocab_size
    for layers in (1, 2, 3, 4):
        for size in (vocab, 32768, 16384, 8192):
            subset = None if size >= vocab else torch.arange(size)
            runners[f"{layers}L/{size}"] = ModelRunner(build_draft(target_model, list(range(layers)), subset),
                                                        len(context) + 8)
    slots = {name: runner.cache.allocate_slot() for name, runner in runners.items()}
    for name, runner in runners.items():
        runner.forward([slots[name]], [context], [1])
    samples: dict[str, list[float]] = defaultdict(list)
    try:
        for _ in range(repeats):
            for name, runner in runners.items():
                start = time.perf_counter()
                runner.forward([slots[name]], [[context[-1]]], [1])
                samples[name].append(time.perf_counter() - start)
                runner.cache.rollback(slots[name], len(context))
    finally:
        target.cache.free_slot(slots["target"])
    target_s = statistics.median(samples.pop("target"))
    rows = []
    for name, values in samples.items():
        layers, size = name.split("/")
        rows.append({"layers": int(layers[:-1]), "vocab": int(size), "ms": 1000 * statistics.median(values),
                     "ratio": statistics.median(values) / target_s})
    return rows


def main(cfg: DraftBenchArgs) -> dict:
    from engine.build import DraftSpec
    from engine.draft_checkpoint import read_manifest

    began = time.perf_counter()
    machine_start = machine_info()
    loaded = load_bench_model(cfg.model, cfg.num_threads)
    drafts = [draft_spec(cfg.draft, required=True)]
    drafts += [DraftSpec("eagle", resolve_checkpoint(cfg.eagle), kind="eagle")] if cfg.eagle else []
    model, tokenizer = loaded.model, loaded.tokenizer
    prompts = sample_prompts(cfg.prompts_per_category, cfg.category_list, cfg.seed)
    encoded = [encode_chat(tokenizer, p.text) for p in prompts]
    max_len = max(2048, max(len(ids) for ids in encoded) + cfg.max_tokens + 16)
    engine = Engine.from_pretrained(loaded, drafts=drafts, config=EngineConfig(
        max_model_len=max_len, quantized_levels=cfg.quantized_levels, **cfg.precision_kwargs()))
    draft_path = drafts[0].location
    manifest = read_manifest(draft_path)
    eos = model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    cols = columns(cfg)
    print(f"{loaded.name} + draft {draft_path} ({len(manifest.init_layers)} layers, vocabulary "
          f"{manifest.vocab_subset_size or model.config.vocab_size}); {len(prompts)} prompts; "
          f"{', '.join(c.name for c in cols)}", flush=True)

    def run(column: Column, ids: list[int], max_new: int):
        if column.is_hf:
            tokens, elapsed = run_hf(model, ids, max_new, eos)
            return tokens, elapsed, {}
        return run_engine(engine, ids, column, max_new)

    warm = encode_chat(tokenizer, "Say hello three times.")
    for column in cols:
        run(column, warm, 8)

    records, prompt_rows = [], []
    for index, (prompt, ids) in enumerate(zip(prompts, encoded)):
        if cfg.max_minutes and time.perf_counter() - began > 60 * cfg.max_minutes:
            print(f"time limit reached after {index} of {len(prompts)} prompts", flush=True)
            break
        shift = index % len(cols)
        results = {}
        for column in cols[shift:] + cols[:shift]:
            results[column.name] = run(column, ids, cfg.max_tokens)
        reference = results["plain"][0]
        cost = step_time_ratio(engine, ids, cfg.levels)
        levels = {}
        for name in cfg.levels:
            matches, positions = top1_agreement(engine.levels[name].runner, ids, reference, engine.levels["target"].runner)
            levels[name] = dict(top1_matches=matches, top1_positions=positions, **cost[name])
        prompt_rows.append(dict(question_id=prompt.question_id, category=prompt.category, num_prompt_tokens=len(ids),
                                target_ms=cost["target_ms"], levels=levels))
        for column in cols:
            tokens, elapsed, pairs = results[column.name]
            records.append(dict(config=column.name, question_id=prompt.question_id, category=prompt.category,
                                num_tokens=len(tokens), elapsed_s=elapsed, pairs=pairs,
                                is_identical_to_plain=tokens == reference))
            accept = " ".join(f"{k} {v['accepted']}/{v['proposed']}" for k, v in pairs.items())
            print(f"[{index + 1}/{len(prompts)} {prompt.category:<14}] {column.name:<15} {len(tokens):>4} tok "
                  f"{len(tokens) / elapsed:6.2f} tok/s {accept} {'' if tokens == reference else 'DIFFERS FROM PLAIN'}",
                  flush=True)
        print("    " + "; ".join(f"{name} top-1 agreement {v['top1_matches']}/{v['top1_positions']}, step "
                                 f"{v['ms']:.1f} ms (ratio {v['ratio']:.3f})" for name, v in levels.items())
              + f"; target step {cost['target_ms']:.1f} ms", flush=True)

    sizes = cost_table(engine, model, encoded[0]) if cfg.cost_table else []
    data = {
        "command": " ".join(["python -m bench.bench_draft", *sys.argv[1:]]), "args": vars(cfg),
        "model": loaded.name, "model_sha256": loaded.sha256, "draft": str(cfg.draft),
        "draft_manifest": {k: v for k, v in vars(manifest).items() if k != "training"},
        "draft_training": {k: v for k, v in manifest.training.items() if k != "config"},
        "machine_start": machine_start, "machine_end": machine_info(), "wall_s": time.perf_counter() - began,
        **summarise(records, prompt_rows, cols, cfg.levels), "cost_table": sizes, "prompts": prompt_rows, "runs": records,
    }
    publish_results(cfg.output_name, data, render_markdown(data), cfg.output_dir)
    return data


if __name__ == "__main__":
    from cli.missing_data import exit_on_missing_data
    with exit_on_missing_data():
        main(parse_dataclass(DraftBenchArgs))
