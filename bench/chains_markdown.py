"""The markdown of the chains benchmark (bench/bench_chains.py) from its results data.

Reads only the results JSON, so a results file in bench/results renders again without rerunning anything.
"""

from __future__ import annotations

from bench.chains_analysis import render_plane
from bench.chains_report import COST_MODEL, LEARNED, PLAIN
from cli.results import markdown_table
from engine.decision import Decision


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
    return "n/a" if best is None else f"k{Decision.parse(best['config']).k} {_fmt_x(best['x_plain'])}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _choice_text(choices: dict[str, int]) -> str:
    total = sum(choices.values())
    return ", ".join(f"{label} {100 * n / total:.0f}%" for label, n in list(choices.items())[:5]) if total else "none"
