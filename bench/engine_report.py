"""Summaries and the markdown table of the engine benchmark (bench/bench_engine.py).

Speeds are ratios of sums (total new tokens / total seconds) over the same prompts for every
configuration, so a ratio compares like with like.
"""

from __future__ import annotations

import math
from collections import defaultdict

from bench.common import markdown_table

PROMPT_LOOKUP_KS = (3, 10)


def _summarise(runs: list, reference_by_prompt: dict[int, float]) -> dict:
    tokens = sum(len(r.tokens) for r in runs)
    elapsed = sum(r.elapsed_s for r in runs)
    steps = sum(r.num_steps for r in runs)
    drafted = sum(r.num_draft_tokens for r in runs)
    accepted = sum(r.num_accepted_tokens for r in runs)
    speedups = [(len(r.tokens) / r.elapsed_s) / reference_by_prompt[r.question_id] for r in runs
                if r.elapsed_s > 0 and reference_by_prompt.get(r.question_id)]
    return {
        "num_runs": len(runs), "num_tokens": tokens, "elapsed_s": elapsed,
        "tokens_per_s": tokens / elapsed if elapsed else None,
        "geomean_speedup_vs_hf_plain": math.exp(sum(map(math.log, speedups)) / len(speedups)) if speedups else None,
        "acceptance_rate": accepted / drafted if drafted else None,
        "mean_accepted_per_step": accepted / steps if steps else None,
        "tokens_per_step": tokens / steps if steps else None,
        "num_steps": steps, "num_draft_tokens": drafted, "num_accepted_tokens": accepted,
        "peak_rss_mb": max((r.peak_rss_mb for r in runs), default=None),
        "identical_to_hf_share": sum(bool(r.is_identical_to_hf) for r in runs) / len(runs) if runs else None,
    }


def aggregate(records: list, configs: list, reference: str) -> dict:
    """Per config, per category and per target: the numbers the markdown and README quote."""
    reference_speed = {r.question_id: len(r.tokens) / r.elapsed_s for r in records if r.config == reference}
    by_config: dict[str, list] = defaultdict(list)
    by_category: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        by_config[record.config].append(record)
        by_category[record.category][record.config].append(record)
    base = _summarise(by_config[reference], reference_speed)["tokens_per_s"]
    summaries = []
    for config in configs:
        summary = _summarise(by_config[config.name], reference_speed)
        summary.update(name=config.name, system=config.system, drafter=config.drafter, k=config.k,
                       ratio_to_hf_plain=summary["tokens_per_s"] / base if base and summary["tokens_per_s"] else None)
        summaries.append(summary)
    per_category = {category: {name: _summarise(runs, reference_speed)["tokens_per_s"] for name, runs in rows.items()}
                    for category, rows in by_category.items()}

    names = {c.name for c in configs}
    targets: dict = {}
    speed = {s["name"]: s["tokens_per_s"] for s in summaries}
    if "ours-plain" in speed and speed.get(reference):
        targets["ours_plain_vs_hf_plain"] = speed["ours-plain"] / speed[reference]
    for k in PROMPT_LOOKUP_KS:
        ours, theirs = f"ours-ngram-k{k}", f"hf-pld-k{k}"
        if ours in names and theirs in names:
            wins = [c for c, row in per_category.items() if row.get(ours, 0) >= row.get(theirs, math.inf)]
            targets[f"ngram_vs_hf_pld_k{k}"] = {"categories_won": len(wins), "categories": len(per_category),
                                                "lost": sorted(set(per_category) - set(wins))}
    ours_runs = [r for r in records if r.config.startswith("ours-")]
    if ours_runs:
        targets["ours_identical_to_hf_share"] = sum(bool(r.is_identical_to_hf) for r in ours_runs) / len(ours_runs)
        targets["ours_num_runs"] = len(ours_runs)
    mismatches = [{"config": r.config, "question_id": r.question_id, "category": r.category, **r.mismatch}
                  for r in records if r.mismatch]
    return {"configs": summaries, "per_category_tokens_per_s": per_category, "targets": targets,
            "mismatches": mismatches}


def render_markdown(data: dict) -> str:
    """The tables README.md shows, with the conditions they were measured under."""
    args, machine = data["args"], data["machine_start"]
    check = data["logit_check"]
    lines = [
        f"Model {data['model']} (fp32, CPU, {machine.get('torch_threads')} torch threads, {machine.get('cpu_count')} cores), "
        f"greedy, {args['max_new_tokens']} new tokens, {data['num_prompts_done']} Spec-Bench prompts "
        f"({args['prompts_per_category']} per category, chat template); prompt lookup max n-gram "
        f"{args['ngram_max_match']} for HF and ours. Load average at start {machine.get('load_average')}, "
        f"at end {data['machine_end'].get('load_average')}. Logits ours vs transformers: max abs diff "
        f"{check['prefill_max_abs_diff']:.1e} (prefill), {check['decode_max_abs_diff']:.1e} (decode).",
        "",
    ]
    rows = [[s["name"], s["tokens_per_s"], s["ratio_to_hf_plain"], s["geomean_speedup_vs_hf_plain"],
             s["acceptance_rate"], s["mean_accepted_per_step"], s["tokens_per_step"], s["peak_rss_mb"],
             f"{100 * s['identical_to_hf_share']:.0f}%" if s["identical_to_hf_share"] is not None else None]
            for s in data["configs"]]
    lines.append(markdown_table(["config", "tokens/s", "x HF plain", "geomean x", "acceptance",
                                 "accepted/step", "tokens/step", "peak RSS MB", "same as HF greedy"], rows))
    per_category = data["per_category_tokens_per_s"]
    pairs = [(f"hf-pld-k{k}", f"ours-ngram-k{k}") for k in (3, 10)]
    present = [(h, o) for h, o in pairs if any(h in row and o in row for row in per_category.values())]
    if present:
        headers = ["category", "HF plain", "ours plain"]
        for h, o in present:
            headers += [h, o, "ours/HF"]
        table = []
        for category, row in per_category.items():
            cells = [category, row.get("hf-plain"), row.get("ours-plain")]
            for h, o in present:
                ratio = row[o] / row[h] if row.get(o) and row.get(h) else None
                cells += [row.get(h), row.get(o), ratio]
            table.append(cells)
        lines += ["", "Tokens/s per category, ours prompt lookup (ngram) vs HF prompt lookup at the same K:", "",
                  markdown_table(headers, table)]
    targets = data["targets"]
    lines += ["", "Targets:"]
    if "ours_plain_vs_hf_plain" in targets:
        ratio = targets["ours_plain_vs_hf_plain"]
        lines.append(f"- ours plain >= 1.0x HF plain: {ratio:.2f}x ({'met' if ratio >= 1 else 'NOT met'})")
    for k in PROMPT_LOOKUP_KS:
        entry = targets.get(f"ngram_vs_hf_pld_k{k}")
        if entry:
            lost = f"; slower on {', '.join(entry['lost'])}" if entry["lost"] else ""
            lines.append(f"- ours ngram >= HF prompt lookup at K={k}: {entry['categories_won']}/{entry['categories']} "
                         f"categories{lost}")
    if "ours_identical_to_hf_share" in targets:
        share = targets["ours_identical_to_hf_share"]
        lines.append(f"- ours identical to HF greedy: {100 * share:.1f}% of {targets['ours_num_runs']} outputs "
                     f"({'met' if share >= 0.99 else 'NOT met'}, target 99%)")
    if data["mismatches"]:
        lines += ["", "Outputs that differ from HF greedy (first differing position, top-2 logit margin of the "
                      "target there):", ""]
        for m in data["mismatches"]:
            if m["kind"] == "different token":
                lines.append(f"- {m['config']} q{m['question_id']} ({m['category']}): token {m['position']}, "
                             f"HF {m['hf_token']!r} vs {m['other_token']!r}, top-2 margin {m['top2_margin']:.2e}")
            else:
                lines.append(f"- {m['config']} q{m['question_id']} ({m['category']}): {m['kind']} "
                             f"(lengths {m['hf_len']} vs {m['other_len']})")
    return "\n".join(lines)
