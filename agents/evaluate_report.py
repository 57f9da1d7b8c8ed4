"""The evaluation's markdown report, JSON and plots (what `python -m agents.evaluate` writes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agents.evaluate import METRICS, mean_ci

MIXED, HIGH = "spec_bench-mix", "poisson-high"
HEADERS = ["policy", "tokens/s", "TPOT p50 (ms)", "TPOT p99 (ms)", "TTFT p99 (s)", "SLO attainment",
           "goodput (tok/s)", "reward/decision", "mixed steps"]
SCALE = {"tpot_p50_s": 1e3, "tpot_p99_s": 1e3}


def _cell(stat: dict, scale: float = 1.0) -> str:
    mean, (low, high) = stat["mean"] * scale, stat["ci95"]
    half = (high - low) / 2 * scale
    if not np.isfinite(half):
        return f"{mean:.3g}"
    return f"{mean:.3g} ± {half:.2g}"


def best_static(rows: dict) -> str | None:
    statics = [p for p in rows if p.startswith("static:")]
    return max(statics, key=lambda p: rows[p]["goodput"]["mean"]) if statics else None


def paired(rows: dict, a: str, b: str, metric: str = "goodput") -> dict:
    """Per-seed difference a - b (same seeds, same requests): mean and 95% interval."""
    diff = np.asarray(rows[a][metric]["per_seed"]) - np.asarray(rows[b][metric]["per_seed"])
    return mean_ci(diff)


def verdict(diff: dict) -> str:
    low, high = diff["ci95"]
    if diff["mean"] >= 0:
        return "met" + (" (significant)" if low > 0 else " (within noise)")
    return "missed" + (" (significant)" if high < 0 else " (within noise)")


def _diff(stat: dict) -> str:
    return f"{stat['mean']:+.3g} [{stat['ci95'][0]:+.3g}, {stat['ci95'][1]:+.3g}]"


def _ratio(table: dict, metric: str) -> str:
    oracle = table["oracle"][metric]["mean"]
    return f"{table['learned'][metric]['mean'] / oracle:.1%}" if oracle > 0 else "n/a"


def targets(results: dict, ope: dict | None) -> list[list[str]]:
    rows = []
    tables = results["workloads"]
    for workload in (MIXED, HIGH):
        if workload not in tables or "learned" not in tables[workload]:
            continue
        table = tables[workload]
        for other in ("cost-model", best_static(table)):
            if other is None or other not in table:
                continue
            diff = paired(table, "learned", other)
            rows.append([f"learned >= {other} ({workload})", _diff(diff), verdict(diff),
                         _diff(paired(table, "learned", other, "tokens_per_s")),
                         _diff(paired(table, "learned", other, "mean_reward"))])
    learned_sum = oracle_sum = 0.0
    for workload, table in tables.items():
        if "learned" in table and "oracle" in table:
            learned, oracle = table["learned"]["goodput"]["mean"], table["oracle"]["goodput"]["mean"]
            learned_sum, oracle_sum = learned_sum + learned, oracle_sum + oracle
            ratio = learned / oracle if oracle > 0 else float("nan")
            rows.append([f"learned >= 90% of oracle ({workload})", f"{ratio:.1%}", "met" if ratio >= 0.9 else "missed",
                         _ratio(table, "tokens_per_s"), _ratio(table, "mean_reward")])
    if oracle_sum > 0:
        ratio = learned_sum / oracle_sum
        rows.append(["learned >= 90% of oracle (all workloads)", f"{ratio:.1%}", "met" if ratio >= 0.9 else "missed",
                     "", ""])
    if ope:
        worst = max(abs(e["relative_error"]) for t in ope["targets"].values() for e in t["estimators"].values())
        best = {name: min(abs(e["relative_error"]) for e in t["estimators"].values())
                for name, t in ope["targets"].items()}
        rows.append(["OPE error <= 10% in sim (best estimator per target)",
                     ", ".join(f"{n}: {v:.1%}" for n, v in best.items()),
                     "met" if max(best.values()) <= 0.1 else "missed", "", ""])
        rows.append(["OPE error <= 10% in sim (every estimator)", f"worst {worst:.1%}",
                     "met" if worst <= 0.1 else "missed", "", ""])
    return rows


def plot(results: dict, out_dir: Path, stem: str) -> list[str]:
    """goodput against load per policy; the learned policy's (and the cost model's) actions against load."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sweep = results.get("sweep") or {}
    if not sweep:
        return []
    names = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for policy, points in sweep.items():
        rates = sorted(points, key=float)
        means = [points[r]["goodput"]["mean"] for r in rates]
        style = "-" if not policy.startswith("static:") else ":"
        ax.plot([float(r) for r in rates], means, style, marker="o", markersize=3, label=policy,
                linewidth=2.5 if policy in ("learned", "oracle") else 1.2)
    ax.set_xlabel("offered load (fraction of the plain-decoding saturation rate; Poisson, Spec-Bench prompts)")
    ax.set_ylabel("goodput (output tokens/s of requests meeting SLO)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    names.append(f"{stem}_goodput_vs_load.png")
    fig.savefig(out_dir / names[-1], dpi=110)
    plt.close(fig)

    shown = [p for p in ("learned", "cost-model", "oracle") if p in sweep]
    if shown:
        labels = results["action_labels"]
        fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4), sharey=True, squeeze=False)
        for ax, policy in zip(axes[0], shown):
            rates = sorted(sweep[policy], key=float)
            fractions = np.array([sweep[policy][r]["action_fractions"] for r in rates]).T      # [A, rates]
            bottom = np.zeros(len(rates))
            for label, share in zip(labels, fractions):      # stacked bars: one load point shows too
                ax.bar(range(len(rates)), share, bottom=bottom, width=0.8, label=label)
                bottom += share
            ax.set_xticks(range(len(rates)), [f"{float(r):g}" for r in rates])
            ax.set_title(policy)
            ax.set_xlabel("offered load (x saturation)")
        axes[0][0].set_ylabel("fraction of decisions")
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        names.append(f"{stem}_actions_vs_load.png")
        fig.savefig(out_dir / names[-1], dpi=110)
        plt.close(fig)
    return names


def write_report(results: dict, cfg, out_dir: Path) -> Path:
    from cli.results import machine_info, markdown_table, write_results
    from router.checkpoint import manifest_path, read_manifest
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = cfg.output_name
    ope_path = out_dir / f"{stem}_ope.json"
    ope = json.loads(ope_path.read_text()) if ope_path.is_file() else None
    results["machine"] = machine_info()
    plots = plot(results, out_dir, stem)
    training = read_manifest(cfg.checkpoint).training if manifest_path(cfg.checkpoint).is_file() else {}
    lines = [f"# Router evaluation (simulator)", "",
             f"Generated by `python -m agents.evaluate` in {results['seconds']:.0f} s: {cfg.seeds} seeds per cell, "
             f"means with 95% t-intervals over seeds. Seeds fix the requests and the simulator's draws, so "
             f"policies face identical workloads.",
             "", "Metrics: tokens/s = output tokens / episode span; TPOT = a request's mean time per output "
             "token after the first; SLO = TTFT and mean TPOT both within target; goodput = output tokens of "
             "SLO-meeting requests / span; reward/decision = the environment's step reward (tokens/s of the "
             "step minus the SLO penalty) averaged over decisions.", ""]
    if training:
        lines += [f"Learned policy: `{cfg.checkpoint}` ({training.get('algo')}, {training.get('num_timesteps')} "
                  f"steps, {training.get('train_seconds')} s of training, workload `{training.get('workload')}`).", ""]
    latency = results.get("decision_latency")
    if latency:
        lines += [f"Learned decision time (numpy forward on one observation, {latency['num_calls']} calls, "
                  f"machine load {results['machine'].get('load_average')}): p50 {latency['p50_us']:.0f} us, "
                  f"p99 {latency['p99_us']:.0f} us, max {latency['max_us']:.0f} us.", ""]
    summary = results.get("summary")
    if summary:
        shown = {k: v for k, v in summary.items() if not isinstance(v, dict)}
        lines += ["## Summary", "", "Goodput ratios are of means over seeds; the interval is of the paired "
                  "per-seed ratios. Each workload's goodput SLO is in `goodput_slo_tpot_s`.", "",
                  markdown_table(["key", "value"], [[k, f"{v:.3f}" if isinstance(v, float) else str(v)]
                                                    for k, v in shown.items()]), ""]
    lines += ["## Targets", "",
              "Comparisons are paired over seeds (learned - other, mean [95% CI]); the verdict is on goodput, "
              "tokens/s and reward per decision are shown alongside.", "",
              markdown_table(["target", "goodput (tok/s)", "verdict", "tokens/s", "reward/decision"],
                             targets(results, ope)), ""]
    for workload, rows in results["workloads"].items():
        lines += [f"## {workload}", ""]
        table = []
        best = best_static(rows)
        for policy, stats in rows.items():
            name = f"**{policy}**" if policy in ("learned", best) else policy
            table.append([name] + [_cell(stats[m], SCALE.get(m, 1.0)) for m in METRICS])
        lines += [markdown_table(HEADERS, table), ""]
    if plots:
        lines += ["## Load sweep", ""] + [f"![{p}]({p})" for p in plots] + [""]
    if ope:
        lines += ["## Off-policy evaluation in the simulator", "", ope.get("summary_markdown", ""), ""]
    markdown = "\n".join(lines)
    _, md_path = write_results(stem, json.loads(json.dumps(results, default=float)), markdown, out_dir)
    return md_path
