"""bench_serving's tables: per cell and configuration, the mean over repeats (the `rows` that
bench.plots draws), and the markdown beside serving.json."""

from __future__ import annotations

import numpy as np

from cli.results import markdown_table


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def aggregate_rows(runs: list[dict]) -> list[dict]:
    """One row per (cell, configuration): the repeats' mean throughputs and p50 latencies."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["cell"], run["config"]), []).append(run["report"])
    rows = []
    for (cell, config), reports in groups.items():
        rows.append({"workload": cell, "router": config, "repeats": len(reports), "report": {
            "output_throughput": _mean([r["output_throughput"] for r in reports]),
            "request_throughput": _mean([r["request_throughput"] for r in reports]),
            "ttft_ms": {"p50": _mean([r["ttft_ms"]["p50"] for r in reports])},
            "tpot_ms": {"p50": _mean([r["tpot_ms"]["p50"] for r in reports])},
            "completed": sum(r["completed"] for r in reports), "failed": sum(r["failed"] for r in reports),
            "rejected_429": sum(r["rejected_429"] for r in reports)}})
    return rows


def _grid(rows: list[dict], cells: list[str], configs: list[str], metric) -> list[list]:
    value = {(r["workload"], r["router"]): metric(r["report"]) for r in rows}
    return [[config, *(value.get((cell, config)) for cell in cells)] for config in configs]


def _fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_markdown(data: dict) -> str:
    """The summary's figures (with the targets met or not), then output tok/s and TPOT p50 per
    configuration and cell, then what was skipped."""
    summary, rows, args = data["summary"], data["rows"], data["args"]
    cells = list(dict.fromkeys(r["workload"] for r in rows))
    configs = [c for c in data["configs"] if any(r["router"] == c for r in rows)]
    paired = summary["learned_x_cost_model_paired"]
    lines = [f"CPU: {summary['cpu']}. {args['repeats']} interleaved repeats per cell; outputs of "
             f"{args['max_tokens']} tokens (ignore_eos); {args['num_threads']} threads per server; "
             f"max_num_seqs {args['max_num_seqs']}; prompts: {args['prompts']}.", ""]
    for name, target in summary["targets"].items():
        value = summary.get(name)
        if name == "learned_x_cost_model_paired":
            value = None if paired is None else f"{_fmt(paired['geomean'], 3)} [{_fmt(paired['ci95'][0], 3)}, " \
                                                f"{_fmt(paired['ci95'][1], 3)}] ({paired['num_pairs']} pairs)"
        elif name == "decision_p99_ms":
            value = ", ".join(f"{k} {_fmt(v, 3)}" for k, v in value.items()) or None
        elif value is not None:
            value = _fmt(value, 3)
        lines.append(f"- {name}: {value or 'n/a'} (target {target['target']}: {'met' if target['met'] else 'not met'})")
    tables = [
        "Output tokens/s (mean over repeats):", markdown_table(["config", *cells], _grid(
            rows, cells, configs, lambda r: r["output_throughput"])),
        "TPOT p50 ms (mean over repeats):", markdown_table(["config", *cells], _grid(
            rows, cells, configs, lambda r: r["tpot_ms"]["p50"]))]
    notes = [f"Poisson rates: {data['poisson_rates_note']}."]
    if data["skipped"]:
        notes.append("Skipped: " + "; ".join(f"{name} ({why})" for name, why in data["skipped"].items()) + ".")
    if data["stopped_early"]:
        notes.append(f"Stopped early ({data['stopped_early']}): {data['num_runs']} of {data['num_planned_runs']} runs.")
    return "\n\n".join(["\n".join(lines), *tables, " ".join(notes)])
