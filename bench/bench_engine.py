"""Engine benchmark: Hugging Face `generate` against our engine, greedy, on Spec-Bench prompts.

One process, one model, every configuration side by side: HF plain, HF prompt lookup
(`prompt_lookup_num_tokens` 10 and 3), ours plain, ours with each drafter at several K. For each
prompt all configurations run back to back (in an order rotated per prompt), so a change in
machine load hits every configuration alike. Writes bench/results/<name>.json and .md.

    .venv/bin/python -m bench.bench_engine                    # full run (13 categories x 1 prompt)
    .venv/bin/python -m bench.bench_engine --prompts-per-category 1 --max-new-tokens 16 \
        --categories writing,qa --output-name engine_smoke   # smoke run
"""

from __future__ import annotations

import fnmatch
import logging
import sys
import time
from dataclasses import dataclass, field

import torch

from bench.bench_models import encode_chat
from bench.common import (REPO_ROOT, BenchPrompt, PeakRSS, check_spec_bench_args, machine_info, parse_categories,
                          process_peak_rss_mb, publish_results, sample_prompts)
from bench.engine_report import aggregate, merge_results, render_markdown
from engine.precision import PrecisionArgs
from engine import Decision, Engine, EngineConfig, SamplingParams, StaticRouter
from engine.dataclass_args import parse_dataclass


@dataclass
class BenchArgs(PrecisionArgs):
    """Benchmark HF generate vs our engine (plain and speculative), greedy, on Spec-Bench prompts."""

    model: str = field(default="default", metadata={"help": "'default' (embedded SmolLM2) or a local path"})
    prompts_per_category: int = field(default=1, metadata={"help": "prompts sampled from each category"})
    categories: str = field(default="", metadata={"help": "comma-separated categories; empty = all 13"})
    max_new_tokens: int = field(default=128, metadata={"help": "new tokens per prompt (greedy; EOS may stop earlier)"})
    configs: str = field(default="", metadata={
        "help": "comma-separated config names or patterns (e.g. 'ours-ngram-*'); empty = all. hf-plain always runs"})
    ngram_max_match: int = field(default=3, metadata={
        "help": "largest n-gram matched by prompt lookup, set alike for HF (max_matching_ngram_size) and ours"})
    draft_checkpoint: str = field(default="checkpoints/draft", metadata={
        "help": "distilled draft checkpoint; its configs are added when it exists"})
    seed: int = field(default=0, metadata={"help": "prompt sampling seed"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 keeps torch's default"})
    max_minutes: float = field(default=0.0, metadata={"help": "stop starting new prompts after this; 0 = no limit"})
    first_prompt: int = field(default=0, metadata={
        "help": "skip the first N sampled prompts (resumes a run that --max-minutes cut short)"})
    output_name: str = field(default="engine", metadata={"help": "writes bench/results/<name>.json and .md"})
    merge: str = field(default="", metadata={
        "help": "comma-separated result names (bench/results/<name>.json) to merge into --output-name "
                "instead of running; for runs over disjoint prompts with the same settings"})

    def __post_init__(self) -> None:
        check_spec_bench_args(self.prompts_per_category, self.max_new_tokens, self.categories, self.output_name)
        if self.ngram_max_match <= 0 or min(self.num_threads, self.max_minutes, self.first_prompt) < 0:
            raise ValueError("--ngram-max-match must be > 0; --num-threads, --max-minutes, --first-prompt >= 0")

    @property
    def category_list(self) -> list[str]:
        return parse_categories(self.categories)


@dataclass(frozen=True)
class BenchConfig:
    """One column of the benchmark: who generates (HF or ours) and with which chain and K."""

    name: str
    system: str                        # "hf" or "ours"
    chain: tuple[str, ...] = ("target",)
    k: int = 0

    @property
    def drafter(self) -> str:
        return "plain" if self.k == 0 else self.chain[0]


HF_PLAIN = "hf-plain"


def all_configs(has_draft: bool) -> list[BenchConfig]:
    configs = [BenchConfig(HF_PLAIN, "hf"), BenchConfig("hf-pld-k10", "hf", ("ngram", "target"), 10),
               BenchConfig("hf-pld-k3", "hf", ("ngram", "target"), 3), BenchConfig("ours-plain", "ours")]
    grid = {"ngram": (2, 3, 4, 8, 10), "suffix": (2, 4, 8)}
    if has_draft:
        grid["draft"] = (2, 4, 8)
    for drafter, ks in grid.items():
        configs += [BenchConfig(f"ours-{drafter}-k{k}", "ours", (drafter, "target"), k) for k in ks]
    return configs


def select_configs(configs: list[BenchConfig], patterns: str) -> list[BenchConfig]:
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    if not wanted:
        return configs
    for pattern in wanted:
        if not any(fnmatch.fnmatch(c.name, pattern) for c in configs):
            raise ValueError(f"--configs {pattern!r} matches nothing; known: {', '.join(c.name for c in configs)}")
    return [c for c in configs if c.name == HF_PLAIN or any(fnmatch.fnmatch(c.name, p) for p in wanted)]


@dataclass
class RunRecord:
    """One (prompt, config) generation."""

    config: str
    question_id: int
    category: str
    num_prompt_tokens: int
    tokens: list[int]
    elapsed_s: float
    num_steps: int                     # target forwards (the first includes the prefill)
    num_draft_tokens: int
    num_accepted_tokens: int
    peak_rss_mb: float
    is_identical_to_hf: bool | None = None
    mismatch: dict | None = None


class ForwardCounter:
    """Counts HF forwards and the tokens fed, to derive HF's drafted/accepted counts: each forward
    after the first feeds 1 committed token plus its candidates (the first feeds the prompt)."""

    def __init__(self, model) -> None:
        self.num_forwards = 0
        self.num_fed = 0
        self.handle = model.register_forward_pre_hook(self._observe, with_kwargs=True)

    def _observe(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.num_forwards += 1
        self.num_fed += 0 if ids is None else ids.shape[-1]

    def reset(self) -> None:
        self.num_forwards = self.num_fed = 0


def run_hf(model, counter: ForwardCounter, ids: list[int], config: BenchConfig, max_new_tokens: int,
           ngram_max_match: int) -> tuple[list[int], float, int, int, int]:
    prompt = torch.tensor([ids])
    kwargs = dict(do_sample=False, max_new_tokens=max_new_tokens, attention_mask=torch.ones_like(prompt),
                  pad_token_id=model.generation_config.eos_token_id)
    if config.k:
        kwargs.update(prompt_lookup_num_tokens=config.k, max_matching_ngram_size=ngram_max_match)
    counter.reset()
    start = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(prompt, **kwargs)
    elapsed = time.perf_counter() - start
    tokens = output[0, len(ids):].tolist()
    steps = counter.num_forwards
    drafted = counter.num_fed - len(ids) - (steps - 1) if config.k else 0
    accepted = len(tokens) - steps if config.k else 0
    return tokens, elapsed, steps, drafted, accepted


def run_ours(engine: Engine, ids: list[int], config: BenchConfig, max_new_tokens: int):
    engine.router = StaticRouter(Decision(config.chain, config.k))
    start = time.perf_counter()
    output = engine.generate([ids], SamplingParams(max_tokens=max_new_tokens))[0]
    elapsed = time.perf_counter() - start
    stats = output.stats
    return output.output_token_ids, elapsed, stats.num_steps, stats.num_draft_tokens, stats.num_accepted_tokens


def check_logits(model, engine: Engine, ids: list[int], num_decode: int = 16) -> dict:
    """Max |logit difference| of our runner vs transformers: one prefill of `ids`, then the last
    `num_decode` tokens fed one at a time over the cache (the decode path)."""
    runner = engine.levels["target"].runner
    num_decode = min(num_decode, len(ids) - 1)
    with torch.inference_mode():
        reference = model(torch.tensor([ids])).logits[0].float()                    # [T, vocab]
        slot = runner.cache.allocate_slot()
        try:
            prefill = runner.forward([slot], [ids], [len(ids)])[0]                   # [T, vocab]
            runner.cache.rollback(slot, len(ids) - num_decode)
            decoded = torch.cat([runner.forward([slot], [[t]], [1])[0] for t in ids[-num_decode:]])
        finally:
            runner.cache.free_slot(slot)
    return {"num_tokens": len(ids), "prefill_max_abs_diff": float((prefill - reference).abs().max()),
            "decode_max_abs_diff": float((decoded - reference[-num_decode:]).abs().max()),
            "logit_scale_max_abs": float(reference.abs().max()),
            "argmax_agreement": float((prefill.argmax(-1) == reference.argmax(-1)).float().mean())}


def explain_mismatch(model, tokenizer, ids: list[int], reference: list[int], other: list[int]) -> dict:
    """Where `other` first leaves HF greedy, and the target's top-2 logit margin there."""
    position = next((i for i, (a, b) in enumerate(zip(reference, other)) if a != b), min(len(reference), len(other)))
    info = {"position": position, "hf_len": len(reference), "other_len": len(other)}
    if position >= min(len(reference), len(other)):
        info["kind"] = "one output is a prefix of the other"
        return info
    with torch.inference_mode():
        logits = model(torch.tensor([ids + reference[:position]])).logits[0, -1].float()
    top = logits.topk(2)
    info.update(kind="different token", hf_token=tokenizer.decode([reference[position]]),
                other_token=tokenizer.decode([other[position]]),
                top2_margin=float(top.values[0] - top.values[1]),
                hf_minus_other_logit=float(logits[reference[position]] - logits[other[position]]),
                context=tokenizer.decode(reference[max(0, position - 8): position]))
    return info


def run_prompt(prompt: BenchPrompt, ids: list[int], order: list[BenchConfig], run, model, tokenizer,
               label: str) -> list[RunRecord]:
    """Every config on one prompt, back to back; then compare each output with HF greedy."""
    rss = PeakRSS()
    by_name: dict[str, RunRecord] = {}
    for config in order:
        rss.reset()
        tokens, elapsed, steps, drafted, accepted = run(config, ids)
        by_name[config.name] = RunRecord(config.name, prompt.question_id, prompt.category, len(ids), tokens,
                                         elapsed, steps, drafted, accepted, rss.read_mb())
    reference = by_name[HF_PLAIN].tokens
    records = sorted(by_name.values(), key=lambda r: [c.name for c in order].index(r.config))
    for record in records:
        record.is_identical_to_hf = record.tokens == reference
        if not record.is_identical_to_hf:
            record.mismatch = explain_mismatch(model, tokenizer, ids, reference, record.tokens)
        print(f"[{label} {prompt.category:<14} q{prompt.question_id}] {record.config:<14} "
              f"{len(record.tokens):>4} tok {len(record.tokens) / record.elapsed_s:6.2f} tok/s "
              f"steps {record.num_steps:>4} acc {record.num_accepted_tokens}/{record.num_draft_tokens} "
              f"{'same' if record.is_identical_to_hf else 'DIFF ' + str(record.mismatch)}", flush=True)
    return records


def load_draft_model(cfg: BenchArgs, target):
    """The distilled draft (checkpoints/draft by default) loaded onto `target`, or None if absent."""
    path = REPO_ROOT / cfg.draft_checkpoint
    if not path.exists():
        return None
    from engine.draft_model import load_draft
    return load_draft(path, target)


def run_benchmark(cfg: BenchArgs) -> dict:
    from transformers.utils import logging as hf_logging

    from engine.models import load_model

    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    began = time.perf_counter()
    info = {"machine_start": machine_info()}
    loaded = load_model(cfg.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    draft = load_draft_model(cfg, loaded)
    configs = select_configs(all_configs(draft is not None), cfg.configs)
    prompts = sample_prompts(cfg.prompts_per_category, cfg.category_list, cfg.seed)[cfg.first_prompt:]
    if not prompts:
        raise ValueError(f"--first-prompt {cfg.first_prompt} skips every sampled prompt")
    encoded = [encode_chat(tokenizer, p.text) for p in prompts]
    max_len = max(2048, max(len(ids) for ids in encoded) + cfg.max_new_tokens + 16)
    # suffix history off: every prompt is replayed once per config, so remembered outputs would leak answers
    engine = Engine(model, tokenizer, EngineConfig(max_model_len=max_len, ngram_max_match=cfg.ngram_max_match,
                                                   suffix_max_history=0),
                    drafts={"draft": draft} if draft is not None else None)
    counter = ForwardCounter(model)
    print(f"model {loaded.name}; {len(prompts)} prompts; configs: {', '.join(c.name for c in configs)}", flush=True)

    logit_check = check_logits(model, engine, encoded[0])
    print(f"logits ours vs transformers ({logit_check['num_tokens']} tokens): max abs diff prefill "
          f"{logit_check['prefill_max_abs_diff']:.2e}, decode {logit_check['decode_max_abs_diff']:.2e} "
          f"(logits up to {logit_check['logit_scale_max_abs']:.1f})", flush=True)

    def run(config: BenchConfig, ids: list[int], max_new: int = cfg.max_new_tokens):
        if config.system == "hf":
            return run_hf(model, counter, ids, config, max_new, cfg.ngram_max_match)
        return run_ours(engine, ids, config, max_new)

    warm_ids = encode_chat(tokenizer, "Say hello and repeat: hello hello hello.")
    for config in configs:                     # warm-up: first calls allocate caches and pick kernels
        run(config, warm_ids, 8)

    records: list[RunRecord] = []
    num_done = 0
    for index, (prompt, ids) in enumerate(zip(prompts, encoded)):
        if cfg.max_minutes and time.perf_counter() - began > cfg.max_minutes * 60:
            print(f"time limit reached: {num_done} of {len(prompts)} prompts done", flush=True)
            break
        shift = index % len(configs)            # rotate the order so no config always runs first
        records += run_prompt(prompt, ids, configs[shift:] + configs[:shift], run, model, tokenizer,
                              label=f"{index + 1}/{len(prompts)}")
        num_done += 1

    counter.handle.remove()
    summary = aggregate(records, configs, HF_PLAIN)
    data = {
        "command": " ".join(["python -m bench.bench_engine", *sys.argv[1:]]),
        "args": vars(cfg), "model": loaded.name, "model_sha256": loaded.sha256,
        "has_draft": draft is not None, "num_prompts_planned": len(prompts), "num_prompts_done": num_done,
        "wall_s": time.perf_counter() - began, "process_peak_rss_mb": process_peak_rss_mb(),
        "peak_rss_is_windowed": PeakRSS().reset_is_windowed(), "logit_check": logit_check,
        **info, "machine_end": machine_info(), **summary,
        "prompts": [{"question_id": p.question_id, "category": p.category, "num_prompt_tokens": len(ids),
                     "hf_text": tokenizer.decode(next(r.tokens for r in records
                                                      if r.config == HF_PLAIN and r.question_id == p.question_id))}
                    for p, ids in zip(prompts[:num_done], encoded[:num_done])],
        "runs": [{**vars(r), "num_output_tokens": len(r.tokens),
                  "tokens": r.tokens if r.config == HF_PLAIN or not r.is_identical_to_hf else None}
                 for r in records],
    }
    return data


def main(cfg: BenchArgs) -> dict:
    if cfg.merge:
        data = merge_results(cfg.merge.split(","), HF_PLAIN)
        data["command"] += " && " + " ".join(["python -m bench.bench_engine", *sys.argv[1:]])
    else:
        data = run_benchmark(cfg)
    publish_results(cfg.output_name, data, render_markdown(data))
    return data


if __name__ == "__main__":
    main(parse_dataclass(BenchArgs))
