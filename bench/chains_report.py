"""Summaries, issue targets and markdown of the chains benchmark (bench/bench_chains.py).

Speeds are ratios of sums: new tokens / seconds over the same prompts for every column, per
category and on the mix (all categories together, so longer runs weigh more; not a geometric
mean). "Best static" per category is the fastest (chain, K) on that category (an oracle that
picks after the fact); the "best single static" is the one fastest on the mix.
"""

from __future__ import annotations

from collections import defaultdict

from bench.chains_analysis import render_plane
from bench.common import markdown_table

PLAIN = "plain"              # column names bench_chains gives plain decoding and the two routers
COST_MODEL = "cost-model"
LEARNED = "learned"          # the served learned policy (serving.router.GuardedRouter, cost-model fallback)
LLAMA_CPP = "llama.cpp"      # the speed anchor: llama.cpp on the same GGUF (bench/engine_columns.py)
COST_FLOOR = 0.97            # the cost model is never below this x plain
MAX_OVERHEAD = 0.01          # routing decision time / step time
MAX_RSS_MB = 1.5 * 1024      # engine + model + draft at batch 16
MULTILEVEL_MARGIN = 0.05     # a >= 3-level chain must beat the best 2-level one by this much


def _speed(runs: list[dict]) -> float | None:
    seconds = sum(r["elapsed_s"] for r in runs)
    return sum(r["num_tokens"] for r in runs) / seconds if seconds else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _run_spread(runs: list[dict]) -> float | None:
    """max / min - 1 of the speed of each repeat over `runs` (repeat i of every prompt together):
    how far apart identical work timed; None with one run."""
    repeats = min((len(r.get("elapsed_runs_s", ())) for r in runs), default=0)
    if repeats < 2:
        return None
    tokens = sum(r["num_tokens"] for r in runs)
    speeds = [tokens / sum(r["elapsed_runs_s"][i] for r in runs) for i in range(repeats)]
    return max(speeds) / min(speeds) - 1


def _plain_share(runs: list[dict]) -> float | None:
    """Share of the router's steps that decoded plainly."""
    total = sum(sum(r["choices"].values()) for r in runs)
    return sum(r["choices"].get(PLAIN, 0) for r in runs) / total if total else None


def _group_row(runs: list[dict], columns: list, cost_name: str = COST_MODEL, plain_name: str = PLAIN) -> dict:
    """Tokens/s of every column over `runs`, with the ratios the tables show."""
    by_config = defaultdict(list)
    for run in runs:
        by_config[run["config"]].append(run)
    speed = {c.name: _speed(by_config[c.name]) for c in columns}
    plain = speed.get(plain_name)
    statics = [c for c in columns if c.is_static and speed[c.name] is not None]
    best = max(statics, key=lambda c: speed[c.name], default=None)
    per_chain: dict[str, dict] = {}
    for c in statics:
        if c.chain not in per_chain or speed[c.name] > per_chain[c.chain]["tokens_per_s"]:
            per_chain[c.chain] = dict(config=c.name, levels=len(c.decision.chain), tokens_per_s=speed[c.name],
                                      x_plain=_ratio(speed[c.name], plain))
    two = [v["tokens_per_s"] for v in per_chain.values() if v["levels"] == 2]
    three = [v["tokens_per_s"] for v in per_chain.values() if v["levels"] >= 3]
    anchor = _speed(by_config[LLAMA_CPP])
    return dict(tokens_per_s=speed, x_plain={n: _ratio(s, plain) for n, s in speed.items()},
                llama_cpp_tokens_per_s=anchor,
                x_llama_cpp={n: _ratio(s, anchor) for n, s in speed.items()} if anchor else {},
                best_static=best.name if best else None, best_static_tokens_per_s=speed[best.name] if best else None,
                cost_x_plain=_ratio(speed.get(cost_name), plain),
                cost_x_best_static=_ratio(speed.get(cost_name), speed[best.name] if best else None),
                learned_x_plain=_ratio(speed.get(LEARNED), plain),
                learned_x_cost_model=_ratio(speed.get(LEARNED), speed.get(cost_name)),
                best_k_per_chain=per_chain,
                three_level_x_best_two_level=_ratio(max(three), max(two)) if three and two else None,
                identical_to_plain={n: all(r["is_identical_to_plain"] for r in by_config[n]) for n in speed},
                plain_run_spread=_run_spread(by_config[plain_name]),
                cost_plain_share=_plain_share(by_config[cost_name]),
                num_prompts=len(by_config[plain_name]))


def _overhead(rows: list[dict]) -> float | None:
    step_s = sum(r["step_s"] for r in rows)
    return sum(r["decide_s"] for r in rows) / step_s if step_s else None


def summarise(records: list[dict], load_rows: list[dict], columns: list, rss: dict,
              cost_name: str = COST_MODEL, plain_name: str = PLAIN) -> dict:
    """Per-category and mixed batch-1 figures, the load table, overhead, losslessness and targets."""
    categories = list(dict.fromkeys(r["category"] for r in records))
    per_category = {c: _group_row([r for r in records if r["category"] == c], columns, cost_name, plain_name)
                    for c in categories}
    mixed = _group_row(records, columns, cost_name, plain_name) if records else {}
    load = []
    for concurrency in dict.fromkeys(r["concurrency"] for r in load_rows):
        rows = {r["config"]: r for r in load_rows if r["concurrency"] == concurrency}
        plain = rows.get(plain_name, {}).get("tokens_per_s")
        statics = [r for name, r in rows.items() if name not in (plain_name, cost_name, LEARNED)]
        best = max(statics, key=lambda r: r["tokens_per_s"], default=None)
        cost = rows.get(cost_name, {}).get("tokens_per_s")
        learned = rows.get(LEARNED, {}).get("tokens_per_s")
        load.append(dict(concurrency=concurrency, rows=[dict(r, x_plain=_ratio(r["tokens_per_s"], plain))
                                                        for r in rows.values()],
                         best_static=best["config"] if best else None, cost_x_plain=_ratio(cost, plain),
                         cost_x_best_static=_ratio(cost, best["tokens_per_s"] if best else None),
                         learned_x_plain=_ratio(learned, plain), learned_x_cost_model=_ratio(learned, cost)))
    cost_batch1 = [r for r in records if r["config"] == cost_name]
    cost_load = [r for r in load_rows if r["config"] == cost_name]
    learned_rows = [r for r in records + load_rows if r["config"] == LEARNED]
    overhead = dict(batch1=_overhead(cost_batch1), load=_overhead(cost_load),
                    all=_overhead(cost_batch1 + cost_load), learned=_overhead(learned_rows))
    ours = [r for r in records if not r.get("is_baseline")]
    lossless = dict(batch1_identical=sum(r["is_identical_to_plain"] for r in ours), batch1_runs=len(ours),
                    load_identical=sum(r["num_identical_to_plain"] or 0 for r in load_rows
                                       if r["num_identical_to_plain"] is not None),
                    load_requests=sum(r["num_requests"] for r in load_rows if r["num_identical_to_plain"] is not None))
    summary = dict(categories=per_category, mixed=mixed, load=load, decision_overhead=overhead, lossless=lossless,
                   cost_model_choices=_choices(cost_batch1), cost_model_load_choices=_choices(cost_load),
                   learned_choices=_choices([r for r in records if r["config"] == LEARNED]),
                   learned_load_choices=_choices([r for r in load_rows if r["config"] == LEARNED]))
    summary["targets"] = targets(summary, rss)
    summary["summary"] = headline(summary, load_rows, cost_name, plain_name)
    return summary


def _levels_of(config: str) -> int:
    return len(config.split("@")[0].split(">")) if "@" in config else 1


def _beats(ratio: float | None, spread: float | None) -> bool:
    """A >= 3-level chain wins where it beats the best 2-level one by >= 5% and by more than
    plain's own repeat spread (identical work timed again)."""
    return ratio is not None and ratio - 1 >= max(MULTILEVEL_MARGIN, spread or 0.0)


def _best_router(row: dict) -> float | None:
    """The faster router's speed / plain's in a summary row (the learned policy may be absent)."""
    ratios = [r for r in (row.get("cost_x_plain"), row.get("learned_x_plain")) if r is not None]
    return max(ratios) if ratios else None


def headline(summary: dict, load_rows: list[dict], cost_name: str = COST_MODEL, plain_name: str = PLAIN) -> dict:
    """The issue's `summary` keys: multilevel wins over categories and concurrencies, and the
    best router's (cost model or learned policy) speed over plain on the batch-1 mix and at
    concurrency 8; beside them, the learned policy's own ratios."""
    wins = sum(_beats(row["three_level_x_best_two_level"], row["plain_run_spread"])
               for row in summary["categories"].values())
    for concurrency in dict.fromkeys(r["concurrency"] for r in load_rows):
        rows = [r for r in load_rows if r["concurrency"] == concurrency]
        two = [r["tokens_per_s"] for r in rows if _levels_of(r["config"]) == 2]
        three = [r["tokens_per_s"] for r in rows if _levels_of(r["config"]) >= 3]
        plain = next((r.get("tokens_per_s_runs") or [] for r in rows if r["config"] == plain_name), [])
        spread = max(plain) / min(plain) - 1 if len(plain) > 1 else None
        wins += _beats(_ratio(max(three), max(two)) if three and two else None, spread)
    c8 = next((row for row in summary["load"] if row["concurrency"] == 8), {})
    return dict(multilevel_wins=float(wins), best_router_x_plain_mix=_best_router(summary["mixed"]),
                best_router_x_plain_c8=_best_router(c8), cost_model_x_plain_mix=summary["mixed"].get("cost_x_plain"),
                cost_model_x_plain_c8=c8.get("cost_x_plain"), learned_x_plain_mix=summary["mixed"].get("learned_x_plain"),
                learned_x_plain_c8=c8.get("learned_x_plain"),
                best_router_x_llama_cpp_mix=max((summary["mixed"].get("x_llama_cpp", {}).get(n) or 0.0
                                                 for n in (cost_name, LEARNED)), default=0.0) or None,
                plain_x_llama_cpp_mix=summary["mixed"].get("x_llama_cpp", {}).get(plain_name))


def _choices(rows: list[dict]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for row in rows:
        for label, count in row["choices"].items():
            total[label] += count
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def targets(summary: dict, rss: dict) -> dict:
    """Each target of the issue: the figure it is judged on and whether it is met (None: not measured)."""
    floors = [row["cost_x_plain"] for row in summary["categories"].values()]
    floors += [row["cost_x_plain"] for row in summary["load"]]
    floors = [f for f in floors if f is not None]
    mixed = summary["mixed"]
    three = [row["three_level_x_best_two_level"] for row in summary["categories"].values()]
    three = [t for t in three if t is not None]
    overhead = summary["decision_overhead"]["all"]
    peak = rss.get("peak_rss_mb")
    lossless = summary["lossless"]
    return {
        "cost_never_below_0.97x_plain": dict(value=min(floors) if floors else None,
                                             is_met=min(floors) >= COST_FLOOR if floors else None),
        "cost_at_least_best_single_static_on_mix": dict(
            value=mixed.get("cost_x_best_static"), best_static=mixed.get("best_static"),
            is_met=mixed["cost_x_best_static"] >= 1.0 if mixed.get("cost_x_best_static") is not None else None),
        "three_level_beats_every_two_level_somewhere": dict(value=max(three) if three else None,
                                                            is_met=max(three) > 1.0 if three else None),
        "decision_overhead_below_1pct": dict(value=overhead,
                                             is_met=overhead < MAX_OVERHEAD if overhead is not None else None),
        "peak_rss_at_batch_16_within_1.5GiB": dict(
            value=peak, concurrency=rss.get("concurrency"),
            is_met=peak <= MAX_RSS_MB if peak is not None and rss.get("concurrency") == 16 else None),
        "lossless_batch1": dict(value=f"{lossless['batch1_identical']}/{lossless['batch1_runs']}",
                                is_met=lossless["batch1_identical"] == lossless["batch1_runs"]
                                if lossless["batch1_runs"] else None),
    }


def _fmt_x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def render_markdown(data: dict) -> str:
    chains = list(dict.fromkeys(data["chains"].values()))
    lines = [f"# Chains benchmark: {data['model']}{' + trained draft' if data['has_draft'] else ''}", "",
             f"`{data['command']}`  ",
             f"{data['machine_start'].get('cpu_count')} CPUs, torch threads {data['machine_end'].get('torch_threads')}, "
             f"load average {data['machine_start'].get('load_average')} -> {data['machine_end'].get('load_average')}; "
             f"greedy, {data['args'].get('max_tokens', data['args'].get('max_new_tokens'))} new tokens; wall {data['wall_s'] / 60:.1f} min. "
             "Speeds are total tokens / total seconds (per category and on the mix)."
             + (f" Plain and the cost model: the median of {data['args']['repeats']} interleaved runs (batch 1: per "
                "prompt, each from the same state; under load: per concurrency); every other column runs once."
                if data["args"].get("repeats", 1) > 1 else ""), ""]
    if not data["has_draft"]:
        lines += ["**No trained draft**: only the ngram and suffix chains ran (no 3-level chain).", ""]
    rows_of = [*data["categories"].items(), *([("**mix**", data["mixed"])] if data["mixed"] else [])]
    lines += ["## Batch 1, per Spec-Bench category", "",
              markdown_table(["category", "plain tok/s", "plain run spread", "best static", "tok/s", "x plain",
                              "cost model tok/s", "x plain", "x best static", "cost model steps plain",
                              "learned tok/s", "x plain", "x cost model"],
                             [[name, row["tokens_per_s"][PLAIN], _pct(row.get("plain_run_spread")), row["best_static"],
                               row["best_static_tokens_per_s"], _fmt_x(row["x_plain"].get(row["best_static"])),
                               row["tokens_per_s"][COST_MODEL], _fmt_x(row["cost_x_plain"]),
                               _fmt_x(row["cost_x_best_static"]), _pct(row.get("cost_plain_share")),
                               row["tokens_per_s"].get(LEARNED, "n/a"), _fmt_x(row.get("learned_x_plain")),
                               _fmt_x(row.get("learned_x_cost_model"))]
                              for name, row in rows_of]), "",
              "Plain run spread: max / min - 1 of plain's own repeats (the same forwards timed again); "
              "a cost model that decoded plainly on 100% of the steps differs from plain by timing noise only.", "",
              *_llama_cpp_lines(rows_of, data.get("llama_cpp_skipped")),
              "Each chain at its best K (x plain), and the best 3-level chain against the best 2-level one:", "",
              markdown_table(["category", *chains, "3-level / best 2-level"],
                             [[name, *[_best_k_cell(row, chain) for chain in chains],
                               _fmt_x(row["three_level_x_best_two_level"])] for name, row in rows_of]), ""]
    if data.get("three_level_plane"):
        lines += render_plane(data["three_level_plane"])
    if data["load"]:
        lines += ["## Under load (closed loop, same distinct requests for every column)", "",
                  markdown_table(["concurrency", "column", "requests", "tok/s", "runs tok/s", "x plain", "mean TPOT ms",
                                  "mean TTFT ms", "mean batch", "same as plain"],
                                 [[block["concurrency"], r["config"], r["num_requests"], r["tokens_per_s"],
                                   " / ".join(f"{v:.3g}" for v in r.get("tokens_per_s_runs", [])),
                                   _fmt_x(r["x_plain"]), r["mean_tpot_ms"], r["mean_ttft_ms"], r["mean_batch"],
                                   "n/a" if r["num_identical_to_plain"] is None
                                   else f"{r['num_identical_to_plain']}/{r['num_requests']}"]
                                  for block in data["load"] for r in block["rows"]]), "",
                  "Columns under load: " + ", ".join(data["load_columns"]) + ". Requests: distinct Spec-Bench "
                  f"prompts of at most {data['args'].get('max_load_prompt_tokens') or 'any number of'} tokens. Outputs under load may differ from "
                  "plain's where batching changes float rounding (greedy ties); batch 1 is the losslessness check.", ""]
    overhead, lossless, rss = data["decision_overhead"], data["lossless"], data["rss_at_max_concurrency"]
    lines += ["## Overheads, memory, losslessness", "",
              f"- Routing decision overhead (cost model, time in `decide` / step time): batch 1 "
              f"{_pct(overhead['batch1'])}, under load {_pct(overhead['load'])}, all {_pct(overhead['all'])}.",
              f"- Cost model choices, batch 1: {_choice_text(data['cost_model_choices'])}; under load: "
              f"{_choice_text(data['cost_model_load_choices'])}.",
              *([f"- Learned policy: decision overhead {_pct(overhead.get('learned'))}; choices, batch 1: "
                 f"{_choice_text(data['learned_choices'])}; under load: {_choice_text(data['learned_load_choices'])}; "
                 f"{data['learned_router']}."] if data.get("learned_router") else []),
              f"- Peak RSS at concurrency {rss.get('concurrency', 'n/a')} (model"
              f"{' + draft' if data['has_draft'] else ''}, {'window of that part' if rss.get('is_windowed') else 'process'}):"
              f" {rss.get('peak_rss_mb', 0):.0f} MiB with prompts up to {rss.get('max_prompt_tokens', 'n/a')} tokens; "
              f"{data['rss_before_runs_mb']:.0f} MiB resident before the first request; "
              f"process peak (loading included) {data['process_peak_rss_mb']:.0f} MiB.",
              f"- Lossless at batch 1: {lossless['batch1_identical']}/{lossless['batch1_runs']} runs identical to plain; "
              f"under load {lossless['load_identical']}/{lossless['load_requests']} requests.", "",
              "## Targets (issue 4 item 7)", ""]
    for name, target in data["targets"].items():
        verdict = {True: "met", False: "NOT met", None: "not measured"}[target["is_met"]]
        value = target["value"]
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        extra = {k: v for k, v in target.items() if k not in ("value", "is_met")}
        lines.append(f"- {name}: {shown} -> **{verdict}**{' ' + str(extra) if extra else ''}")
    return "\n".join(lines)


def _llama_cpp_lines(rows_of: list[tuple[str, dict]], skipped: str | None) -> list[str]:
    """The speed anchor's table (llama.cpp on the same GGUF, same prompts, same rotation), or why it is absent."""
    if skipped:
        return [f"llama.cpp column skipped: {skipped}", ""]
    if not any(row.get("llama_cpp_tokens_per_s") for _, row in rows_of):
        return []
    names = [PLAIN, COST_MODEL, LEARNED]
    return ["Against llama.cpp (the same GGUF, Q4_1, greedy; run once per prompt in the same rotation):", "",
            markdown_table(["category", "llama.cpp tok/s", "plain x llama.cpp", "best static x llama.cpp",
                            "cost model x llama.cpp", "learned x llama.cpp"],
                           [[name, row.get("llama_cpp_tokens_per_s"),
                             *[_fmt_x(row["x_llama_cpp"].get(n)) for n in names[:1]],
                             _fmt_x(row["x_llama_cpp"].get(row["best_static"])),
                             *[_fmt_x(row["x_llama_cpp"].get(n)) for n in names[1:]]]
                            for name, row in rows_of if row.get("llama_cpp_tokens_per_s")]), ""]


def _best_k_cell(row: dict, chain: str) -> str:
    best = row["best_k_per_chain"].get(chain)
    return "n/a" if best is None else f"k{best['config'].rsplit('@k', 1)[-1]} {_fmt_x(best['x_plain'])}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _choice_text(choices: dict[str, int]) -> str:
    total = sum(choices.values())
    return ", ".join(f"{label} {100 * n / total:.0f}%" for label, n in list(choices.items())[:5]) if total else "none"
