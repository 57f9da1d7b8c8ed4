"""bench_serving's summary: the routers against every fixed configuration, cell by cell.

A *cell* is one load (a closed loop of c clients, or Poisson arrivals at one rate); a *run* is one
configuration measured once in one cell. The routers are the learned policy and the cost model;
the fixed configurations are plain decoding and every static (chain, K). A configuration's figure
in a cell is its output tokens/s averaged over the repeats.

    router_x_best_fixed_min   min over cells of max(learned, cost-model) / max(plain, every static)
    learned_x_cost_model_min  min over cells of learned / cost-model (and _max)
    learned_x_cost_model_paired  geometric mean of learned / cost-model over the (cell, repeat)
                              pairs, with a 95% Student t interval on the log ratios (exp'd back)
    router_x_plain_c1         max(learned, cost-model) / plain in the closed loop of one client
    fallback_share            fallback decisions / all decisions of the learned server's runs
    decision_p99_ms           per router server, the 99th percentile of its decision time
                              (interpolated in /metrics' histogram buckets, as Prometheus does)
"""

from __future__ import annotations

import math

import numpy as np

from agents.evaluate import mean_ci

ROUTERS = ("learned", "cost-model")
CLOSED_C1 = "closed c=1"
TARGETS = {"router_x_best_fixed_min": 0.98, "router_x_plain_c1": 1.5, "learned_x_cost_model_min": 0.99,
           "learned_x_cost_model_max": 1.05}


def tok_s(run: dict) -> float:
    return float(run["report"]["output_throughput"])


def cell_means(runs: list[dict]) -> dict[str, dict[str, float]]:
    """{cell: {config: mean output tok/s over its repeats}}, cells and configs in first-run order."""
    sums: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        sums.setdefault(run["cell"], {}).setdefault(run["config"], []).append(tok_s(run))
    return {cell: {config: float(np.mean(values)) for config, values in by_config.items()}
            for cell, by_config in sums.items()}


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def routers_vs_fixed(means: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Per cell with a router and a fixed configuration: the better router over the best fixed one."""
    out = {}
    for cell, by_config in means.items():
        routers = {c: v for c, v in by_config.items() if c in ROUTERS}
        fixed = {c: v for c, v in by_config.items() if c not in ROUTERS}
        if routers and fixed:
            router, best = max(routers, key=routers.get), max(fixed, key=fixed.get)
            out[cell] = {"ratio": _ratio(routers[router], fixed[best]), "router": router, "best_fixed": best}
    return out


def paired_log_ratios(runs: list[dict]) -> list[float]:
    """log(learned / cost-model) of every (cell, repeat) where both ran with output."""
    by_pair: dict[tuple, dict[str, float]] = {}
    for run in runs:
        if run["config"] in ROUTERS:
            by_pair.setdefault((run["cell"], run["repeat"]), {})[run["config"]] = tok_s(run)
    return [math.log(p["learned"] / p["cost-model"]) for p in by_pair.values()
            if p.get("learned", 0) > 0 and p.get("cost-model", 0) > 0]


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a Prometheus histogram, `[(upper bound, cumulative count)]` ascending with
    +inf last, interpolated linearly inside the bucket it falls in (PromQL's histogram_quantile)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower                 # past the last finite bound: that bound is all we know
            return lower + (upper - lower) * (rank - below) / (count - below) if count > below else upper
        lower, below = upper, count
    return None


def fallback_share(runs: list[dict]) -> float | None:
    learned = [run["routing"]["by_source"] for run in runs if run["config"] == "learned" and run.get("routing")]
    total = sum(sum(by_source.values()) for by_source in learned)
    return sum(by_source.get("fallback", 0) for by_source in learned) / total if total else None


def summarize_runs(runs: list[dict], decision_p99_ms: dict[str, float | None] | None = None, cpu: str = "") -> dict:
    """The summary of `runs` (dicts with cell, config, repeat, report.output_throughput and, for the
    routers, routing.by_source); a figure whose configurations did not run is None."""
    means = cell_means(runs)
    vs_fixed = routers_vs_fixed(means)
    fixed_ratios = [v["ratio"] for v in vs_fixed.values() if v["ratio"] is not None]
    learned_x = {cell: _ratio(m["learned"], m["cost-model"]) for cell, m in means.items()
                 if "learned" in m and "cost-model" in m}
    learned_x = {cell: r for cell, r in learned_x.items() if r is not None}
    logs = paired_log_ratios(runs)
    interval = mean_ci(logs) if len(logs) >= 2 else None
    c1 = means.get(CLOSED_C1, {})
    c1_routers = [v for c, v in c1.items() if c in ROUTERS]
    summary = {
        "router_x_best_fixed_min": min(fixed_ratios) if fixed_ratios else None,
        "learned_x_cost_model_min": min(learned_x.values()) if learned_x else None,
        "learned_x_cost_model_max": max(learned_x.values()) if learned_x else None,
        "learned_x_cost_model_paired": None if interval is None else {
            "geomean": math.exp(interval["mean"]), "ci95": [math.exp(x) for x in interval["ci95"]],
            "num_pairs": len(logs), "method": "95% Student t interval of log(learned / cost-model) over the "
                                             "(cell, repeat) pairs, exponentiated"},
        "router_x_plain_c1": _ratio(max(c1_routers), c1["plain"]) if c1_routers and "plain" in c1 else None,
        "fallback_share": fallback_share(runs),
        "decision_p99_ms": dict(decision_p99_ms or {}),
        "cpu": cpu,
        "router_x_best_fixed_by_cell": vs_fixed,
        "learned_x_cost_model_by_cell": learned_x,
    }
    summary["targets"] = _targets(summary)
    return summary


def _targets(summary: dict) -> dict:
    """Each target of the issue beside whether this run met it (reported, not asserted)."""
    out = {name: {"target": f">= {goal}", "met": summary[name] is not None and summary[name] >= goal}
           for name, goal in TARGETS.items()}
    paired = summary["learned_x_cost_model_paired"]
    out["learned_x_cost_model_paired"] = {"target": "ci95 above 1.0", "met": paired is not None and paired["ci95"][0] > 1}
    out["fallback_share"] = {"target": "< 0.02", "met": summary["fallback_share"] is not None
                             and summary["fallback_share"] < 0.02}
    p99 = [v for v in summary["decision_p99_ms"].values() if v is not None]
    out["decision_p99_ms"] = {"target": "< 1 ms", "met": bool(p99) and max(p99) < 1.0}
    return out
