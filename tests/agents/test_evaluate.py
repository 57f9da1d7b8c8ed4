"""`agents.evaluate` on a tiny grid: tables with intervals, targets, plots."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest
from stable_baselines3 import PPO

from agents.evaluate import EvaluateConfig, main, mean_ci
from agents.export import export_policy


@pytest.fixture
def untrained_checkpoint(tmp_path, agent_sim_files):
    profile, acceptance = agent_sim_files
    environment = gymnasium.make("SpecRoute-v0", backend="sim", profile=profile, acceptance=acceptance)
    inner = environment.unwrapped
    model = PPO("MlpPolicy", environment, seed=0, device="cpu")
    export_policy(model, tmp_path / "router", obs_spec_version=inner.obs_spec.version, obs_names=inner.obs_spec.names,
                  actions=inner.decisions, obs_min=inner.observation_space.low, obs_max=inner.observation_space.high)
    return tmp_path / "router"


def test_evaluate_writes_tables_targets_and_plots(tmp_path, agent_sim_files, untrained_checkpoint):
    profile, acceptance = agent_sim_files
    cfg = EvaluateConfig(policies=("learned", "cost-model", "static:plain", "static:ngram>target@k4", "oracle"),
                         checkpoint=str(untrained_checkpoint), workloads=("poisson-high",), seeds=2,
                         sweep_loads=(0.2, 1.0), sweep_seeds=1, num_requests=6, output_dir=str(tmp_path / "results"), workers=1,
                         profile=profile, acceptance=acceptance)
    md_path = main(cfg)
    text = md_path.read_text()
    assert "## Targets" in text and "learned >= cost-model (poisson-high)" in text
    assert "learned >= 90% of oracle (poisson-high)" in text
    data = json.loads((tmp_path / "results" / "evaluate.json").read_text())
    cell = data["workloads"]["poisson-high"]["learned"]
    assert set(cell) >= {"tokens_per_s", "tpot_p50_s", "tpot_p99_s", "ttft_p99_s", "slo_attainment", "goodput"}
    assert len(cell["goodput"]["per_seed"]) == 2
    assert sum(cell["action_fractions"]) == pytest.approx(1.0)
    assert data["workloads"]["poisson-high"]["static:plain"]["action_fractions"][0] == pytest.approx(1.0)
    summary = data["summary"]
    learned, cost = (data["workloads"]["poisson-high"][p]["goodput"]["mean"] for p in ("learned", "cost-model"))
    assert summary["learned_x_cost_model_goodput_min"] == pytest.approx(learned / cost)
    assert summary["learned_x_cost_model_goodput_max"] == summary["learned_x_cost_model_goodput_min"]
    assert 0 < summary["learned_oracle_share_min"] and summary["decision_p99_ms"] > 0
    assert "learned_x_best_static_goodput_mix" not in summary         # the mix was not evaluated
    for png in ("evaluate_goodput_vs_load.png", "evaluate_actions_vs_load.png"):
        assert (tmp_path / "results" / png).stat().st_size > 1000


def test_mean_ci_is_a_t_interval():
    stat = mean_ci([1.0, 2.0, 3.0])
    assert stat["mean"] == 2.0
    assert stat["ci95"] == pytest.approx([2.0 - 4.303 / np.sqrt(3), 2.0 + 4.303 / np.sqrt(3)])


def test_unknown_workload_is_rejected():
    with pytest.raises(ValueError, match="unknown workloads"):
        EvaluateConfig(workloads=("nope",))


def test_the_action_plot_draws_bars_for_a_single_load_point(tmp_path):
    import matplotlib.image

    from agents.evaluate_report import plot
    results = {"action_labels": ["plain", "ngram>target@k4"], "workloads": {},
               "sweep": {"learned": {"0.5": {"goodput": {"mean": 1.0, "ci95": [0.9, 1.1]},
                                              "action_fractions": [0.25, 0.75]}}}}
    names = plot(results, tmp_path, "one")
    assert "one_actions_vs_load.png" in names
    pixels = matplotlib.image.imread(tmp_path / "one_actions_vs_load.png")[..., :3]
    saturated = (pixels.max(axis=-1) - pixels.min(axis=-1)) > 0.3          # coloured, not white/grey/black
    assert saturated.mean() > 0.05


def test_a_workload_where_the_cost_model_meets_no_slo_is_not_judged_by_goodput_ratio():
    """The Azure trace: every policy misses its TTFT SLO, goodput is a few stray tokens, and a
    ratio of two of them (2.7x once) must not become the headline maximum."""
    from agents.evaluate import summarize

    def cell(goodput: float, attainment: float) -> dict:
        return {"goodput": {"mean": goodput, "per_seed": [goodput, goodput]},
                "slo_attainment": {"mean": attainment}}

    workloads = {"busy": {"learned": cell(10.0, 0.9), "cost-model": cell(9.0, 0.9)},
                 "hopeless": {"learned": cell(0.3, 0.01), "cost-model": cell(0.1, 0.01)}}
    summary = summarize(workloads)
    assert summary["learned_x_cost_model_goodput_max"] == pytest.approx(10 / 9)
    assert summary["learned_x_cost_model_skipped"] == ["hopeless"]
    assert set(summary["learned_x_cost_model_by_workload"]) == {"busy"}
