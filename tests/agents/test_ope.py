"""Off-policy estimators recover a known value on a synthetic contextual bandit."""

from __future__ import annotations

import numpy as np
import pytest

from agents.ope_estimators import LoggedSteps, OPEConfig, effective_sample_size, evaluate_off_policy
from router.decision_log import DecisionLogRow, DecisionLogWriter, read_decision_log

NUM_ACTIONS = 3
MEAN_REWARD = np.array([[1.0, 3.0, 2.0],     # state 0
                        [4.0, 1.0, 0.5]])    # state 1


def target_probs(states: np.ndarray) -> np.ndarray:
    """Deterministic target: action 2 in state 0, action 0 in state 1."""
    probs = np.zeros((len(states), NUM_ACTIONS))
    probs[np.arange(len(states)), np.where(states == 0, 2, 0)] = 1.0
    return probs


def make_bandit_logs(n: int = 12000, episode_len: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    states = rng.integers(0, 2, n + 1)
    mu = np.where(states[:n, None] == 0, [[0.6, 0.3, 0.1]], [[0.2, 0.4, 0.4]])     # behaviour policy
    actions = np.array([rng.choice(NUM_ACTIONS, p=p) for p in mu])
    rewards = MEAN_REWARD[states[:n], actions] + rng.normal(0.0, 1.0, n)
    obs = np.stack([states, rng.normal(size=n + 1)], axis=1).astype(float)           # state + a noise feature
    steps = np.arange(n)
    data = LoggedSteps(obs=obs[:n], actions=actions, propensities=mu[steps, actions], rewards=rewards,
                       next_obs=obs[1:], dones=(steps % episode_len) == episode_len - 1,
                       episodes=steps // episode_len)
    true_value = 0.5 * MEAN_REWARD[0, 2] + 0.5 * MEAN_REWARD[1, 0]
    return data, target_probs(states[:n]), target_probs(states[1:]), true_value


def test_estimators_recover_the_true_value_with_intervals_that_cover_it():
    data, pi, pi_next, true_value = make_bandit_logs()
    results = evaluate_off_policy(data, pi, pi_next, OPEConfig(gamma=0.9, bootstrap=40, seed=1))
    for name, estimate in results.items():
        assert abs(estimate.value - true_value) / true_value < 0.05, (name, estimate, true_value)
        assert estimate.low <= true_value <= estimate.high, (name, estimate, true_value)
        assert estimate.high - estimate.low < 0.5


def test_ips_is_far_off_for_the_behaviour_average_but_right_for_the_target():
    """The naive logged mean is biased (the logger rarely takes the best action); OPE is not."""
    data, pi, pi_next, true_value = make_bandit_logs(seed=3)
    assert abs(data.rewards.mean() - true_value) > 0.5
    results = evaluate_off_policy(data, pi, pi_next, OPEConfig(bootstrap=0))
    assert abs(results["snips"].value - true_value) < 0.15


def test_effective_sample_size_shrinks_for_an_unlikely_target():
    data, pi, _, _ = make_bandit_logs(n=4000)
    same_as_logger = np.zeros_like(pi)
    same_as_logger[np.arange(len(data)), data.actions] = 1.0
    assert effective_sample_size(data, pi) < 0.5 * len(data)
    assert effective_sample_size(data, same_as_logger) < len(data) + 1e-6


def test_bad_logs_are_refused():
    data, pi, pi_next, _ = make_bandit_logs(n=200)
    with pytest.raises(ValueError, match="outside"):
        evaluate_off_policy(data, pi[:, :2], pi_next[:, :2])
    with pytest.raises(ValueError, match="propensities"):
        LoggedSteps(obs=data.obs, actions=data.actions, propensities=np.zeros(len(data)), rewards=data.rewards,
                    next_obs=data.next_obs, dones=data.dones, episodes=data.episodes)


def test_decision_log_round_trip_and_validation(tmp_path):
    path = tmp_path / "logs" / "decisions.jsonl"
    row = DecisionLogRow(obs=[1.0, 2.0], action=1, propensity=0.5, reward=3.0, next_obs=[1.5, 2.5], done=False,
                         policy_version="eps0.2-cost", episode=7, step=0, action_probs=[0.25, 0.5, 0.25],
                         extra={"server": "a"})
    with DecisionLogWriter(path) as writer:
        writer.write(row)
        writer.write(row)
    rows = read_decision_log(path)
    assert len(rows) == 2 and rows[0] == row
    with pytest.raises(ValueError, match="propensity"):
        DecisionLogRow(obs=[1.0], action=0, propensity=0.0, reward=0.0, next_obs=[1.0], done=True,
                       policy_version="x", episode=0, step=0)
    path.write_text(path.read_text() + '{"obs": [1.0]}\n')
    with pytest.raises(ValueError, match=r"decisions.jsonl:3: .*missing"):
        read_decision_log(path)


def test_fqe_accounts_for_the_states_the_target_leads_to():
    """Action 1 moves to the rewarding state 1: per-decision reweighting misses that, FQE does not."""
    rng = np.random.default_rng(0)
    n = 6000
    states = np.zeros(n + 1, dtype=int)
    actions = rng.integers(0, 2, n)                                   # uniform logger
    for t in range(n):
        states[t + 1] = actions[t]
    rewards = np.where(states[:n] == 1, 1.0, 0.0) - 0.5 * actions
    obs = states[:, None].astype(float)
    steps = np.arange(n)
    data = LoggedSteps(obs=obs[:n], actions=actions, propensities=np.full(n, 0.5), rewards=rewards,
                       next_obs=obs[1:], dones=np.zeros(n, dtype=bool), episodes=steps // 200)
    always_one = np.tile([0.0, 1.0], (n, 1))
    results = evaluate_off_policy(data, always_one, always_one, OPEConfig(gamma=0.98, bootstrap=0))
    on_policy_value = 0.5                                              # stays in state 1, pays 0.5 per step
    assert abs(results["fqe"].value - on_policy_value) < 0.05
    assert abs(results["ips"].value - on_policy_value) > 0.3
