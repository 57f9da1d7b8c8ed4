"""SpecRoute-v0 follows Gymnasium's API on both backends, and bad configuration fails clearly."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from engine import Engine, EngineConfig
import env as specroute_env
from env import EnvConfigError, SpecRouteEnv
from router.observation import OBS_SPEC_VERSION

TINY_WORKLOAD = {"name": "sharegpt", "num_requests": 3, "rate": 20.0, "max_new_tokens": 6, "max_prompt_tokens": 24}


@pytest.fixture
def tiny_engine_factory(target, tokenizer, drafts):
    def build() -> Engine:
        return Engine(target, tokenizer, EngineConfig(max_model_len=128, max_num_tokens=4096, quantized_levels="int4"),
                      drafts=drafts)
    return build


def test_import_registers_the_id():
    assert specroute_env.ENV_ID == "SpecRoute-v0"
    assert "SpecRoute-v0" in gymnasium.registry


def test_check_env_passes_on_the_sim_backend(sim_kwargs):
    env = gymnasium.make("SpecRoute-v0", **sim_kwargs)
    check_env(env.unwrapped)
    env.close()


def test_check_env_passes_on_the_real_backend_with_tiny_models(tiny_engine_factory):
    env = gymnasium.make("SpecRoute-v0", backend="real", workload=TINY_WORKLOAD, max_model_len=128,
                         engine_factory=tiny_engine_factory,
                         actions=["plain", "ngram>target@4", "draft>target@3", "ngram>small>target@2"])
    assert env.spec.nondeterministic            # wall-clock latencies
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=1)
    done, steps = False, 0
    while not done:
        obs, reward, terminated, truncated, info = env.step(steps % 4)
        assert env.observation_space.contains(obs) and np.isfinite(reward)
        done, steps = terminated or truncated, steps + 1
    assert terminated and info["time_s"] > 0
    requests = env.unwrapped._episode.requests.values()
    assert len(requests) == 3 and all(len(r.output_token_ids) == 6 for r in requests)
    env.close()


def test_observation_spec_names_ranges_and_version(sim_kwargs):
    env = SpecRouteEnv(**sim_kwargs, actions=["plain", "ngram>target@4", "ngram>draft>target@2"])
    spec = env.obs_spec
    assert spec.version == OBS_SPEC_VERSION
    assert spec.names[:3] == ["batch_occupancy", "queue_batches", "arrivals_per_step"]
    assert spec.listed("verify_cost") == ["2", "4"] and spec.listed("draft_cost") == ["draft"]
    assert "acceptance[ngram>target]" in spec.names and "acceptance[draft>target]" in spec.names
    assert spec.names[-3:] == ["last_action[plain]", "last_action[ngram>target@k4]",
                               "last_action[ngram>draft>target@k2]"]
    assert env.observation_space.shape == (len(spec.names),)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(1)
    assert obs[spec.names.index("last_action[ngram>target@k4]")] == 1.0
    assert obs[spec.names.index("batch_occupancy")] * env.config.max_num_seqs >= 1
    assert obs[spec.names.index("verify_cost[4]")] >= obs[spec.names.index("verify_cost[2]")] >= 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"workload": "no-such-workload"}, "unknown workload"),
    ({"workload": {"name": "sharegpt", "rate": 0.0}}, "rate must be a finite number > 0"),
    ({"workload": {"name": "sharegpt", "rate": -2}}, "rate must be a finite number > 0"),
    ({"backend": "gpu"}, "unknown backend"),
    ({"actions": ["ngram>target@x"]}, "must be 'plain' or levels"),
    ({"actions": ["plain", "plain"]}, "repeat"),
    ({"actions": ["medusa>target@4"]}, r"profile .* has no levels \['medusa'\]"),
    ({"actions": ["suffix>draft>target@4"]}, "no data for 'suffix>draft'"),
    ({"slo_tpot_s": 0}, "slo_tpot_s must be a finite number > 0"),
    ({"max_steps": 0}, "max_steps must be an integer > 0"),
    ({"colour": "red"}, "unknown SpecRoute-v0 arguments"),
    ({"render_mode": "human"}, "does not render"),
])
def test_bad_configuration_raises_a_gymnasium_error(sim_kwargs, kwargs, message):
    with pytest.raises(EnvConfigError, match=message) as caught:
        gymnasium.make("SpecRoute-v0", **{**sim_kwargs, **kwargs})
    assert isinstance(caught.value, gymnasium.error.Error) and isinstance(caught.value, ValueError)


def test_real_backend_rejects_a_drafter_the_engine_lacks(tiny_engine_factory):
    with pytest.raises(EnvConfigError, match="unknown drafter 'medusa'"):
        SpecRouteEnv(backend="real", engine_factory=tiny_engine_factory, max_model_len=128,
                     workload=TINY_WORKLOAD, actions=["plain", "medusa>target@2"])


def test_missing_sim_files_say_how_to_make_them(tmp_path):
    with pytest.raises(EnvConfigError, match="does not exist"):
        SpecRouteEnv(backend="sim", profile=str(tmp_path / "none.json"))


def test_actions_outside_the_space_raise_invalid_action(sim_kwargs):
    env = SpecRouteEnv(**sim_kwargs)
    env.reset(seed=0)
    for bad in (env.action_space.n, -1, 1.5, "plain"):
        with pytest.raises(gymnasium.error.InvalidAction, match="is not in Discrete"):
            env.step(bad)


def test_step_before_reset_asks_for_reset(sim_kwargs):
    with pytest.raises(gymnasium.error.ResetNeeded):
        SpecRouteEnv(**sim_kwargs).step(0)


def test_reset_option_switches_the_workload(sim_kwargs):
    env = SpecRouteEnv(**sim_kwargs)
    _, info = env.reset(seed=0, options={"workload": {"name": "humaneval", "num_requests": 5}})
    assert info["num_requests"] == 5
    assert {r.category for r in env._episode.requests.values()} == {"humaneval"}
    with pytest.raises(EnvConfigError, match="unknown workload"):
        env.reset(options={"workload": "nope"})


def test_real_backend_cpu_clock_needs_one_thread_and_stamps_its_own_time(tiny_engine_factory):
    import torch
    kwargs = dict(backend="real", workload=TINY_WORKLOAD, max_model_len=128, engine_factory=tiny_engine_factory,
                  real_clock="cpu")
    threads = torch.get_num_threads()
    if threads != 1:
        with pytest.raises(EnvConfigError, match="one torch thread"):
            SpecRouteEnv(**kwargs)
    torch.set_num_threads(1)
    try:
        env = SpecRouteEnv(**kwargs)
        env.reset(seed=0)
        busy, done = 0.0, False
        while not done:
            _, _, terminated, truncated, info = env.step(1)
            busy, done = busy + info["latency_s"], terminated or truncated
        requests = env._episode.requests.values()
        assert 0 < busy <= env._episode.time
        assert all(r.arrival_time <= r.first_token_time <= r.finish_time <= env.backend.origin + env._episode.time
                   for r in requests)
    finally:
        torch.set_num_threads(threads)


def test_the_docstring_observation_table_and_action_list_match_the_default_configuration():
    """The class docstring is the spec a user reads first: its rows must name the default
    configuration's features, index by index, and it must list every default action."""
    import re

    from env.config import DEFAULT_ACTIONS, EnvConfig

    doc = SpecRouteEnv.__doc__
    rows = re.findall(r"^\s*\| (\d+)(?:\.\.(\d+))? \| ([^:|]+)", doc, re.M)
    config = EnvConfig()
    env = gymnasium.make("SpecRoute-v0", backend="sim")
    names = env.unwrapped.obs_spec.names
    documented = []
    for first, last, name in rows:
        count = int(last) - int(first) + 1 if last else 1
        assert int(first) == len(documented), f"row {first} out of order"
        documented += [name.strip()] * count
    assert len(documented) == len(names), f"the table documents {len(documented)} features, the spec has {len(names)}"
    for doc_name, name in zip(documented, names):
        assert name == doc_name or (doc_name == "last_action[label]" and name.startswith("last_action[")), (doc_name, name)
    assert f"{len(DEFAULT_ACTIONS)} actions" in doc and len(config.actions) == len(DEFAULT_ACTIONS)


def test_a_step_may_give_each_row_its_own_action(sim_kwargs):
    """Per-row routing: a sequence of action indices, one per row of batch_view(), runs each row
    on its own decision; a sequence of the wrong length is refused and the episode goes on."""
    env = SpecRouteEnv(**{**sim_kwargs, "workload": {**sim_kwargs["workload"], "rate": 50.0}})
    env.reset(seed=0)
    while len(env.batch_view().rows) < 2:
        env.step(0)
    num_rows = len(env.batch_view().rows)
    labels = env.action_labels
    ngram = labels.index(next(label for label in labels if label.startswith("ngram>target")))
    with pytest.raises(gymnasium.error.InvalidAction, match=f"1 per-row actions for a batch of {num_rows} rows"):
        env.step((ngram,))
    rows = tuple([0] + [ngram] * (num_rows - 1))
    _, _, _, _, info = env.step(rows)
    engine = env.backend.engine
    assert [d.label for d in engine.last_step.decisions] == [labels[a] for a in rows]
    assert info["action"] == labels[max(set(rows), key=rows.count)]
