"""bench_serving: the summary's ratios on a hand-made table (a cell where a static beats both
routers included), the decision-time quantile, which levels a fixed server loads, the memory
check, argument errors, and a smoke run against tiny-model servers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.bench_serving import BenchServingArgs, main
from bench.serving_servers import ServedConfig, ServerFleet
from bench.serving_summary import histogram_quantile, summarize_runs
from data.paths import REPO_ROOT

TABLE = {   # cell -> config -> output tok/s of repeat 0 and repeat 1
    "closed c=1": {"learned": (30, 34), "cost-model": (20, 20), "plain": (10, 10), "ngram>target@k4": (15, 17)},
    "poisson 2.00/s": {"learned": (9, 11), "cost-model": (12, 12), "plain": (8, 8), "ngram>target@k4": (15, 15)},
}


def table_runs() -> list[dict]:
    runs = []
    for cell, by_config in TABLE.items():
        for config, values in by_config.items():
            for repeat, value in enumerate(values):
                run = {"cell": cell, "config": config, "repeat": repeat, "report": {"output_throughput": value}}
                if config == "learned":
                    run["routing"] = {"by_source": {"learned": 97.0, "fallback": 3.0}}
                elif config == "cost-model":
                    run["routing"] = {"by_source": {"fallback": 50.0}}
                runs.append(run)
    return runs


def test_summary_of_a_hand_made_table():
    summary = summarize_runs(table_runs(), {"learned": 0.2, "cost-model": 0.4}, cpu="Test CPU")
    # c=1: learned 32 / best fixed ngram 16; poisson: cost-model 12 / ngram 15, the static wins there
    assert summary["router_x_best_fixed_by_cell"]["closed c=1"] == {"ratio": 2.0, "router": "learned",
                                                                    "best_fixed": "ngram>target@k4"}
    assert summary["router_x_best_fixed_by_cell"]["poisson 2.00/s"] == {"ratio": 0.8, "router": "cost-model",
                                                                        "best_fixed": "ngram>target@k4"}
    assert summary["router_x_best_fixed_min"] == pytest.approx(0.8)
    assert summary["learned_x_cost_model_min"] == pytest.approx(10 / 12)
    assert summary["learned_x_cost_model_max"] == pytest.approx(32 / 20)
    assert summary["router_x_plain_c1"] == pytest.approx(32 / 10)
    assert summary["fallback_share"] == pytest.approx(12 / 400)           # the cost model's runs do not count
    logs = np.log([30 / 20, 34 / 20, 9 / 12, 11 / 12])
    half = 3.182 * logs.std(ddof=1) / 2                                    # t(0.975, 3 dof), 4 pairs
    paired = summary["learned_x_cost_model_paired"]
    assert paired["num_pairs"] == 4 and paired["geomean"] == pytest.approx(math.exp(logs.mean()))
    assert paired["ci95"] == pytest.approx([math.exp(logs.mean() - half), math.exp(logs.mean() + half)])
    assert summary["cpu"] == "Test CPU" and summary["decision_p99_ms"] == {"learned": 0.2, "cost-model": 0.4}
    met = {name: t["met"] for name, t in summary["targets"].items()}
    assert met == {"router_x_best_fixed_min": False, "router_x_plain_c1": True, "learned_x_cost_model_min": False,
                   "learned_x_cost_model_max": True, "learned_x_cost_model_paired": False, "fallback_share": False,
                   "decision_p99_ms": True}


def test_a_summary_without_the_learned_router_leaves_its_figures_none():
    runs = [r for r in table_runs() if r["config"] != "learned"]
    summary = summarize_runs(runs)
    assert summary["router_x_best_fixed_min"] == pytest.approx(0.8)
    assert summary["learned_x_cost_model_min"] is None and summary["learned_x_cost_model_paired"] is None
    assert summary["fallback_share"] is None and summary["router_x_plain_c1"] == pytest.approx(2.0)


def test_histogram_quantile_interpolates_within_the_bucket_as_promql_does():
    buckets = [(1e-4, 50.0), (1e-3, 90.0), (1e-2, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(1e-4)
    assert histogram_quantile(buckets, 0.99) == pytest.approx(1e-3 + (1e-2 - 1e-3) * 0.9)
    assert histogram_quantile([(1e-3, 0.0), (math.inf, 4.0)], 0.99) == pytest.approx(1e-3)   # past the last bound
    assert histogram_quantile([(1e-3, 0.0), (math.inf, 0.0)], 0.99) is None


def test_fixed_actions_are_the_learned_policys_action_list():
    manifest = json.loads((REPO_ROOT / "checkpoints" / "router" / "manifest.json").read_text())
    args = BenchServingArgs(fixed="actions", policy=str(REPO_ROOT / "checkpoints" / "router"))
    assert args.fixed_list == [a["label"] for a in manifest["actions"]] and args.fixed_list[0] == "plain"


@pytest.mark.parametrize("name, flags", [
    ("learned", ["--draft", "D", "--eagle", "E", "--quantized-levels", "int4"]),
    ("plain", ["--draft", "", "--eagle", "", "--quantized-levels", ""]),
    ("ngram>int4>target@k4", ["--draft", "", "--eagle", "", "--quantized-levels", "int4"]),
    ("draft>target@k2", ["--draft", "D", "--eagle", "", "--quantized-levels", ""]),
    ("ngram>eagle>int4>target@k8", ["--draft", "", "--eagle", "E", "--quantized-levels", "int4"])])
def test_a_fixed_server_loads_only_the_levels_its_chain_runs(name, flags):
    assert ServedConfig(name).level_flags("D", "E", "int4") == flags


def test_a_server_that_would_not_fit_in_memory_is_skipped_with_its_reason(tmp_path):
    fleet = ServerFleet([], tmp_path, "t", min_free_gb=1e6)
    assert fleet.start(ServedConfig("plain"), []) is None
    assert not fleet.servers and "MemAvailable" in fleet.skipped["plain"]


@pytest.mark.parametrize("kwargs, message", [
    ({"routers": "learned,oracle"}, "unknown routers"),
    ({"routers": "learned"}, "keep cost-model"),
    ({"fixed": "plain,warp@4x"}, "decision .warp@4x. must be"),
    ({"concurrencies": "0"}, "finite and > 0"),
    ({"repeats": 0}, "must be > 0"),
    ({"fixed": "actions", "policy": "/nonexistent"}, "--fixed actions reads the policy's manifest: no policy manifest")])
def test_bad_arguments_are_refused_with_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BenchServingArgs(**kwargs)


def test_smoke_run_against_tiny_model_servers(tmp_path, target, tokenizer):
    """Three real servers (learned, cost model, plain) on a tiny model, one closed loop and one
    saturating Poisson cell, 2 repeats: every summary figure is there and finite, the CPU named."""
    model_dir = tmp_path / "tiny"
    target.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = BenchServingArgs(smoke=True, model=str(model_dir), draft="", eagle="", fixed="plain", num_threads=1,
                            max_prompt_tokens=24, profile_budget_s=1.0, output_name="smoke",
                            results_dir=str(tmp_path / "results"))
    data = main(args)
    summary = data["summary"]
    for key in ("router_x_best_fixed_min", "learned_x_cost_model_min", "learned_x_cost_model_max",
                "router_x_plain_c1", "fallback_share"):
        assert math.isfinite(summary[key]), key
    assert all(math.isfinite(x) for x in summary["learned_x_cost_model_paired"]["ci95"])
    assert set(summary["decision_p99_ms"]) == {"learned", "cost-model"}
    assert all(math.isfinite(v) for v in summary["decision_p99_ms"].values())
    assert summary["cpu"] and summary["cpu"] == data["machine"]["cpu"]
    assert [c["name"] for c in data["cells"]][0] == "closed c=1" and len(data["cells"]) == 2
    assert data["num_runs"] == data["num_planned_runs"] == 2 * 2 * 3 and not data["stopped_early"]
    assert {(r["cell"], r["repeat"]) for r in data["runs"] if r["config"] == "plain"} == \
        {(c["name"], r) for c in data["cells"] for r in (0, 1)}
    assert all(r["report"]["completed"] == r["report"]["num_requests"] > 0 for r in data["runs"])
    saved = json.loads((tmp_path / "results" / "smoke.json").read_text())
    assert saved["summary"]["cpu"] == summary["cpu"] and (tmp_path / "results" / "smoke.md").exists()
