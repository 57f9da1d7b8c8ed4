"""Every baseline runs whole episodes of the simulator; the oracle looks ahead without side effects."""

from __future__ import annotations

import numpy as np
import pytest

from agents.cost_model_policy import CostModelPolicy
from agents.policies import HindsightOraclePolicy
from agents.policy_registry import expand, make_policy
from agents.rollout import run_episode
from router.policy import Policy


def test_every_registered_baseline_finishes_an_episode(make_sim_env):
    environment = make_sim_env()
    names = expand(["cost-model", "static:*", "no-spec", "acceptance-ema", "ucb", "oracle"], environment)
    assert len(names) == 5 + len(environment.unwrapped.action_labels)
    for name in names:
        policy = make_policy(name, environment)
        assert isinstance(policy, Policy)
        result = run_episode(environment, policy, seed=3)
        assert not result.truncated and result.num_steps > 0
        assert len(result.slo_met) == 8 and result.num_tokens > 0
        assert all(0 <= a < environment.action_space.n for a in result.actions)


def test_static_policy_takes_only_its_action(make_sim_env):
    environment = make_sim_env()
    result = run_episode(environment, make_policy("static:ngram>target@k4", environment), seed=0)
    assert set(result.actions) == {environment.unwrapped.action_labels.index("ngram>target@k4")}


def test_cost_model_policy_plain_under_load_and_speculates_when_idle(make_sim_env):
    environment = make_sim_env()
    policy = CostModelPolicy.from_env(environment).offline()        # scores the observation alone
    names = environment.unwrapped.obs_spec.names
    obs = np.zeros(len(names), dtype=np.float32)
    obs[names.index("context_mean")] = 200.0 / environment.unwrapped.config.max_model_len
    obs[names.index("acceptance[ngram>target]")] = 0.9
    obs[names.index("acceptance[suffix>target]")] = 0.1
    obs[names.index("batch_occupancy")] = 1.0 / environment.unwrapped.config.max_num_seqs
    labels = environment.unwrapped.action_labels
    assert labels[policy.act(obs)].startswith("ngram>target")
    obs[names.index("acceptance[ngram>target]")] = 0.0
    obs[names.index("acceptance[suffix>target]")] = 0.0
    assert labels[policy.act(obs)] == "plain"


def test_oracle_lookahead_leaves_the_episode_unchanged(make_sim_env):
    """Acting through the oracle gives the same trajectory as replaying its actions directly."""
    environment = make_sim_env()
    oracle = HindsightOraclePolicy(environment, horizon=2)
    first = run_episode(environment, oracle, seed=5)
    replay = iter(first.actions)

    class Replay:
        name = "replay"

        def act(self, obs):
            return next(replay)

    second = run_episode(environment, Replay(), seed=5)
    assert second.total_reward == pytest.approx(first.total_reward)
    assert second.num_steps == first.num_steps


def test_oracle_returns_are_the_rewards_each_action_would_get(make_sim_env):
    environment = make_sim_env()
    oracle = HindsightOraclePolicy(environment, horizon=1)
    environment.reset(seed=1)
    returns = oracle.returns()
    for action in range(environment.action_space.n):
        state = environment.unwrapped.clone_state()
        _, reward, *_ = environment.step(action)
        environment.unwrapped.restore_state(state)
        assert reward == pytest.approx(returns[action])


def test_the_cost_model_policy_is_the_served_router_on_the_engines_view(make_sim_env):
    """One cost model: in the env the policy decides what `CostModelRouter` decides on the batch
    view the server would hand it (each row's own acceptance), step after step."""
    from router.cost_router import CostModelRouter
    environment = make_sim_env(num_requests=10, rate=8.0)
    policy = CostModelPolicy.from_env(environment)
    served = CostModelRouter(policy.cost_model)
    labels = environment.unwrapped.action_labels
    obs, _ = environment.reset(seed=3)
    steps = 0
    done = False
    while not done:
        action = policy.act(obs)
        view = environment.unwrapped.batch_view()
        if view.rows:
            assert labels[action] == served.decide(view)[0].label
            steps += 1
        obs, _, terminated, truncated, _ = environment.step(action)
        done = terminated or truncated
    assert steps > 10


def test_the_per_row_cost_model_gives_each_row_the_served_routers_decision(make_sim_env):
    """cost-model-rows acts with what `CostModelRouter(per_row=True)` decides for each row (a
    tuple where the rows differ), and an episode of it runs to the end on the env."""
    from router.cost_router import CostModelRouter
    environment = make_sim_env(num_requests=10, rate=8.0)
    policy = make_policy("cost-model-rows", environment)
    served = CostModelRouter(policy.cost_model, per_row=True)
    labels = environment.unwrapped.action_labels
    obs, _ = environment.reset(seed=3)
    done, steps = False, 0
    while not done:
        action = policy.act(obs)
        view = environment.unwrapped.batch_view()
        rows = [labels[a] for a in action] if isinstance(action, tuple) else [labels[action]] * len(view.rows)
        if view.rows:
            assert rows == [d.label for d in served.decide(view)]
            steps += 1
        obs, _, terminated, truncated, _ = environment.step(action)
        done = terminated or truncated
    assert steps > 10
    result = run_episode(environment, policy, seed=3)
    assert result.num_steps == len(result.actions) and 0 <= result.num_mixed_steps <= result.num_steps


def test_the_offline_cost_model_reads_a_level_s_catch_up_from_the_observation(make_sim_env):
    """A logged observation holds no cached lengths, only `catch_up[level]`: the offline cost
    model turns it back into rows lacking that many tokens, so it charges what the live one does."""
    environment = make_sim_env()
    policy = CostModelPolicy.from_env(environment).offline()
    names = environment.unwrapped.obs_spec.names
    assert "catch_up[int4]" in names
    obs = np.zeros(len(names), dtype=np.float32)
    obs[names.index("context_mean")] = 2000.0 / environment.unwrapped.config.max_model_len
    obs[names.index("batch_occupancy")] = 1.0 / environment.unwrapped.config.max_num_seqs
    obs[names.index("acceptance[int4>target]")] = 0.95
    labels = environment.unwrapped.action_labels
    assert labels[policy.act(obs)].startswith("int4>")                 # caught up: the int4 copy pays
    obs[names.index("catch_up[int4]")] = np.log1p(1999 / 256)          # its cache lacks the whole prompt
    assert not labels[policy.act(obs)].startswith("int4>")


def test_the_live_cost_model_prices_each_episode_with_that_episode_s_machine(agent_sim_files):
    """With randomised cost curves the teacher prices as a server would on that machine: with the
    engine's own profile, not the file the environment was calibrated from."""
    import gymnasium
    profile, acceptance = agent_sim_files
    environment = gymnasium.make("SpecRoute-v0", backend="sim", profile=profile, acceptance=acceptance,
                                 randomize_curve=True, workload={"name": "sharegpt", "num_requests": 4, "rate": 4.0,
                                                                 "max_new_tokens": 8})
    policy = CostModelPolicy.from_env(environment)
    for seed in range(2):
        obs, _ = environment.reset(seed=seed)
        policy.act(obs)
        assert policy.cost_model.profile is environment.unwrapped.backend.episode_profile
    environment.close()
