"""The per-row routing bound: what it compares and what it writes."""

from __future__ import annotations

import json

import gymnasium
import numpy as np

import env  # noqa: F401  (registers SpecRoute-v0)
from agents.row_routing_bound import BoundConfig, StepOutcomes, main
from agents.scenarios import sim_env_kwargs


def test_per_row_choice_never_scores_below_the_batch_choice_on_the_draws_it_chose_on():
    environment = gymnasium.make("SpecRoute-v0", **sim_env_kwargs(),
                                 workload={"name": "spec_bench", "num_requests": 12, "rate": 50.0})
    environment.reset(seed=0)
    inner = environment.unwrapped
    while len(inner.batch_view().rows) < 3:
        environment.step(0)
    outcomes = StepOutcomes(inner, draws=8, rng=np.random.default_rng(0))
    uniform, value = outcomes.best_uniform()
    assert len(set(uniform)) == 1 and value == max(outcomes.goodput([a] * len(uniform))
                                                   for a in range(len(inner.decisions)))
    per_row, row_value = outcomes.best_per_row(uniform, value)
    assert len(per_row) == len(uniform) and row_value >= value
    assert row_value == outcomes.goodput(per_row)


def test_the_bound_writes_its_summary(tmp_path):
    cfg = BoundConfig(workloads=("poisson-medium",), seeds=1, steps_per_episode=3, every=2, draws=4,
                      num_requests=10, output_dir=str(tmp_path))
    main(cfg)
    data = json.loads((tmp_path / "row_routing.json").read_text())
    summary = data["summary"]
    assert summary["num_steps"] == len(data["steps"]["poisson-medium"]) == 3
    assert set(summary["per_row_x_batch_goodput_by_workload"]) == {"poisson-medium"}
    assert 0 <= summary["share_steps_gain_over_5pct"] <= 1
    assert "| poisson-medium | 3 |" in (tmp_path / "row_routing.md").read_text()
