"""Summaries and issue targets of the chains benchmark (bench/bench_chains.py; its markdown:
bench/chains_markdown.py).

Speeds are ratios of sums: new tokens / seconds over the same prompts for every column, per
category and on the mix (all categories together, so longer runs weigh more; not a geometric
mean). "Best static" per category is the fastest (chain, K) on that category (an oracle that
picks after the fact); the "best single static" is the one fastest on the mix.
"""

from __future__ import annotations

from collections import defaultdict

from engine.decision import Decision

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
    return len(Decision.parse(config).chain) if "@" in config else 1


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
