"""Summaries and markdown of the draft benchmark (bench/bench_draft.py).

Speeds are ratios of sums (new tokens / seconds) over the same prompts for every configuration.
Acceptance is given two ways: `acceptance_rate` = accepted / proposed (vLLM's metric, falls with
K) and `alpha` = accepted / (accepted + rejections), the per-token probability that a drafted
token is accepted given the ones before it were (what the cost model's (1 - a^(K+1)) / (1 - a)
needs; comparable with teacher-forced top-1 agreement).
"""

from __future__ import annotations

from collections import defaultdict

from bench.common import markdown_table

ACCEPTANCE_TARGET = 0.6
STEP_RATIO_TARGET = 0.25


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


def summarise(records: list[dict], prompt_rows: list[dict], columns: list) -> dict:
    names = [c.name for c in columns]
    mixed = _config_rows(records, names)
    best = {}
    for prefix in ("draft-k", "ngram-draft-k"):
        candidates = [n for n in names if n.startswith(prefix) and mixed[n]["tokens_per_s"]]
        if candidates:
            best[prefix.rstrip("-k")] = max(candidates, key=lambda n: mixed[n]["tokens_per_s"])
    categories = []
    for category in dict.fromkeys(r["category"] for r in prompt_rows):
        rows = [p for p in prompt_rows if p["category"] == category]
        per_config = _config_rows([r for r in records if r["category"] == category], names)
        categories.append(dict(category=category,
                               top1_agreement=sum(p["top1_matches"] for p in rows) / max(1, sum(p["top1_positions"] for p in rows)),
                               step_ratio=sum(p["ratio"] for p in rows) / len(rows), configs=per_config))
    matches = sum(p["top1_matches"] for p in prompt_rows)
    positions = sum(p["top1_positions"] for p in prompt_rows)
    step_ratio = sum(p["ratio"] for p in prompt_rows) / len(prompt_rows) if prompt_rows else None
    best_draft = mixed.get(best.get("draft"), {})
    alpha = best_draft.get("pairs", {}).get("draft>target", {}).get("alpha")
    targets = dict(
        top1_agreement=matches / positions if positions else None, alpha_draft_target=alpha,
        acceptance_target=ACCEPTANCE_TARGET, step_ratio=step_ratio, step_ratio_target=STEP_RATIO_TARGET,
        best_draft_config=best.get("draft"), best_draft_speedup_vs_plain=best_draft.get("speedup_vs_plain"),
        met_acceptance=bool(alpha is not None and alpha >= ACCEPTANCE_TARGET),
        met_step_ratio=bool(step_ratio is not None and step_ratio <= STEP_RATIO_TARGET),
        met_speedup=bool((best_draft.get("speedup_vs_plain") or 0) > 1))
    return dict(mixed=mixed, best=best, categories=categories, targets=targets)


def _fmt(value, digits: int = 2):
    return None if value is None else round(value, digits)


def render_markdown(data: dict) -> str:
    mixed, best, targets = data["mixed"], data["best"], data["targets"]
    manifest = data["draft_manifest"]
    training = data["draft_training"]
    lines = [f"# Distilled draft on Spec-Bench ({data['model']})", "",
             f"Draft `{data['draft']}`: {manifest['architecture']['num_hidden_layers']} decoder layers initialised "
             f"from target layers {manifest['init_layers']}, vocabulary "
             f"{manifest['vocab_subset_size'] or manifest['architecture']['vocab_size']}, stored {manifest['storage_dtype']}; "
             f"trained {training.get('steps_done')} steps on {training.get('num_tokens')} tokens "
             f"({training.get('train_seconds')} s training, {training.get('data_seconds')} s data).", "",
             f"Greedy, {data['args']['max_new_tokens']} new tokens, {len(data['prompts'])} prompts, "
             f"chat template; machine load {data['machine_start'].get('load_average')} at start, "
             f"torch threads {data['machine_end'].get('torch_threads')}; wall {data['wall_s']:.0f} s.", "",
             "## Targets", "",
             markdown_table(["quantity", "measured", "target", "met"], [
                 ["teacher-forced top-1 agreement (draft vs target greedy output)", _fmt(targets["top1_agreement"], 3),
                  f">= {targets['acceptance_target']}", targets["top1_agreement"] is not None
                  and targets["top1_agreement"] >= targets["acceptance_target"]],
                 [f"alpha draft>target in {targets['best_draft_config']}", _fmt(targets["alpha_draft_target"], 3),
                  f">= {targets['acceptance_target']}", targets["met_acceptance"]],
                 ["draft step time / target step time (1 token, median)", _fmt(targets["step_ratio"], 3),
                  f"<= {targets['step_ratio_target']}", targets["met_step_ratio"]],
                 [f"{targets['best_draft_config']} speedup vs plain (mixed set)",
                  _fmt(targets["best_draft_speedup_vs_plain"]), "> 1", targets["met_speedup"]]]),
             "", "## Mixed Spec-Bench set, per configuration", ""]
    rows = []
    for name, row in mixed.items():
        pairs = row["pairs"]
        cell = lambda pair, key: _fmt(pairs.get(pair, {}).get(key), 3)   # noqa: E731
        rows.append([name, _fmt(row["tokens_per_s"]), _fmt(row["speedup_vs_plain"]), _fmt(row["speedup_vs_hf_plain"]),
                     cell("draft>target", "alpha"), cell("draft>target", "acceptance_rate"),
                     cell("ngram>draft", "alpha"), cell("ngram>draft", "acceptance_rate"),
                     "yes" if row["identical_to_plain"] else "NO"])
    lines.append(markdown_table(["config", "tok/s", "x plain", "x HF plain", "alpha d>t", "acc rate d>t",
                                 "alpha n>d", "acc rate n>d", "= plain"], rows))
    d, n = best.get("draft"), best.get("ngram-draft")
    lines += ["", f"## Per category ([draft, target] = {d}, [ngram, draft, target] = {n}, best K on the mixed set)", ""]
    rows = []
    for cat in data["categories"]:
        conf = cat["configs"]
        pair = lambda name, p, key: _fmt(conf.get(name, {}).get("pairs", {}).get(p, {}).get(key), 2)  # noqa: E731
        rows.append([cat["category"], _fmt(cat["top1_agreement"]), pair(d, "draft>target", "alpha"),
                     pair(n, "ngram>draft", "alpha"), _fmt(cat["step_ratio"], 3),
                     _fmt(conf.get(d, {}).get("speedup_vs_plain")), _fmt(conf.get(d, {}).get("speedup_vs_hf_plain")),
                     _fmt(conf.get(n, {}).get("speedup_vs_plain")), _fmt(conf.get(n, {}).get("speedup_vs_hf_plain")),
                     _fmt(conf.get("plain", {}).get("speedup_vs_hf_plain"))])
    lines.append(markdown_table(["category", "top-1 agree", "alpha d>t", "alpha n>d", "step ratio",
                                 "[d,t] x plain", "[d,t] x HF", "[n,d,t] x plain", "[n,d,t] x HF", "plain x HF"], rows))
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
        lines += ["", "## Training curve (held-out: KL to the target, top-1 agreement on reply positions)", ""]
        lines.append(markdown_table(["step", "seconds", "train KL", "held-out KL", "top-1 reply", "top-1 all"],
                                    [[p["step"], p["seconds"], _fmt(p["train_kl"], 3), p["kl"], p["top1_reply"], p["top1"]]
                                     for p in curve]))
    return "\n".join(lines)
