"""bench/bench_chains.py's core on the tiny target and drafts: lossless columns, the result structure."""

from __future__ import annotations

import time

import pytest

from bench.bench_chains import build_cost_router, run_chains
from bench.chains_args import ChainsBenchArgs
from bench.chains_markdown import render_markdown
from bench.chains_runs import grid_columns, load_column_set
from bench.common import BenchPrompt


def test_run_chains_is_lossless_and_reports_every_column(make_engine, tokenizer, tmp_path):
    cfg = ChainsBenchArgs(categories="qa,coding", max_tokens=6, ks="2", concurrency="1,2",
                          profile=str(tmp_path / "absent.json"), profile_budget_s=1.0, load_columns="all", repeats=2)
    engine = make_engine(max_num_seqs=2)
    cost_router = build_cost_router(engine, cfg, "tiny")
    texts = {"qa": "what is a cat? a cat is a cat.", "coding": "def f(x): return x + x + x"}
    prompts = [(BenchPrompt(i, c, t), tokenizer.encode(t, add_special_tokens=False))
               for i, (c, t) in enumerate(texts.items())]
    load_prompts = [tokenizer.encode(t, add_special_tokens=False) for t in ["abc abc abc", "hello hello", *texts.values()]]

    data = run_chains(engine, cost_router, prompts, load_prompts, cfg, model_levels=["draft"], began=time.perf_counter())

    assert data["columns"] == ["plain", "ngram>target@k2", "suffix>target@k2", "draft>target@k2",
                               "ngram>draft>target@k2", "cost-model"]
    assert len(data["batch1_runs"]) == 2 * 6
    assert all(run["is_identical_to_plain"] for run in data["batch1_runs"])
    repeats = {run["config"]: len(run["elapsed_runs_s"]) for run in data["batch1_runs"]}
    assert repeats == {"plain": 2, "cost-model": 2, **{c: 1 for c in data["chains"]}}
    assert all(run["elapsed_s"] in run["elapsed_runs_s"] for run in data["batch1_runs"])
    assert data["targets"]["lossless_batch1"]["is_met"] is True
    assert set(data["categories"]) == {"qa", "coding"}
    assert data["mixed"]["best_static"] in data["chains"]
    assert set(data["mixed"]["best_k_per_chain"]) == {"ngram>target", "suffix>target", "draft>target",
                                                      "ngram>draft>target"}
    assert data["mixed"]["three_level_x_best_two_level"] > 0
    assert [block["concurrency"] for block in data["load"]] == [1, 2]
    for block in data["load"]:
        assert {r["config"] for r in block["rows"]} == set(data["columns"])
        assert all(r["num_tokens"] > 0 and r["num_requests"] == 4 for r in block["rows"])
        assert {r["config"]: len(r["tokens_per_s_runs"]) for r in block["rows"]}["cost-model"] == 2
    assert sum(data["cost_model_choices"].values()) > 0
    assert data["decision_overhead"]["all"] is not None
    assert data["rss_at_max_concurrency"]["concurrency"] == 2
    markdown = render_markdown({**data, "model": "tiny", "command": "test", "args": vars(cfg), "wall_s": 1.0,
                                "machine_start": {}, "machine_end": {}})
    assert "3-level / best 2-level" in markdown and "lossless_batch1: 12/12 -> **met**" in markdown
    assert all(row["plain_run_spread"] >= 0 and 0 <= row["cost_plain_share"] <= 1 for row in data["categories"].values())
    assert "plain run spread" in markdown
    plane = data["three_level_plane"]                       # the cost model's 3-level vs 2-level map
    assert len(plane["ratio"]) == len(plane["rows"]) and all(len(r) == len(plane["columns"]) for r in plane["ratio"])
    assert all(len(label.split("@")[0].split(">")) >= 3 for row in plane["best_three"] for label in row)
    assert "best 3-level goodput / best 2-level goodput" in markdown
    assert {"multilevel_wins", "best_router_x_plain_mix", "best_router_x_plain_c8"} <= set(data["summary"])
    assert data["summary"]["learned_x_plain_mix"] is None            # no learned column here
    assert isinstance(data["summary"]["multilevel_wins"], float)
    assert data["summary"]["best_router_x_plain_mix"] == data["mixed"]["cost_x_plain"]


def test_a_multilevel_win_needs_5_percent_beyond_plain_s_spread():
    from bench.chains_report import headline

    categories = {"a": dict(three_level_x_best_two_level=1.10, plain_run_spread=0.02),     # win
                  "b": dict(three_level_x_best_two_level=1.04, plain_run_spread=0.0),      # under 5%
                  "c": dict(three_level_x_best_two_level=1.10, plain_run_spread=0.20),     # inside the noise
                  "d": dict(three_level_x_best_two_level=None, plain_run_spread=None)}
    load_rows = [dict(concurrency=8, config="plain", tokens_per_s=10.0, tokens_per_s_runs=[10.0, 10.2]),
                 dict(concurrency=8, config="ngram>target@k2", tokens_per_s=12.0),
                 dict(concurrency=8, config="ngram>draft>int4>target@k2", tokens_per_s=13.0),   # 1.083x: win
                 dict(concurrency=8, config="cost-model", tokens_per_s=12.5)]
    summary = dict(categories=categories, mixed=dict(cost_x_plain=1.3), load=[dict(concurrency=8, cost_x_plain=1.25)])
    figures = headline(summary, load_rows)
    assert {k: figures[k] for k in ("multilevel_wins", "best_router_x_plain_mix", "best_router_x_plain_c8")} == dict(
        multilevel_wins=2.0, best_router_x_plain_mix=1.3, best_router_x_plain_c8=1.25)


def test_a_repeat_starts_from_the_column_s_state_before_the_prompt(make_engine, tokenizer):
    """Else the repeat finds the prompt's output in the suffix history and the trackers."""
    from bench.chains_runs import ColumnSwitch, run_one

    engine = make_engine(max_num_seqs=1)
    column = next(c for c in grid_columns([], [2]) if c.name == "suffix>target@k2")
    switch = ColumnSwitch(engine, routers={})
    switch.activate(column)
    before = switch.saved(column)
    run_one(engine, tokenizer.encode("abc abc abc abc", add_special_tokens=False), 6)
    assert engine.trackers.num_steps > 0
    switch.restore(column, before)
    assert engine.trackers.num_steps == 0 and engine.drafters["suffix"] is not before[0]["suffix"]


def test_plain_run_spread_compares_the_repeats_of_every_prompt_together():
    from bench.chains_report import _run_spread

    runs = [dict(num_tokens=10, elapsed_runs_s=[1.0, 2.0]), dict(num_tokens=10, elapsed_runs_s=[1.0, 1.0])]
    assert _run_spread(runs) == pytest.approx(20 / 2.0 / (20 / 3.0) - 1)
    assert _run_spread([dict(num_tokens=10, elapsed_runs_s=[1.0])]) is None


def test_median_run_is_the_middle_time_and_the_lower_middle_of_an_even_count():
    from bench.chains_runs import median_run

    assert median_run(["a", "b", "c"], {"a": 3.0, "b": 1.0, "c": 2.0}.get) == ("c", [3.0, 1.0, 2.0])
    assert median_run(["a", "b"], {"a": 3.0, "b": 1.0}.get)[0] == "b"


def test_load_columns_best_keeps_plain_cost_model_and_each_chains_fastest_k():
    columns = grid_columns([], [2, 4])
    speeds = {"plain": 10, "ngram>target@k2": 12, "ngram>target@k4": 15, "suffix>target@k2": 11,
              "suffix>target@k4": 9, "cost-model": 14}
    records = [dict(config=name, num_tokens=speed, elapsed_s=1.0) for name, speed in speeds.items()]
    chosen = [c.name for c in load_column_set(columns, records, "best")]
    assert chosen == ["plain", "cost-model", "ngram>target@k4", "suffix>target@k2"]
    assert load_column_set(columns, records, "all") == columns


def test_args_reject_bad_values():
    with pytest.raises(ValueError, match="ks"):
        ChainsBenchArgs(ks="2,x")
    with pytest.raises(ValueError, match="repeats"):
        ChainsBenchArgs(repeats=0)
    with pytest.raises(ValueError, match="concurrency"):
        ChainsBenchArgs(concurrency="0")
    with pytest.raises(ValueError, match="unknown categories"):
        ChainsBenchArgs(categories="poetry")


def test_the_three_level_plane_rises_with_the_draft_s_acceptances():
    from bench.chains_analysis import three_level_plane
    from engine.cost_model import CostModel, decision_grid
    from engine.profile import LatencyProfile, LevelProfile

    def level(fn, kind="model"):
        batches, tokens, contexts = ((1,) if kind == "model_free" else (1, 4)), (1, 2, 4, 8, 16), (0, 2048)
        return LevelProfile(kind, batches, tokens, contexts, [[[fn(t) for _ in contexts] for t in tokens] for _ in batches])

    profile = LatencyProfile("synthetic", {"target": level(lambda t: 0.05 + 0.01 * t), "draft": level(lambda t: 0.02),
                                           "ngram": level(lambda t: 1e-5, "model_free")})
    model = CostModel(profile, decision_grid([("ngram", "target"), ("draft", "target"), ("ngram", "draft", "target")]))
    plane = three_level_plane(model, {"ngram>target": 0.2, "draft>target": 0.15, "ngram>draft": 0.04}, context=200)
    assert plane["rows"][0] == 0.15 and plane["columns"][0] == 0.04
    ratio = plane["ratio"]
    assert ratio[0][0] < 1 < ratio[-1][-1]                   # loses at the measured point, wins when both are high
    assert ratio[-1][-1] > ratio[-1][1]                      # a better n-gram filter helps the 3-level chain


def test_the_learned_policy_runs_as_served_and_stays_lossless(make_engine, tokenizer, tmp_path):
    """The learned column routes every step with the served guarded router (no fallback), its
    observer sees the load, and its outputs equal plain decoding's."""
    from bench.bench_chains import build_learned_router
    from engine import Decision
    from serving.config import ServerConfig
    from tests.serving.conftest import write_checkpoint

    actions = [Decision(), Decision(("ngram", "target"), 2), Decision(("ngram", "target"), 4)]
    cfg = ChainsBenchArgs(categories="qa", max_tokens=6, ks="2", concurrency="2", repeats=2,
                          profile=str(tmp_path / "absent.json"), profile_budget_s=1.0,
                          policy=str(tmp_path / "router"))
    write_checkpoint(tmp_path / "router", ServerConfig(router="learned", policy=cfg.policy, slo_tpot_s=cfg.slo_tpot_s),
                     actions, preferred=2)
    engine = make_engine(max_num_seqs=2)
    cost_router = build_cost_router(engine, cfg, "tiny")
    learned = build_learned_router(engine, cfg, "tiny", cost_router)
    assert learned is not None and learned.fallback is cost_router
    text = "what is a cat? a cat is a cat. a cat is a cat."
    prompts = [(BenchPrompt(0, "qa", text), tokenizer.encode(text, add_special_tokens=False))]
    load_prompts = [tokenizer.encode(t, add_special_tokens=False) for t in ["abc abc abc", "hello hello", text, "a b a b"]]

    data = run_chains(engine, cost_router, prompts, load_prompts, cfg, model_levels=[], began=time.perf_counter(),
                      learned_router=learned)

    assert data["columns"][-2:] == ["cost-model", "learned"]
    runs = [r for r in data["batch1_runs"] if r["config"] == "learned"]
    assert len(runs) == 1 and runs[0]["is_identical_to_plain"] and len(runs[0]["elapsed_runs_s"]) == 2
    assert set(data["learned_choices"]) == {"ngram>target@k4"}
    assert data["learned_decisions"]["fallback"] == 0 and data["learned_decisions"]["learned"] > 0
    assert "0 of" in data["learned_router"]
    load = {r["config"]: r for r in data["load"][0]["rows"]}
    assert load["learned"]["num_identical_to_plain"] == 4 and data["load"][0]["learned_x_plain"] > 0
    steps = sum(r["num_steps"] for r in data["batch1_runs"] + data["load_runs"] if r["config"] == "learned")
    assert learned.observer.num_steps >= steps                   # its observer saw every step it routed
    assert data["summary"]["learned_x_plain_mix"] == data["mixed"]["learned_x_plain"]
    assert data["summary"]["best_router_x_plain_mix"] == max(data["mixed"]["cost_x_plain"],
                                                             data["mixed"]["learned_x_plain"])
    markdown = render_markdown({**data, "model": "tiny", "command": "test", "args": vars(cfg), "wall_s": 1.0,
                                "machine_start": {}, "machine_end": {}})
    assert "learned tok/s" in markdown and "Learned policy: decision overhead" in markdown


def test_a_policy_that_cannot_load_leaves_the_learned_column_out(make_engine, tmp_path, capsys):
    from bench.bench_chains import build_learned_router

    cfg = ChainsBenchArgs(categories="qa", profile=str(tmp_path / "absent.json"), profile_budget_s=1.0,
                          policy=str(tmp_path / "missing"))
    engine = make_engine(max_num_seqs=1)
    assert build_learned_router(engine, cfg, "tiny", build_cost_router(engine, cfg, "tiny")) is None
    assert "learned column left out" in capsys.readouterr().out


def test_a_baseline_engine_runs_beside_ours_and_is_kept_out_of_the_lossless_count(make_engine, tokenizer, tmp_path):
    """llama.cpp's column (here a stand-in generator twice as slow as plain that emits other tokens)
    gets per-category speeds and ratios; its different outputs do not fail our losslessness."""
    from bench.engine_columns import Generation

    cfg = ChainsBenchArgs(categories="qa", max_tokens=6, ks="2", concurrency="", repeats=1,
                          profile=str(tmp_path / "absent.json"), profile_budget_s=1.0)
    engine = make_engine(max_num_seqs=1)
    cost_router = build_cost_router(engine, cfg, "tiny")
    calls = []

    def baseline(ids, max_new_tokens):
        calls.append(len(ids))
        return Generation([0] * max_new_tokens, elapsed_s=1.0, num_steps=max_new_tokens)

    text = "what is a cat? a cat is a cat."
    prompts = [(BenchPrompt(i, "qa", text + " " * i), tokenizer.encode(text, add_special_tokens=False)) for i in range(2)]
    data = run_chains(engine, cost_router, prompts, [], cfg, model_levels=[], began=time.perf_counter(),
                      baselines={"llama.cpp": baseline})

    assert len(calls) == 1 + 2                                    # warm-up, then once per prompt
    runs = [r for r in data["batch1_runs"] if r["config"] == "llama.cpp"]
    assert len(runs) == 2 and all(r["is_baseline"] and not r["is_identical_to_plain"] for r in runs)
    assert data["targets"]["lossless_batch1"]["is_met"] is True
    mixed = data["mixed"]
    assert mixed["llama_cpp_tokens_per_s"] == pytest.approx(6.0)
    assert mixed["x_llama_cpp"]["plain"] == pytest.approx(mixed["tokens_per_s"]["plain"] / 6.0)
    assert data["summary"]["plain_x_llama_cpp_mix"] == mixed["x_llama_cpp"]["plain"]
    markdown = render_markdown({**data, "model": "tiny", "command": "test", "args": vars(cfg), "wall_s": 1.0,
                                "machine_start": {}, "machine_end": {}})
    assert "Against llama.cpp" in markdown
    assert "llama.cpp column skipped: not installed" in render_markdown(
        {**data, "llama_cpp_skipped": "not installed", "model": "tiny", "command": "test", "args": vars(cfg),
         "wall_s": 1.0, "machine_start": {}, "machine_end": {}})
