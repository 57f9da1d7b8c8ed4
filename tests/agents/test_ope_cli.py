"""Logging with known propensities in the simulator, then `python -m agents.ope` on the log."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.exploration import EpsilonGreedy, SoftmaxExploration, log_episodes
from agents.ope import OPECliConfig, main
from agents.policies import StaticPolicy
from cli.dataclass_args import parse_dataclass
from router.decision_log import DecisionLogWriter, read_decision_log


def test_epsilon_greedy_logs_propensities_that_match_its_sampling(make_sim_env, tmp_path):
    environment = make_sim_env()
    decisions = environment.unwrapped.decisions
    behaviour = EpsilonGreedy(StaticPolicy(decisions, "plain"), len(decisions), epsilon=0.4, seed=0)
    with DecisionLogWriter(tmp_path / "log.jsonl") as writer:
        num_rows = log_episodes(environment, behaviour, writer, num_episodes=3, seed=0)
    rows = read_decision_log(tmp_path / "log.jsonl")
    assert len(rows) == num_rows > 50
    greedy = 1 - 0.4 + 0.4 / len(decisions)
    assert {round(r.propensity, 6) for r in rows} <= {round(greedy, 6), round(0.4 / len(decisions), 6)}
    assert abs(np.mean([r.action == 0 for r in rows]) - greedy) < 0.1
    assert sum(r.done for r in rows) == 3
    assert [r.step for r in rows[:3]] == [0, 1, 2]
    assert rows[0].next_obs == rows[1].obs


def test_softmax_exploration_follows_the_base_values():
    class Values:
        def action_values(self, obs):
            return np.log([1.0, 2.0, 5.0])

    probs = SoftmaxExploration(Values(), temperature=1.0, min_prob=0.0).action_probs(None)
    assert probs == pytest.approx([0.125, 0.25, 0.625])
    with pytest.raises(ValueError, match="action_values"):
        SoftmaxExploration(object())


def test_ope_cli_estimates_a_static_target_from_exploring_logs(make_sim_env, agent_sim_files, tmp_path, capsys):
    environment = make_sim_env()
    decisions = environment.unwrapped.decisions
    behaviour = EpsilonGreedy(StaticPolicy(decisions, "plain"), len(decisions), epsilon=0.5, seed=1)
    logs = tmp_path / "log.jsonl"
    with DecisionLogWriter(logs) as writer:
        log_episodes(environment, behaviour, writer, num_episodes=6, seed=0)
    profile, acceptance = agent_sim_files
    out = tmp_path / "ope.json"
    cfg = parse_dataclass(OPECliConfig, [str(logs), "--policy", "static:ngram>target@k2", "--bootstrap", "20",
                                         "--profile", profile, "--acceptance", acceptance, "--output-json", str(out)],
                          positional=("logs",))
    report = main(cfg)
    printed = capsys.readouterr().out
    for name in ("ips", "snips", "dr", "fqe"):
        assert name in printed
        estimate = report["estimates"][name]
        assert np.isfinite(estimate["value"]) and estimate["ci95"][0] <= estimate["ci95"][1]
    assert json.loads(out.read_text())["num_steps"] == report["num_steps"]
    assert report["effective_sample_size"] < report["num_steps"]


def test_ope_cli_refuses_history_dependent_targets():
    with pytest.raises(ValueError, match="offline"):
        OPECliConfig(logs="x.jsonl", policy="ucb")
