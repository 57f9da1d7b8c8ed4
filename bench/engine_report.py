"""bench_engine's figures: per-column speed ratios from the same run, identity, the summary."""

from __future__ import annotations

import statistics
from collections import defaultdict

import torch

LLAMA_CPP = "llamacpp-plain"
MAX_EXPLAINED = 40


def _tok_s(runs: list[dict]) -> float:
    elapsed = sum(r["elapsed_s"] for r in runs)
    return sum(len(r["tokens"]) for r in runs) / elapsed if elapsed else 0.0


def paired_ratio(by_config: dict[str, list[dict]], a: str, b: str, median: bool = False) -> float | None:
    """tok/s of `a` over tok/s of `b` on the prompts both ran (a column dropped mid-run is compared
    on its own prompts only); with `median`, the median of the per-prompt ratios (robust to a
    prompt that another process slowed)."""
    runs_a = {r["question_id"]: r for r in by_config.get(a, [])}
    runs_b = {r["question_id"]: r for r in by_config.get(b, [])}
    common = sorted(set(runs_a) & set(runs_b))
    if not common:
        return None
    if median:
        ratios = [_tok_s([runs_a[q]]) / _tok_s([runs_b[q]]) for q in common if _tok_s([runs_b[q]])]
        return round(statistics.median(ratios), 4) if ratios else None
    rate_b = _tok_s([runs_b[q] for q in common])
    return round(_tok_s([runs_a[q] for q in common]) / rate_b, 4) if rate_b else None


def explain_mismatch(model, ids: list[int], reference: list[int], other: list[int]) -> dict:
    """Where `other` first leaves `reference`, and the fp32 target's top-2 logit gap there."""
    position = next((i for i, (a, b) in enumerate(zip(reference, other)) if a != b), min(len(reference), len(other)))
    info = {"position": position, "reference_len": len(reference), "other_len": len(other)}
    if position >= min(len(reference), len(other)):
        info["kind"] = "one output is a prefix of the other"
        return info
    with torch.inference_mode():
        logits = model(torch.tensor([ids + reference[:position]])).logits[0, -1].float()
    top = logits.topk(2).values
    info.update(kind="different token", top2_gap=round(float(top[0] - top[1]), 5),
                reference_minus_other=round(float(logits[reference[position]] - logits[other[position]]), 5))
    return info


def summarize(data: dict, hf_model=None, tokenizer=None, encoded: dict | None = None) -> dict:
    """Per-column table, per-category ratios, identity with ours plain, and the `summary` object."""
    runs = data["runs"]
    default_plain = f"ours-plain-{data['default_path']}"
    by_config: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_config[run["config"]].append(run)
    plain_tokens = {r["question_id"]: r["tokens"] for r in by_config[default_plain]}
    mix = {name: _tok_s(rs) for name, rs in by_config.items()}
    categories = sorted({r["category"] for r in runs})
    per_category = {c: {name: _tok_s([r for r in rs if r["category"] == c]) for name, rs in by_config.items()}
                    for c in categories}
    default_chains = [n for n in by_config if n.startswith("ours-") and not n.startswith("ours-plain-")]
    mismatches = []
    table = []
    for name, rs in by_config.items():
        same = [r["tokens"] == plain_tokens.get(r["question_id"]) for r in rs]
        drafted = sum(r["num_draft_tokens"] for r in rs)
        steps = sum(r["num_steps"] for r in rs)
        forward = sum(r.get("forward_s", 0.0) for r in rs)
        table.append({
            "config": name, "tok_s": round(mix[name], 2),
            "x_llamacpp": paired_ratio(by_config, name, LLAMA_CPP),
            "x_ours_plain": paired_ratio(by_config, name, default_plain),
            "acceptance": round(sum(r["num_accepted_tokens"] for r in rs) / drafted, 3) if drafted else None,
            "tokens_per_step": round(sum(len(r["tokens"]) for r in rs) / steps, 3) if steps else None,
            "identical_to_plain": round(sum(same) / len(same), 3),
            "non_forward_share": (round(1 - forward / sum(r["elapsed_s"] for r in rs), 4)
                                  if name.startswith("ours-") else None),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs), 1)})
        if name in default_chains:
            for run, ok in zip(rs, same):
                if not ok and len(mismatches) < MAX_EXPLAINED and hf_model is not None:
                    info = explain_mismatch(hf_model, encoded[run["question_id"]], plain_tokens[run["question_id"]],
                                            run["tokens"])
                    mismatches.append({"config": name, "question_id": run["question_id"],
                                       "category": run["category"], **info})
    prompts = sorted(plain_tokens)
    identical_prompts = [q for q in prompts if all(
        r["tokens"] == plain_tokens[q] for n in default_chains for r in by_config[n] if r["question_id"] == q)]
    best_k = {}
    for drafter in ("ngram", "suffix"):
        names = [n for n in by_config if n.startswith(f"ours-{drafter}-k")]
        if names:
            best_k[drafter] = max(names, key=lambda n: mix[n])
    curve = data["verification_curves"][data["default_path"]]["1"]
    routers = [n for n in ("ours-cost-model", "ours-learned") if n in mix]
    best_router = max(routers, key=lambda n: mix[n]) if routers else None
    cost = "ours-cost-model"
    summary = {
        "ours_plain_x_llamacpp": paired_ratio(by_config, default_plain, LLAMA_CPP),
        "best_router_x_llamacpp": paired_ratio(by_config, best_router, LLAMA_CPP) if best_router else None,
        "cost_model_x_plain": paired_ratio(by_config, cost, default_plain),
        "greedy_identity": round(len(identical_prompts) / len(prompts), 4) if prompts else None,
        "decode_verify_bitwise_share": (data.get("decode_verify") or {}).get("bitwise_share"),
        "verify16_x_verify1": round(curve["16"] / curve["1"], 4) if "16" in curve else None,
        "peak_rss_mib_batch16": data["batch16"].get("peak_rss_mib"),
        "cpu": data.get("cpu") or data.get("machine_start", {}).get("cpu"),
    }
    figures = {
        "median_per_prompt": {f"{a}_x_{b}": paired_ratio(by_config, a, b, median=True) for a, b in (
            (default_plain, LLAMA_CPP), (best_router, LLAMA_CPP), (cost, default_plain),
            ("ours-learned", default_plain)) if a in by_config and b in by_config},
        "llamacpp_prompts": len(by_config.get(LLAMA_CPP, [])),
        "best_router": best_router,
        "best_router_x_plain": paired_ratio(by_config, best_router, default_plain) if best_router else None,
        "cost_model_min_category_x_plain": (round(min(per_category[c][cost] / per_category[c][default_plain]
                                                      for c in categories), 4) if cost in mix else None),
        "verify9_x_verify1": round(curve["9"] / curve["1"], 4),
        "best_static_x_llamacpp": max((paired_ratio(by_config, n, LLAMA_CPP) or 0.0
                                       for n in default_chains if n not in routers), default=None),
    }
    return {"summary": summary, "figures": figures, "table": table, "best_k": best_k, "mismatches": mismatches,
            "per_category_x_plain": {c: {n: round(v / per_category[c][default_plain], 3)
                                         for n, v in row.items() if per_category[c][default_plain]}
                                     for c, row in per_category.items()},
            "per_category_plain_tok_s": {c: round(row[default_plain], 2) for c, row in per_category.items()}}


def render_markdown(data: dict) -> str:
    s = data["summary"]
    lines = [f"# Engine benchmark: {data['model']}, greedy, {data['args'].get('max_tokens', data['args'].get('max_new_tokens'))} new tokens, "
             f"{data['args']['num_threads']} threads, batch 1",
             "", f"Command: `{data['command']}`  ", f"{data['num_prompts_done']} of {data['num_prompts_planned']} "
             f"prompts, {data['wall_s'] / 60:.1f} min; default path `{data['default_path']}`.", ""]
    for name, reason in data.get("skipped_columns", {}).items():
        lines.append(f"- column `{name}` skipped: {reason}")
    lines += ["", "| config | tok/s | x llama.cpp | x ours plain | acceptance | tokens/step | identical to plain "
              "| non-forward share | peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def fmt(value) -> str:
        return "-" if value is None else str(value)

    for row in data["table"]:
        lines.append(f"| {row['config']} | {row['tok_s']} | {fmt(row['x_llamacpp'])} | {row['x_ours_plain']} | "
                     f"{fmt(row['acceptance'])} | {fmt(row['tokens_per_step'])} | {row['identical_to_plain']:.1%} | "
                     f"{fmt(row['non_forward_share'])} | {row['peak_rss_mb']} |")
    lines += ["", f"Best K: {data['best_k']}", "", "## Summary", "", "| key | value |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in s.items()]
    lines += [f"| ({k}) | {v} |" for k, v in data.get("figures", {}).items()]
    if data.get("decode_verify"):
        lines += ["", f"Decode vs verify on the default path (real prompts, 9-token windows, alone and beside "
                      f"other rows): {data['decode_verify']}"]
    if data.get("non_product_share"):
        lines += ["", "Share of a decode step outside the matrix products (context 200): "
                      + "; ".join(f"{label} batch {b}: {v['non_product_share']:.1%} of {v['step_ms']} ms"
                                  for label, by_batch in data["non_product_share"].items()
                                  for b, v in by_batch.items())]
    if data.get("path_selftest"):
        lines += ["", "## Forward-path self-test (engine.autotune) on this CPU", "",
                  f"CPU: {data.get('cpu')}; chosen `{data['default_path']}`: {data['path_selftest']['reason']}", "",
                  "| path | ms by (rows, tokens per row) | invariant | logits differ / positions | argmax flips |",
                  "|---|---|---|---:|---:|"]
        for m in data["path_selftest"]["measurements"]:
            ms = ", ".join(f"{k}: {v}" for k, v in m["ms"].items()) or m["reason"]
            lines.append(f"| {m['path']} | {ms} | {m['invariant']} | {m['logits_differ']} / {m['positions']} | "
                         f"{m['argmax_flips']} |")
    lines += ["", "## Verification curve (ms per target forward, context 200)", ""]
    for path, curve in data["verification_curves"].items():
        for batch, row in curve.items():
            cells = ", ".join(f"{t}: {ms}" for t, ms in row.items())
            lines.append(f"- `{path}` batch {batch}: {cells} (9/1 = {row['9'] / row['1']:.2f}"
                         + (f", 16/1 = {row['16'] / row['1']:.2f})" if "16" in row else ")"))
    lines += ["", f"Batch 16 (engine + the levels the server loads, fresh process): {data['batch16']}", "",
              "## Per category, x ours plain", ""]
    names = [r["config"] for r in data["table"]]
    lines += ["| category | plain tok/s | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for category, row in data["per_category_x_plain"].items():
        lines.append(f"| {category} | {data['per_category_plain_tok_s'][category]} | "
                     + " | ".join(str(row.get(n, "-")) for n in names) + " |")
    if data["mismatches"]:
        lines += ["", "## Outputs that differ from ours plain (default path)", "",
                  "| config | question | category | position | kind | fp32 top-2 gap |", "|---|---:|---|---:|---|---:|"]
        lines += [f"| {m['config']} | {m['question_id']} | {m['category']} | {m['position']} | {m['kind']} | "
                  f"{m.get('top2_gap', '-')} |" for m in data["mismatches"]]
    return "\n".join(lines) + "\n"
