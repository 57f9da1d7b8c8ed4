"""Engine benchmark: llama.cpp, transformers and our engine side by side, in ONE run, greedy.

Columns: llama.cpp plain on the same GGUF (skipped, with the reason printed, when
llama-cpp-python is not installed), HF `generate` fp32 and bf16, ours plain on every forward
path (`--paths`), ours with each model-free drafter at each K of its grid (the report keeps the
best K per drafter), ours with the served cost-model router and with the served learned router.
For each prompt every column runs back to back, in an order rotated per prompt, so a change of
machine load hits every column alike. Then, on the default path: the verification curve
(batch 1/4/16 x 1..17 tokens), and in a fresh process the batch-16 overhead and peak RSS.

    .venv/bin/python -m bench.bench_engine --num-threads 2                    # full run
    .venv/bin/python -m bench.bench_engine --prompts-per-category 1 --mt-bench 1 --sharegpt 1 \\
        --max-tokens 16 --output-name engine_smoke                        # smoke run
"""

from __future__ import annotations

import fnmatch
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field

import torch

from bench.bench_models import encode_chat
from bench.common import REPO_ROOT, BenchPrompt, PeakRSS, process_peak_rss_mb, sample_prompts
from bench.engine_columns import (
    EngineColumn,
    ForwardTimer,
    Generation,
    HFColumn,
    llama_cpp_missing_reason,
    served_router,
)
from bench.engine_curve import decode_verify_bitwise, non_product_share, verification_curve
from bench.engine_report import LLAMA_CPP, render_markdown, summarize
from bench.llama_cpp_column import ColumnFailed, LlamaCppProcess
from bench.plots import plot_results
from cli.dataclass_args import parse_dataclass
from cli.results import RESULTS_DIR, cpu_model, machine_info, publish_results
from engine import Decision, Engine, EngineConfig
from engine.autotune import choose_path
from engine.config import num_threads_field
from env.prompt_sources import load_prompts

DRAFTER_GRID = {"ngram": (4,), "suffix": (4, 8)}
INT4_K = 5


@dataclass
class BenchArgs:
    """llama.cpp vs transformers vs our engine (plain per forward path, drafters, routers), greedy."""

    model: str = field(default="default", metadata={"help": "'default' (embedded SmolLM2 GGUF) or a local .gguf"})
    prompts_per_category: int = field(default=3, metadata={"help": "Spec-Bench prompts per category (13)"})
    mt_bench: int = field(default=8, metadata={"help": "MT-bench prompts (not among the Spec-Bench ones)"})
    sharegpt: int = field(default=8, metadata={"help": "ShareGPT prompts"})
    max_tokens: int = field(default=128, metadata={"help": "new tokens per prompt (EOS may stop earlier)",
                                                   "aliases": ["--max-new-tokens"]})
    paths: str = field(default="", metadata={
        "help": "forward paths for 'ours plain' (dtype-kernel); empty: every path the self-test measured "
                "(engine.autotune); the default path (auto) always runs"})
    llama_lookup: str = field(default="2", metadata={
        "help": "llama.cpp prompt-lookup columns: draft tokens per step, comma-separated ('' = none)"})
    max_slowdown: float = field(default=6.0, metadata={
        "help": "drop a column whose warm-up is this many times slower than ours plain (printed, kept in the JSON)"})
    configs: str = field(default="", metadata={"help": "column names or patterns to run (empty: all)"})
    policy: str = field(default="checkpoints/router", metadata={"help": "learned router checkpoint"})
    draft: str = field(default="checkpoints/draft", metadata={"help": "draft checkpoint for the default path's engine"})
    seed: int = field(default=0, metadata={"help": "prompt sampling seed"})
    num_threads: int = num_threads_field(2, "torch and llama.cpp threads (>= 1: llama.cpp needs a count)")
    max_minutes: float = field(default=0.0, metadata={"help": "stop starting new prompts after this; 0 = no limit"})
    output_name: str = field(default="engine", metadata={"help": "writes bench/results/<name>.json and .md"})
    remeasure_batch16: bool = field(default=False, metadata={
        "help": "rerun only the batch-16 RSS/overhead process and republish <name>.json (its other figures kept)"})

    def __post_init__(self) -> None:
        if min(self.prompts_per_category, self.mt_bench, self.sharegpt) < 0 or self.max_tokens < 1:
            raise ValueError("prompt counts must be >= 0 and --max-tokens >= 1")
        if self.num_threads < 1 or self.max_minutes < 0:
            raise ValueError("--num-threads must be >= 1 and --max-minutes >= 0")


def bench_prompts(cfg: BenchArgs) -> list[BenchPrompt]:
    """Spec-Bench round-robin by category, then MT-bench and ShareGPT prompts (first turns)."""
    prompts = sample_prompts(cfg.prompts_per_category, None, cfg.seed) if cfg.prompts_per_category else []
    taken = {p.question_id for p in prompts}
    mt = [p for p in load_prompts("mt_bench") if int(p.item_id) not in taken][: cfg.mt_bench]
    prompts += [BenchPrompt(int(p.item_id), "mt_bench", p.text) for p in mt]
    sharegpt = load_prompts("sharegpt")[: cfg.sharegpt]
    prompts += [BenchPrompt(100000 + i, "sharegpt", p.text) for i, p in enumerate(sharegpt)]
    return prompts


def build_engine(model: str, path: str, max_len: int, draft: str = "", quantized_levels: str = "") -> Engine:
    """A fresh model on one forward path; the default path's engine also gets the draft and the
    int4 copy, whose chains the routers' actions include."""
    from engine.build import DraftSpec
    dtype, kernel = path.split("-")
    drafts = [DraftSpec("draft", REPO_ROOT / draft, if_absent="skip")] if draft else []
    # suffix history off: every prompt is replayed once per column, so remembered outputs would leak answers
    config = EngineConfig(max_model_len=max_len, suffix_max_history=0, dtype=dtype, kernel=kernel,
                          release_model_weights=True, quantized_levels=quantized_levels)
    return Engine.from_pretrained(model, drafts=drafts, config=config)


def peak_rss_batch16(cfg: BenchArgs) -> dict:
    """Engine + draft on the default path at batch 16, in a fresh process (this one holds every column)."""
    command = [sys.executable, "-m", "bench.engine_memory", "--num-threads", str(cfg.num_threads)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=1800)
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-500:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_benchmark(cfg: BenchArgs) -> dict:
    from transformers.utils import logging as hf_logging

    from engine.models import fetch_embedded_gguf, load_model

    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(cfg.num_threads)
    began = time.perf_counter()
    machine_start = machine_info()
    loaded = load_model(cfg.model)
    tokenizer = loaded.tokenizer
    choice = choose_path(load_model(cfg.model).model)   # the self-test `auto` runs, on a copy (cached)
    print(choice.table(), flush=True)
    default_path = choice.path
    measured = [m.path for m in choice.measurements if m.available]
    wanted_paths = [p.strip() for p in cfg.paths.split(",") if p.strip()] or measured
    paths = list(dict.fromkeys([default_path, *wanted_paths]))
    prompts = bench_prompts(cfg)
    encoded = [encode_chat(tokenizer, p.text) for p in prompts]
    max_len = max(2048, max(len(ids) for ids in encoded) + cfg.max_tokens + 16)
    eos = {t for t in (tokenizer.eos_token_id, loaded.model.config.eos_token_id) if t is not None}

    columns: dict[str, object] = {}
    skipped: dict[str, str] = {}
    reason = llama_cpp_missing_reason()
    llama = None
    if reason is None:
        gguf = fetch_embedded_gguf() if cfg.model == "default" else cfg.model
        lookups = tuple(int(k) for k in cfg.llama_lookup.split(",") if k.strip())
        try:
            llama = LlamaCppProcess(gguf, cfg.num_threads, max_len, eos, lookups)
            for variant in llama.variants:
                columns[LLAMA_CPP if variant == "plain" else f"llamacpp-{variant}"] = llama.column(variant)
        except ColumnFailed as exc:
            reason = str(exc)
    if reason is not None:
        skipped[LLAMA_CPP] = reason
        print(f"skipping {LLAMA_CPP}: {reason}", flush=True)
    columns["hf-float32"] = HFColumn(loaded.model, eos)
    hf_bf16 = load_model(cfg.model).model.to(torch.bfloat16)
    columns["hf-bfloat16"] = HFColumn(hf_bf16, eos)
    engines: dict[str, Engine] = {}
    timers: dict[str, ForwardTimer] = {}
    for path in paths:
        default = path == default_path
        engines[path] = build_engine(cfg.model, path, max_len, cfg.draft if default else "", "int4" if default else "")
        timers[path] = ForwardTimer(engines[path].levels["target"].runner)
        columns[f"ours-plain-{path}"] = EngineColumn(engines[path], timers[path], Decision())
    default = engines[default_path]
    for drafter, ks in DRAFTER_GRID.items():
        for k in ks:
            columns[f"ours-{drafter}-k{k}"] = EngineColumn(default, timers[default_path], Decision((drafter, "target"), k))
    columns[f"ours-int4-k{INT4_K}"] = EngineColumn(default, timers[default_path], Decision(("int4", "target"), INT4_K))
    for router in ("cost-model", "learned"):
        state = served_router(default, router, loaded.name, cfg.policy)
        columns[f"ours-{router}"] = EngineColumn(default, timers[default_path], state=state)
    wanted = [p.strip() for p in cfg.configs.split(",") if p.strip()]
    if wanted:
        keep = {f"ours-plain-{default_path}"}
        columns = {n: c for n, c in columns.items() if n in keep or any(fnmatch.fnmatch(n, w) for w in wanted)}
    print(f"{loaded.name}; default path {default_path}; {len(prompts)} prompts; columns: {', '.join(columns)}",
          flush=True)

    warm = encode_chat(tokenizer, "Say hello and repeat: hello hello hello.")
    warm_tok_s = {}
    for name in list(columns):                      # first calls allocate caches and pick kernels
        try:
            columns[name](warm, 8)
            generation = columns[name](warm, 16)
            warm_tok_s[name] = len(generation.tokens) / generation.elapsed_s
        except ColumnFailed as exc:
            skipped[name] = str(exc)
            del columns[name]
    reference = warm_tok_s[f"ours-plain-{default_path}"]
    for name, rate in warm_tok_s.items():
        if name in columns and rate * cfg.max_slowdown < reference:
            skipped[name] = (f"{rate:.1f} tok/s at warm-up, over {cfg.max_slowdown:g}x slower than ours plain "
                             f"({reference:.1f}) on this CPU: not run on the prompts")
            print(f"dropping {name}: {skipped[name]}", flush=True)
            del columns[name]
    names = list(columns)

    runs: list[dict] = []
    rss = PeakRSS()
    num_done = 0
    for index, (prompt, ids) in enumerate(zip(prompts, encoded)):
        if cfg.max_minutes and time.perf_counter() - began > cfg.max_minutes * 60:
            print(f"time limit reached: {num_done} of {len(prompts)} prompts done", flush=True)
            break
        shift = index % len(names)
        done = []
        for name in names[shift:] + names[:shift]:
            rss.reset()
            try:
                generation: Generation = columns[name](ids, cfg.max_tokens)
            except ColumnFailed as exc:
                skipped[name] = str(exc)
                print(f"dropping {name}: {exc}", flush=True)
                continue
            done.append(name)
            runs.append({"config": name, "question_id": prompt.question_id, "category": prompt.category,
                         "num_prompt_tokens": len(ids), "tokens": generation.tokens,
                         "elapsed_s": generation.elapsed_s, "num_steps": generation.num_steps,
                         "num_draft_tokens": generation.num_draft_tokens,
                         "num_accepted_tokens": generation.num_accepted_tokens,
                         "forward_s": generation.forward_s, "peak_rss_mb": rss.read_mb()})
        names = [n for n in names if n not in skipped]
        line = " ".join(f"{r['config']}={len(r['tokens']) / r['elapsed_s']:.1f}" for r in runs[-len(done):])
        print(f"[{index + 1}/{len(prompts)} {prompt.category} q{prompt.question_id}] tok/s {line}", flush=True)
        num_done += 1
    if llama is not None:
        llama.close()

    print("decode vs verify on the default path ...", flush=True)
    invariance = decode_verify_bitwise(default.levels["target"].runner, encoded[:: max(1, len(encoded) // 6)][:6])
    print(f"  {invariance}", flush=True)
    print("non-product share of a decode step (before: SDPA attention; after: invariant attention) ...", flush=True)
    runner = default.levels["target"].runner
    overhead = {}
    for label, invariant in (("before_sdpa", False), ("after_invariant", True)):
        runner.invariant = invariant
        overhead[label] = {str(b): non_product_share(runner, b) for b in (1, 16)}
    runner.invariant = default.config.attention == "invariant"
    print(f"  {overhead}", flush=True)
    print("verification curve ...", flush=True)
    curves = {path: verification_curve(engines[path].levels["target"].runner,
                                       batches=(1, 4, 16) if path == default_path else (1,))
              for path in paths}
    print("batch-16 overhead and peak RSS (fresh process) ...", flush=True)
    batch16 = peak_rss_batch16(cfg)
    data = {
        "command": " ".join(["python -m bench.bench_engine", *sys.argv[1:]]),
        "args": vars(cfg), "model": loaded.name, "model_sha256": loaded.sha256, "default_path": default_path,
        "cpu": cpu_model(), "path_selftest": choice.to_json(), "decode_verify": invariance,
        "non_product_share": overhead,
        "paths": paths, "columns": names, "skipped_columns": skipped, "num_prompts_planned": len(prompts),
        "num_prompts_done": num_done, "wall_s": time.perf_counter() - began,
        "process_peak_rss_mb": process_peak_rss_mb(), "machine_start": machine_start, "machine_end": machine_info(),
        "verification_curves": curves, "batch16": batch16, "runs": runs,
    }
    data.update(summarize(data, hf_model=loaded.model, tokenizer=tokenizer, encoded=dict(
        zip([p.question_id for p in prompts], encoded))))
    return data


def remeasure_batch16(cfg: BenchArgs) -> dict:
    """The published run with its batch-16 figures measured again (the command is appended);
    every other figure is recomputed from the same runs, the mismatches as that run explained them."""
    data = json.loads((RESULTS_DIR / f"{cfg.output_name}.json").read_text())
    data["batch16"] = peak_rss_batch16(cfg)
    data["command"] += " && " + " ".join(["python -m bench.bench_engine", *sys.argv[1:]])
    mismatches = data["mismatches"]
    data.update(summarize(data))
    data["mismatches"] = mismatches
    return data


def main(cfg: BenchArgs) -> dict:
    data = remeasure_batch16(cfg) if cfg.remeasure_batch16 else run_benchmark(cfg)
    json_path, _ = publish_results(cfg.output_name, data, render_markdown(data))
    plot_results(data, json_path)
    return data


if __name__ == "__main__":
    from cli.missing_data import exit_on_missing_data
    with exit_on_missing_data():
        main(parse_dataclass(BenchArgs))
