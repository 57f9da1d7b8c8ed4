"""The evaluation's load-sweep plots: goodput against load per policy, and the routers' actions against load.

Built from the results data alone, so `python -m bench.plots` draws them again from bench/results/evaluate.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cli.plot_style import legend_outside, new_figure, series_styles, write_plots

ACTION_POLICIES = ("learned", "cost-model", "oracle")


def goodput_figure(sweep: dict):
    """One line per policy, each in its own style; the named policies in their fixed ones."""
    fig, (ax,) = new_figure(9.0, 5.5)
    styles = series_styles(sweep)
    for policy, points in sweep.items():
        rates = sorted(points, key=float)
        ax.plot([float(r) for r in rates], [points[r]["goodput"]["mean"] for r in rates], label=policy,
                **styles[policy].line_kwargs())
    ax.set_xlabel("offered load (fraction of the plain-decoding saturation rate; Poisson, Spec-Bench prompts)")
    ax.set_ylabel("goodput (output tokens/s of requests meeting SLO)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    legend_outside(fig, ax, title="policy")
    return fig


def actions_figure(sweep: dict, labels: list[str]):
    """Per shown policy, stacked bars of the share of each action at each load (one load point shows too)."""
    shown = [p for p in ACTION_POLICIES if p in sweep]
    fig, axes = new_figure(4.5 * len(shown), 4.0, ncols=len(shown), sharey=True)
    styles = series_styles(labels)
    for ax, policy in zip(axes, shown):
        rates = sorted(sweep[policy], key=float)
        fractions = np.array([sweep[policy][r]["action_fractions"] for r in rates]).T      # [A, rates]
        bottom = np.zeros(len(rates))
        for label, share in zip(labels, fractions):
            ax.bar(range(len(rates)), share, bottom=bottom, width=0.8, label=label, **styles[label].bar_kwargs())
            bottom += share
        ax.set_xticks(range(len(rates)), [f"{float(r):g}" for r in rates])
        ax.set_title(policy)
        ax.set_xlabel("offered load (x saturation)")
    axes[0].set_ylabel("fraction of decisions")
    legend_outside(fig, axes[-1], title="action (chain@K)")
    return fig


def evaluate_figures(results: dict) -> dict:
    """{file suffix: figure} for the evaluation's sweep (none without a sweep)."""
    sweep = results.get("sweep") or {}
    if not sweep:
        return {}
    figures = {"goodput_vs_load": goodput_figure(sweep)}
    if any(p in sweep for p in ACTION_POLICIES):
        figures["actions_vs_load"] = actions_figure(sweep, results["action_labels"])
    return figures


def plot(results: dict, out_dir: Path, stem: str) -> list[str]:
    """Write the sweep's plots next to the results; their file names (a plotting error only warns)."""
    return [path.name for path in write_plots(evaluate_figures, results, out_dir, stem)]
