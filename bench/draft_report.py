"""Summaries and markdown of the draft benchmark (bench/bench_draft.py).

Speeds are ratios of sums (new tokens / seconds) over the same prompts for every configuration.
Acceptance is given two ways: `acceptance_rate` = accepted / proposed (vLLM's metric, falls with
K) and `alpha` = accepted / (accepted + rejections), the per-token probability that a drafted
token is accepted given the ones before it were (what the cost model's (1 - a^(K+1)) / (1 - a)
needs; comparable with teacher-forced top-1 agreement).
"""

from __future__ import annotations

from collections import defaultdict

from cli.results import markdown_table

ACCEPTANCE_TARGET = 0.6       # per-token acceptance of the level by the target
STEP_RATIO_TARGET = 0.15      # the level's 1-token step / the target's
CHAIN_TARGET = 1.4            # best [level, target] K on the mix, x plain


def _pair_stats(records: list[dict]) -> dict[str, dict]:
    totals: dict[str, dict] = defaultdict(lambda: dict(proposed=0, accepted=0, drafts=0, rejections=0))
    for record in records:
        for name, counts in record["pairs"].items():
            for key, value in counts.items():
                totals[name][key] += value
    out = {}
    for name, t in totals.items():
        out[name] = dict(t, acceptance_rate=t["accepted"] / t["proposed"] if t["proposed"] else None,
                         alpha=t["accepted"] / (t["accepted"] + t["rejections"]) if t["accepted"] + t["rejections"] else None,
                         accepted_per_draft=t["accepted"] / t["drafts"] if t["drafts"] else None)
    return out


def _speed(records: list[dict]) -> float | None:
    elapsed = sum(r["elapsed_s"] for r in records)
    return sum(r["num_tokens"] for r in records) / elapsed if elapsed else None


def _config_rows(records: list[dict], names: list[str]) -> dict[str, dict]:
    by_config = defaultdict(list)
    for record in records:
        by_config[record["config"]].append(record)
    plain, hf = _speed(by_config["plain"]), _speed(by_config["hf-plain"])
    rows = {}
    for name in names:
        runs = by_config[name]
        speed = _speed(runs)
        rows[name] = dict(tokens_per_s=speed, num_tokens=sum(r["num_tokens"] for r in runs),
                          elapsed_s=sum(r["elapsed_s"] for r in runs),
                          speedup_vs_plain=speed / plain if speed and plain else None,
                          speedup_vs_hf_plain=speed / hf if speed and hf else None,
                          identical_to_plain=all(r["is_identical_to_plain"] for r in runs),
                          pairs=_pair_stats(runs))
    return rows


def _level_stats(prompt_rows: list[dict], level: str) -> dict:
    rows = [p["levels"][level] for p in prompt_rows]
    positions = sum(r["top1_positions"] for r in rows)
    return dict(top1_agreement=sum(r["top1_matches"] for r in rows) / positions if positions else None,
                step_ratio=sum(r["ratio"] for r in rows) / len(rows) if rows else None,
                step_ms=sum(r["ms"] for r in rows) / len(rows) if rows else None)


def summarise(records: list[dict], prompt_rows: list[dict], columns: list, levels: list[str]) -> dict:
    """Mixed-set and per-category rows; per level its agreement, step ratio and best K; the
    `summary` of the level whose [level, target] is fastest on the mix (the one to ship)."""
    names = [c.name for c in columns]
    mixed = _config_rows(records, names)
    chains = {c.name: c.chain for c in columns}
    best = {}
    for ladder in dict.fromkeys(chains[n][:-1] for n in names if len(chains[n]) > 1):
        candidates = [n for n in names if chains[n][:-1] == ladder and mixed[n]["tokens_per_s"]]
        if candidates:
            best[">".join(ladder)] = max(candidates, key=lambda n: mixed[n]["tokens_per_s"])
    per_level = {}
    for level in levels:
        config = best.get(level)
        row = mixed.get(config, {})
        per_level[level] = dict(_level_stats(prompt_rows, level), best_config=config,
                                alpha=row.get("pairs", {}).get(f"{level}>target", {}).get("alpha"),
                                speedup_vs_plain=row.get("speedup_vs_plain"))
    categories = []
    for category in dict.fromkeys(r["category"] for r in prompt_rows):
        rows = [p for p in prompt_rows if p["category"] == category]
        categories.append(dict(category=category, levels={level: _level_stats(rows, level) for level in levels},
                               configs=_config_rows([r for r in records if r["category"] == category], names)))
    shipped = max(levels, key=lambda level: per_level[level]["speedup_vs_plain"] or 0)
    chosen = per_level[shipped]
    summary = dict(draft_acceptance=chosen["alpha"], draft_step_ratio=chosen["step_ratio"],
                   draft_chain_x_plain=chosen["speedup_vs_plain"])
    targets = dict(level=shipped, acceptance_target=ACCEPTANCE_TARGET, step_ratio_target=STEP_RATIO_TARGET,
                   chain_target=CHAIN_TARGET,
                   met_acceptance=bool((chosen["alpha"] or 0) >= ACCEPTANCE_TARGET),
                   met_step_ratio=bool(chosen["step_ratio"] is not None and chosen["step_ratio"] <= STEP_RATIO_TARGET),
                   met_chain=bool((chosen["speedup_vs_plain"] or 0) >= CHAIN_TARGET))
    return dict(summary=summary, mixed=mixed, best=best, levels=per_level, categories=categories, targets=targets)


def _fmt(value, digits: int = 2):
    return None if value is None else round(value, digits)


def render_markdown(data: dict) -> str:
    mixed, best, targets, levels = data["mixed"], data["best"], data["targets"], data["levels"]
    manifest = data["draft_manifest"]
    training = data["draft_training"]
    summary = data["summary"]
    lines = [f"# Intermediate levels on Spec-Bench ({data['model']})", "",
             f"`{data['command']}`", "",
             f"Levels: {', '.join(levels)}. Draft `{data['draft']}`: {manifest['architecture']['num_hidden_layers']} "
             f"decoder layers initialised from target layers {manifest['init_layers']}, vocabulary "
             f"{manifest['vocab_subset_size'] or manifest['architecture']['vocab_size']}, stored {manifest['storage_dtype']}; "
             f"trained {training.get('steps_done')} steps on {training.get('num_tokens')} tokens "
             f"({training.get('train_seconds')} s training, {training.get('data_seconds')} s data). "
             "`int4`/`int8`: the target's own quantized copy (engine `quantized_levels`).", "",
             f"Greedy, {data['args'].get('max_tokens', data['args'].get('max_new_tokens'))} new tokens, {len(data['prompts'])} prompts, "
             f"chat template; machine load {data['machine_start'].get('load_average')} at start, "
             f"torch threads {data['machine_end'].get('torch_threads')}; wall {data['wall_s']:.0f} s.", "",
             f"## Targets (summary: the level whose [level, target] is fastest, `{targets['level']}`)", "",
             markdown_table(["quantity", "measured", "target", "met"], [
                 ["draft_acceptance (per-token alpha, level>target)", _fmt(summary["draft_acceptance"], 3),
                  f">= {targets['acceptance_target']}", targets["met_acceptance"]],
                 ["draft_step_ratio (1-token step / target's)", _fmt(summary["draft_step_ratio"], 3),
                  f"<= {targets['step_ratio_target']}", targets["met_step_ratio"]],
                 ["draft_chain_x_plain (best [level, target] K, mix)", _fmt(summary["draft_chain_x_plain"]),
                  f">= {targets['chain_target']}", targets["met_chain"]]]),
             "", "## Levels side by side", "",
             markdown_table(["level", "top-1 agreement", "alpha in best [level, target]", "step ratio", "step ms",
                             "best [level, target]", "x plain"],
                            [[name, _fmt(v["top1_agreement"], 3), _fmt(v["alpha"], 3), _fmt(v["step_ratio"], 3),
                              _fmt(v["step_ms"], 1), v["best_config"], _fmt(v["speedup_vs_plain"])]
                             for name, v in levels.items()]),
             "", "## Mixed Spec-Bench set, per configuration", ""]
    rows = []
    for name, row in mixed.items():
        alphas = " ".join(f"{pair} {v['alpha']:.2f}" for pair, v in row["pairs"].items() if v.get("alpha") is not None)
        rows.append([name, _fmt(row["tokens_per_s"]), _fmt(row["speedup_vs_plain"]), _fmt(row["speedup_vs_hf_plain"]),
                     alphas, "yes" if row["identical_to_plain"] else "NO"])
    lines.append(markdown_table(["config", "tok/s", "x plain", "x HF plain", "alpha per pair", "= plain"], rows))
    shown = list(best.values())
    lines += ["", "## Per category (x plain of each ladder's best K on the mix; top-1 agreement / step ratio per level)", ""]
    rows = []
    for cat in data["categories"]:
        conf = cat["configs"]
        rows.append([cat["category"],
                     *[f"{_fmt(v['top1_agreement'])} / {_fmt(v['step_ratio'], 3)}" for v in cat["levels"].values()],
                     *[_fmt(conf.get(name, {}).get("speedup_vs_plain")) for name in shown],
                     _fmt(conf.get("plain", {}).get("speedup_vs_hf_plain"))])
    lines.append(markdown_table(["category", *[f"{lv} agree / ratio" for lv in levels], *shown, "plain x HF"], rows))
    if data.get("cost_table"):
        lines += ["", "## Draft size vs step cost (untrained drafts, single-token step / target's)", ""]
        sizes = sorted({r["vocab"] for r in data["cost_table"]}, reverse=True)
        by_layers = defaultdict(dict)
        for r in data["cost_table"]:
            by_layers[r["layers"]][r["vocab"]] = r["ratio"]
        lines.append(markdown_table(["layers"] + [f"vocab {s}" for s in sizes],
                                    [[layers] + [_fmt(v.get(s), 3) for s in sizes] for layers, v in sorted(by_layers.items())]))
    curve = training.get("curve") or []
    if curve:
        lines += ["", "## Draft training curve (held-out: KL to the target, top-1 agreement on reply positions)", ""]
        lines.append(markdown_table(["step", "seconds", "train KL", "held-out KL", "top-1 reply", "top-1 all"],
                                    [[p["step"], p["seconds"], _fmt(p["train_kl"], 3), p["kl"], p["top1_reply"], p["top1"]]
                                     for p in curve]))
    return "\n".join(lines)
