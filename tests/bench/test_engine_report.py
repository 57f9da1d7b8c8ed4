"""bench.engine_report: the summary a program reads is computed from the runs, as named."""

from __future__ import annotations

import pytest

from bench.bench_engine import BenchArgs, bench_prompts
from bench.engine_report import render_markdown, summarize

PLAIN = "ours-plain-float32-prepacked"


def run(config: str, qid: int, category: str, tokens: list[int], elapsed: float, steps: int = 0,
        drafted: int = 0, accepted: int = 0) -> dict:
    return {"config": config, "question_id": qid, "category": category, "num_prompt_tokens": 5,
            "tokens": tokens, "elapsed_s": elapsed, "num_steps": steps or len(tokens),
            "num_draft_tokens": drafted, "num_accepted_tokens": accepted, "forward_s": 0.9 * elapsed,
            "peak_rss_mb": 900.0}


def data(runs: list[dict]) -> dict:
    curve = {"1": {"1": 40.0, "9": 44.0, "16": 46.0}}
    return {"runs": runs, "default_path": "float32-prepacked", "verification_curves": {"float32-prepacked": curve},
            "batch16": {"peak_rss_mib": 1100.0}, "model": "m", "args": {"max_new_tokens": 4, "num_threads": 2},
            "command": "python -m bench.bench_engine", "num_prompts_done": 2, "num_prompts_planned": 2,
            "wall_s": 60.0, "cpu": "Test CPU", "decode_verify": {"positions": 10, "logits_differ": 1,
                                                            "bitwise_share": 0.9}}


def test_summary_ratios_identity_and_worst_category():
    runs = [run("llamacpp-plain", 1, "qa", [1, 2, 3, 4], 0.1), run("llamacpp-plain", 2, "rag", [5, 6], 0.1),
            run(PLAIN, 1, "qa", [1, 2, 3, 4], 0.4), run(PLAIN, 2, "rag", [5, 6], 0.2),
            run("ours-cost-model", 1, "qa", [1, 2, 3, 4], 0.2, steps=2, drafted=4, accepted=2),
            run("ours-cost-model", 2, "rag", [5, 7], 0.25),
            run("ours-learned", 1, "qa", [1, 2, 3, 4], 0.3), run("ours-learned", 2, "rag", [5, 6], 0.3)]
    d = data(runs)
    d.update(summarize(d))
    s = d["summary"]
    assert set(s) == {"ours_plain_x_llamacpp", "best_router_x_llamacpp", "cost_model_x_plain", "greedy_identity",
                      "decode_verify_bitwise_share", "verify16_x_verify1", "peak_rss_mib_batch16", "cpu"}
    assert s["ours_plain_x_llamacpp"] == pytest.approx((6 / 0.6) / (6 / 0.2), abs=1e-4)
    assert s["cost_model_x_plain"] == pytest.approx((6 / 0.45) / (6 / 0.6), abs=1e-4)
    assert s["best_router_x_llamacpp"] == pytest.approx((6 / 0.45) / (6 / 0.2), abs=1e-4)   # the faster router
    assert d["figures"]["cost_model_min_category_x_plain"] == pytest.approx(0.2 / 0.25, abs=1e-4)    # rag
    assert d["figures"]["verify9_x_verify1"] == pytest.approx(1.1)
    assert s["verify16_x_verify1"] == pytest.approx(46 / 40)
    assert s["decode_verify_bitwise_share"] == 0.9 and s["cpu"] == "Test CPU"
    assert s["greedy_identity"] == 0.5                     # prompt 2 differs from plain
    assert s["peak_rss_mib_batch16"] == 1100.0
    row = next(r for r in d["table"] if r["config"] == "ours-cost-model")
    assert row["acceptance"] == 0.5 and row["identical_to_plain"] == 0.5
    assert "| ours-cost-model |" in render_markdown(d)


def test_prompts_cover_spec_bench_mt_bench_and_sharegpt_without_repeats():
    prompts = bench_prompts(BenchArgs(prompts_per_category=3, mt_bench=8, sharegpt=8))
    categories = [p.category for p in prompts]
    assert len(prompts) == 13 * 3 + 16
    assert categories.count("mt_bench") == 8 and categories.count("sharegpt") == 8
    assert len({p.question_id for p in prompts}) == len(prompts)


def test_a_column_dropped_mid_run_is_compared_on_the_prompts_it_ran():
    runs = [run("llamacpp-plain", 1, "qa", [1, 2, 3, 4], 0.1),                # then its process died
            run(PLAIN, 1, "qa", [1, 2, 3, 4], 0.4), run(PLAIN, 2, "rag", [5, 6], 2.0),
            run("ours-cost-model", 1, "qa", [1, 2, 3, 4], 0.2), run("ours-cost-model", 2, "rag", [5, 6], 1.0)]
    d = data(runs)
    d.update(summarize(d))
    assert d["summary"]["ours_plain_x_llamacpp"] == pytest.approx(0.1 / 0.4)      # prompt 1 only
    assert d["summary"]["cost_model_x_plain"] == pytest.approx(2.4 / 1.2)
    assert d["figures"]["median_per_prompt"]["ours-cost-model_x_ours-plain-float32-prepacked"] == pytest.approx(2.0)
