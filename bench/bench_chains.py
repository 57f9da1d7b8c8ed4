"""Chains benchmark: no speculation, every static (chain, K), the cost-model router and the learned
policy, in one run.

Two parts on one engine with the embedded model (and the trained draft when
`--draft`/manifest.json exists; without it only the ngram and suffix chains run):

* batch 1: every Spec-Bench prompt runs every column back to back (order rotated per prompt),
  greedy; each output is checked against plain decoding's (lossless). Tokens/s per category.
* under load: for each concurrency N a closed loop on the Engine API keeps N requests in flight
  until the same M requests (distinct prompts) completed; throughput, mean TPOT and TTFT.

Every column gets its own drafter history and acceptance trackers (`ColumnSwitch`), so no column
learns from another's run of the same prompt; a column's history carries over between its own
prompts, as a server's would. The cost model is built as the server builds it
(`serving.launch.build_fallback`: the shipped profile, levels it lacks measured at start-up), and
the learned policy runs as the server runs it (`serving.launch.state_for_engine`: the guarded
router, the cost model as its fallback, its observer told of every arrival and step).
Writes <output-dir>/<output-name>.json and .md.

    .venv/bin/python -m bench.bench_chains                  # 13 categories x 1 prompt, 48 tokens
    .venv/bin/python -m bench.bench_chains --categories qa,coding --max-tokens 8 --ks 2 \
        --concurrency 1,4 --output-name chains_smoke --output-dir /tmp/chains_smoke
"""

from __future__ import annotations

import sys
import time
from collections import Counter

from bench.bench_models import draft_spec, encode_chat, load_bench_model, report_missing_draft, resolve_checkpoint
from bench.chains_analysis import three_level_plane
from bench.chains_args import ChainsBenchArgs
from bench.chains_markdown import render_markdown
from bench.chains_report import COST_MODEL, LEARNED, PLAIN, summarise
from bench.chains_runs import (
    ColumnSwitch,
    grid_columns,
    load_column_set,
    median_run,
    repeat_passes,
    run_batch1,
    run_load,
    run_one,
)
from bench.common import (
    BenchPrompt,
    PeakRSS,
    process_peak_rss_mb,
    sample_prompts,
)
from bench.llama_cpp_column import build_llama_cpp
from bench.plots import plot_results
from cli.dataclass_args import parse_dataclass
from cli.results import machine_info, publish_results
from data.spec_bench import load_spec_bench
from engine import Engine, EngineConfig
from serving.config import ServerConfig


def run_chains(engine: Engine, cost_router, prompts: list[tuple[BenchPrompt, list[int]]],
               load_prompts: list[list[int]], cfg: ChainsBenchArgs, model_levels: list[str], began: float,
               learned_router=None, baselines: dict | None = None) -> dict:
    """The benchmark on a built engine (tests call it with tiny models): batch 1, then under load.
    `learned_router`: the served `GuardedRouter` with a loaded policy (see `build_learned_router`);
    `baselines`: other engines run at batch 1 beside ours (bench/llama_cpp_column.py `build_llama_cpp`)."""
    import psutil

    rss_before_mb = psutil.Process().memory_info().rss / 2**20    # model(s) loaded, engine built, no request yet
    priors = dict(engine.trackers.priors)                  # the calibrated acceptance the trackers start from
    has_draft = "draft" in model_levels
    routers = {COST_MODEL: cost_router, **({LEARNED: learned_router} if learned_router is not None else {})}
    columns = grid_columns(model_levels, cfg.k_list, tuple(routers))
    switch = ColumnSwitch(engine, routers, reads_signals=frozenset(
        {LEARNED} if learned_router is not None and learned_router.observer.builder.signal_drafters else ()))
    for column in columns:                  # warm-up: first calls allocate caches and pick kernels
        router = switch.activate(column)
        run_one(engine, prompts[0][1], 4, router)
    for baseline in (baselines or {}).values():
        baseline(prompts[0][1], 4)
    if learned_router is not None:          # count the measured runs' decisions only
        learned_router.counts = dict.fromkeys(learned_router.counts, 0)
        learned_router.fallback_counts.clear()
    switch.forget()
    limit = 60 * cfg.max_minutes if cfg.max_minutes else None
    print(f"batch 1: {len(prompts)} prompts x {len(columns)} columns: {', '.join(c.name for c in columns)}",
          flush=True)
    records = run_batch1(switch, columns, prompts, cfg.max_tokens, began + 0.6 * limit if limit else None,
                         cfg.repeats, baselines)

    load_cols = load_column_set(columns, records, cfg.load_columns)
    load_rows, rss = [], {}
    peak = PeakRSS()
    for concurrency in cfg.concurrency_list:
        requests = load_prompts[:cfg.num_load_requests(concurrency)]
        if concurrency == max(cfg.concurrency_list):
            peak.reset()
        plain_outputs = None
        runs: dict[str, list[dict]] = {}
        for column in load_cols + repeat_passes(load_cols, cfg.repeats):
            if limit and time.perf_counter() - began > limit:
                print(f"time limit reached: load column {column.name} at concurrency {concurrency} skipped", flush=True)
                continue
            row, outputs = run_load(switch, column, requests, concurrency, cfg.max_tokens)
            plain_outputs = outputs if column.name == PLAIN and plain_outputs is None else plain_outputs
            row["num_identical_to_plain"] = (sum(a == b for a, b in zip(outputs, plain_outputs))
                                             if plain_outputs is not None else None)
            runs.setdefault(column.name, []).append(row)
            print(f"[load c={concurrency:<2} {len(requests)} req] {column.name:<24} {row['tokens_per_s']:7.2f} tok/s "
                  f"TPOT {row['mean_tpot_ms'] or 0:7.1f} ms  batch {row['mean_batch']:.1f}", flush=True)
        for column in load_cols:
            if column.name in runs:
                row, _ = median_run(runs[column.name], lambda r: r["elapsed_s"] / r["num_tokens"])
                load_rows.append({**row, "tokens_per_s_runs": [r["tokens_per_s"] for r in runs[column.name]]})
        if concurrency == max(cfg.concurrency_list):
            rss = dict(concurrency=concurrency, peak_rss_mb=peak.read_mb(), is_windowed=peak.is_windowed,
                       max_prompt_tokens=max(len(ids) for ids in requests))
    context = sum(len(ids) for _, ids in prompts) / max(len(prompts), 1) + cfg.max_tokens / 2
    plane = three_level_plane(cost_router.cost_model, priors, context) if has_draft else None
    learned_status = None
    if learned_router is not None:
        status = learned_router.status()
        total = sum(status["decisions"].values())
        fallbacks = ", ".join(f"{k} {v}" for k, v in status["fallbacks"].items()) or "none"
        learned_status = (f"policy {status['policy_version']}: {status['decisions'].get('fallback', 0)} of {total} "
                          f"decisions fell back to the cost model ({fallbacks})")
    return dict(has_draft=has_draft, columns=[c.name for c in columns], load_columns=[c.name for c in load_cols],
                three_level_plane=plane, learned_router=learned_status,
                learned_decisions=learned_router.status()["decisions"] if learned_router is not None else None,
                chains={c.name: c.chain for c in columns if c.is_static},
                num_prompts_planned=len(prompts), rss_before_runs_mb=rss_before_mb, rss_at_max_concurrency=rss,
                process_peak_rss_mb=process_peak_rss_mb(), batch1_runs=records, load_runs=load_rows,
                **summarise(records, load_rows, columns, rss))


def select_load_prompts(cfg: ChainsBenchArgs, tokenizer) -> list[list[int]]:
    """The distinct requests of the load part: as many as the highest concurrency needs, round-robin
    over the categories (seed + 1: not the batch-1 sample), none longer than --max-load-prompt-tokens."""
    num_load = max((cfg.num_load_requests(c) for c in cfg.concurrency_list), default=0)
    if not num_load:
        return []
    sizes = Counter(p.category for p in load_spec_bench())
    per_category = min(min(sizes[c] for c in cfg.category_list), -(-2 * num_load // len(cfg.category_list)))
    encoded = [encode_chat(tokenizer, p.text) for p in sample_prompts(per_category, cfg.category_list, cfg.seed + 1)]
    kept = [ids for ids in encoded if not cfg.max_load_prompt_tokens or len(ids) <= cfg.max_load_prompt_tokens]
    if len(kept) < num_load:
        raise ValueError(f"the load part needs {num_load} distinct prompts of at most {cfg.max_load_prompt_tokens} "
                         f"tokens; categories {cfg.category_list} have {len(kept)}: add categories, lower "
                         "--requests-per-slot or raise --max-load-prompt-tokens")
    return kept[:num_load]


def build_cost_router(engine: Engine, cfg: ChainsBenchArgs, model_name: str):
    """The server's cost model: its action list, profile and SLO (serving.launch.build_fallback)."""
    from serving.launch import build_fallback, default_actions, seed_acceptance_priors

    server = ServerConfig(profile=cfg.profile, profile_budget_s=cfg.profile_budget_s, slo_tpot_s=cfg.slo_tpot_s)
    seed_acceptance_priors(engine, model_name)          # as the server's trackers start
    return build_fallback(engine, server, default_actions(engine), model_name)


def build_learned_router(engine: Engine, cfg: ChainsBenchArgs, model_name: str, cost_router):
    """The server's guarded learned router on `engine`, `cost_router` its fallback; None (and why,
    printed) when the policy cannot load here."""
    from serving.launch import state_for_engine

    if not cfg.policy:
        return None
    server = ServerConfig(router="learned", policy=cfg.policy, slo_tpot_s=cfg.slo_tpot_s, decision_log="")
    router = state_for_engine(engine, server, model_name, fallback=cost_router).router
    if router.learned is None:
        print(f"learned column left out: {router.load_error}", flush=True)
        return None
    return router


def main(cfg: ChainsBenchArgs) -> dict:
    began = time.perf_counter()
    machine_start = machine_info()
    loaded = load_bench_model(cfg.model, cfg.num_threads)
    prompts = sample_prompts(cfg.prompts_per_category, cfg.category_list, cfg.seed)
    encoded = [(p, encode_chat(loaded.tokenizer, p.text)) for p in prompts]
    load_prompts = select_load_prompts(cfg, loaded.tokenizer)
    max_batch = max(cfg.concurrency_list, default=1)
    longest = max(len(ids) for ids in [e[1] for e in encoded] + load_prompts)
    max_len = max(2048, longest + cfg.max_tokens + 16)
    engine = Engine.from_pretrained(loaded, drafts=[draft_spec(cfg.draft, required=False)], config=EngineConfig(
        max_num_seqs=max_batch, max_model_len=max_len, max_num_tokens=max_len * max_batch,
        quantized_levels=cfg.quantized_levels, **cfg.precision_kwargs(release_model_weights=True)))
    report_missing_draft(engine)
    draft_path = str(resolve_checkpoint(cfg.draft)) if "draft" in engine.levels else None
    cost_router = build_cost_router(engine, cfg, loaded.name)
    learned_router = build_learned_router(engine, cfg, loaded.name, cost_router)
    baselines, llama_cpp_skipped = build_llama_cpp(cfg, loaded, max_len)
    print(f"{loaded.name}{' + draft ' + draft_path if draft_path else ''}; cost model over "
          f"{len(cost_router.cost_model.decisions)} decisions; {len(encoded)} prompts; load "
          f"{cfg.concurrency_list} over {len(load_prompts)} distinct prompts", flush=True)
    results = run_chains(engine, cost_router, encoded, load_prompts, cfg,
                         [name for name in engine.levels if name != "target"], began, learned_router, baselines)
    data = {"command": " ".join(["python -m bench.bench_chains", *sys.argv[1:]]),
            "args": vars(cfg),
            "model": loaded.name, "model_sha256": loaded.sha256, "draft": draft_path,
            "cost_model_decisions": [d.label for d in cost_router.cost_model.decisions],
            "llama_cpp_skipped": llama_cpp_skipped,
            "machine_start": machine_start, "machine_end": machine_info(), "wall_s": time.perf_counter() - began,
            **results}
    json_path, _ = publish_results(cfg.output_name, data, render_markdown(data), cfg.output_dir)
    plot_results(data, json_path)
    return data


if __name__ == "__main__":
    from cli.missing_data import exit_on_missing_data
    with exit_on_missing_data():
        main(parse_dataclass(ChainsBenchArgs))
