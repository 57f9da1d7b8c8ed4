"""The benchmarks' plots, drawn from their results data alone (the PNGs sit next to the JSON).

Each benchmark writes its plots after its results; this command draws every plot again from the
saved results, without rerunning anything:

    .venv/bin/python -m bench.plots                      # every bench/results/*.json it knows
    .venv/bin/python -m bench.plots --results-dir /tmp/r
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from agents.evaluate_plots import evaluate_figures
from cli.dataclass_args import parse_dataclass
from cli.plot_style import NAMED, legend_outside, new_figure, series_styles, write_plots
from cli.results import RESULTS_DIR

LLAMA_CPP = "llamacpp-plain"          # bench.engine_report's llama.cpp column
POISSON = re.compile(r"poisson ([0-9.]+)/s")


def engine_figures(data: dict) -> dict:
    """tok/s per column (the table's totals) against llama.cpp plain; the verification curve at batch 1 and 16."""
    rows = data["table"]
    plain = f"ours-plain-{data['default_path']}"
    styles = series_styles([r["config"] for r in rows], roles={plain: "plain"})
    fig, (ax,) = new_figure(8.0, 0.35 * len(rows) + 1.5)
    for i, row in enumerate(rows):
        ax.barh(i, row["tok_s"], height=0.7, label=row["config"], **styles[row["config"]].bar_kwargs())
        ax.text(row["tok_s"], i, f" {row['tok_s']:.1f}", va="center", fontsize=7,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    ax.set_yticks(range(len(rows)), [r["config"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    llama = next((r for r in rows if r["config"] == LLAMA_CPP), None)
    if llama:
        line = ax.axvline(llama["tok_s"], color=NAMED["llama.cpp"].color, linestyle=NAMED["llama.cpp"].linestyle,
                          linewidth=1.8, label=f"llama.cpp plain ({llama['tok_s']:.1f} tok/s)")
        ax.legend(handles=[line], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_xlabel("tokens/s over the prompts each column ran (batch 1, greedy)")
    ax.set_title(f"{data['model']}, {data.get('cpu') or ''}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.2)
    figures = {"tok_s": fig}

    curves = [(f"{path}, batch {batch}", row) for path, by_batch in data["verification_curves"].items()
              for batch, row in by_batch.items() if batch in ("1", "16")]
    styles = series_styles(label for label, _ in curves)
    fig, (ax,) = new_figure(8.0, 4.5)
    for label, row in curves:
        tokens = sorted(row, key=int)
        ax.plot([int(t) for t in tokens], [row[t] for t in tokens], label=label, **styles[label].line_kwargs())
    ax.set_xlabel("tokens per row (1 = a decode step, k + 1 = verifying k drafted tokens)")
    ax.set_ylabel("ms per target forward (context 200)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    legend_outside(fig, ax, title="forward path, rows")
    figures["verification_curve"] = fig
    return figures


def chains_figures(data: dict) -> dict:
    """tok/s and mean TPOT against concurrency, one line per column (router or chain)."""
    if not data.get("load"):
        return {}
    columns = list(dict.fromkeys(r["config"] for block in data["load"] for r in block["rows"]))
    styles = series_styles(columns)
    fig, axes = new_figure(11.0, 4.5, ncols=2)
    for column in columns:
        points = sorted((block["concurrency"], r) for block in data["load"] for r in block["rows"]
                        if r["config"] == column)
        xs = [c for c, _ in points]
        for ax, key in zip(axes, ("tokens_per_s", "mean_tpot_ms")):
            ax.plot(xs, [r[key] for _, r in points], label=column, **styles[column].line_kwargs())
    concurrency = sorted({block["concurrency"] for block in data["load"]})
    for ax, label in zip(axes, ("tokens/s (all requests)", "mean TPOT (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrency, [str(c) for c in concurrency])
        ax.set_xlabel("concurrency (closed loop)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    legend_outside(fig, axes[-1], title="router / chain@K")
    return {"load": fig}


def serving_figures(data: dict) -> dict:
    """Output tok/s and TPOT p50 per workload, one line per router; the Poisson rates joined by lines,
    trace replays as separate points."""
    rows = data["rows"]
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    routers = list(dict.fromkeys(r["router"] for r in rows))
    names = {r: f"static {data.get('static', '')}".strip() if r == "static" else r.replace("_", "-") for r in routers}
    styles = series_styles(routers)
    fig, axes = new_figure(11.0, 4.5, ncols=2)
    for router in routers:
        by_workload = {r["workload"]: r["report"] for r in rows if r["router"] == router}
        for ax, metric in zip(axes, (lambda rep: rep["output_throughput"], lambda rep: rep["tpot_ms"]["p50"])):
            poisson = [(workloads.index(w), metric(rep)) for w, rep in by_workload.items() if POISSON.search(w)]
            others = [(workloads.index(w), metric(rep)) for w, rep in by_workload.items() if not POISSON.search(w)]
            if poisson:
                ax.plot(*zip(*sorted(poisson)), label=names[router], **styles[router].line_kwargs())
            if others:
                ax.plot(*zip(*sorted(others)), label="_" + names[router],
                        **{**styles[router].line_kwargs(), "linestyle": "none"})
    ticks = [f"{POISSON.search(w).group(1)} req/s" if POISSON.search(w) else w.replace(" ", "\n", 1)
             for w in workloads]
    for ax, label in zip(axes, ("output tokens/s", "TPOT p50 (ms)")):
        ax.set_xticks(range(len(workloads)), ticks, fontsize=8)
        ax.set_xlabel("workload (Poisson request rate, or trace replay)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    legend_outside(fig, axes[-1], title="router")
    return {"load": fig}


def figures_for(data: dict) -> Callable[[dict], dict] | None:
    """Which plots a results file gets, told by its shape (the file name is free: --output-name)."""
    if "verification_curves" in data and "table" in data:
        return engine_figures
    if "load_columns" in data:
        return chains_figures
    if "sweep" in data and "action_labels" in data:
        return evaluate_figures
    rows = data.get("rows")
    if isinstance(rows, list) and rows and isinstance(rows[0], dict) and {"router", "report"} <= rows[0].keys():
        return serving_figures
    return None


def plot_results(data: dict, json_path: Path) -> list[Path]:
    """Write the plots of one results file next to it (a plotting error only warns)."""
    build = figures_for(data)
    return write_plots(build, data, json_path.parent, json_path.stem) if build else []


@dataclass
class PlotsArgs:
    """Draw every plot again from the saved results (no benchmark reruns)."""

    results_dir: str = field(default=str(RESULTS_DIR), metadata={"help": "folder of <name>.json results files"})


def main(cfg: PlotsArgs) -> list[Path]:
    written = []
    for json_path in sorted(Path(cfg.results_dir).glob("*.json")):
        written += plot_results(json.loads(json_path.read_text()), json_path)
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main(parse_dataclass(PlotsArgs))
