"""Export -> load round trip and every way a checkpoint can be unusable."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from agents.export import export_policy
from engine.decision import Decision
from router.checkpoint import (CheckpointCorrupt, CheckpointError, CheckpointHashMismatch, CheckpointMissing,
                               CheckpointNaN, CheckpointSpecMismatch, read_manifest, sha256_of)
from router.learned_policy import LearnedPolicy

OBS_NAMES = [f"f{i}" for i in range(6)]
ACTIONS = [Decision(("target",), 0), Decision(("ngram", "target"), 2), Decision(("draft", "target"), 4)]


class BoxEnv(gym.Env):
    """A stand-in env with the router's shapes: Box observations, Discrete actions."""

    observation_space = gym.spaces.Box(-5.0, 50.0, (len(OBS_NAMES),), np.float32)
    action_space = gym.spaces.Discrete(len(ACTIONS))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), float(action), False, False, {}


def make_model(algo: str):
    venv = VecNormalize(DummyVecEnv([BoxEnv]), norm_reward=False)
    venv.obs_rms.mean = np.linspace(1.0, 20.0, len(OBS_NAMES))
    venv.obs_rms.var = np.linspace(0.5, 40.0, len(OBS_NAMES))
    cls = {"ppo": PPO, "dqn": DQN}[algo]
    return cls("MlpPolicy", venv, seed=0, policy_kwargs={"net_arch": [32, 32]}), venv


def export(model, venv, directory):
    return export_policy(model, directory, obs_spec_version="test-1", obs_names=OBS_NAMES, actions=ACTIONS,
                         obs_min=[-5.0] * 6, obs_max=[50.0] * 6, vec_normalize=venv,
                         training={"algo": "test"}, evaluation={"goodput": 1.0})


@pytest.fixture
def checkpoint(tmp_path):
    model, venv = make_model("ppo")
    export(model, venv, tmp_path)
    return tmp_path


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_exported_policy_acts_like_the_sb3_policy(tmp_path, algo):
    model, venv = make_model(algo)
    export(model, venv, tmp_path)
    policy = LearnedPolicy.load(tmp_path, obs_spec_version="test-1", obs_names=OBS_NAMES, actions=ACTIONS)
    rng = np.random.default_rng(0)
    raw = rng.uniform(-5.0, 50.0, (500, len(OBS_NAMES))).astype(np.float32)
    expected, _ = model.predict(venv.normalize_obs(raw), deterministic=True)
    got = [policy.act(row) for row in raw]
    assert got == list(expected)
    assert len(set(got)) > 1, "random observations should reach more than one action"
    assert [d.label for d in policy.decisions()] == [d.label for d in ACTIONS]


def test_manifest_records_what_the_server_needs(checkpoint):
    data = json.loads((checkpoint / "manifest.json").read_text())
    assert data["obs_spec"] == {"version": "test-1", "names": OBS_NAMES}
    assert [a["k"] for a in data["actions"]] == [0, 2, 4]
    assert data["sha256"] == sha256_of((checkpoint / "policy.safetensors").read_bytes())
    assert len(data["normalization"]["mean"]) == len(OBS_NAMES)
    assert data["training"] == {"algo": "test"} and data["evaluation"] == {"goodput": 1.0}


def test_in_range_flags_features_outside_training_range(checkpoint):
    policy = LearnedPolicy.load(checkpoint)
    obs = np.full(len(OBS_NAMES), 10.0, np.float32)
    assert policy.in_range(obs)
    obs[2] = 80.0
    assert not policy.in_range(obs) and policy.out_of_range(obs) == ["f2"]
    assert policy.in_range(obs, margin=1.0)
    obs[4] = np.nan
    assert "f4" in policy.out_of_range(obs, margin=1.0)


def test_bad_observation_raises_value_error(checkpoint):
    policy = LearnedPolicy.load(checkpoint)
    with pytest.raises(ValueError, match="shape"):
        policy.act(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        policy.act(np.full(len(OBS_NAMES), np.nan))


def test_missing_checkpoint(tmp_path, checkpoint):
    with pytest.raises(CheckpointMissing):
        LearnedPolicy.load(tmp_path / "nowhere")
    (checkpoint / "policy.safetensors").unlink()
    with pytest.raises(CheckpointMissing):
        LearnedPolicy.load(checkpoint)


def test_truncated_weights_are_corrupt(checkpoint):
    weights = checkpoint / "policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointCorrupt, match="truncated"):
        LearnedPolicy.load(checkpoint)


def test_truncated_manifest_is_corrupt(checkpoint):
    manifest = checkpoint / "manifest.json"
    manifest.write_text(manifest.read_text()[:200])
    with pytest.raises(CheckpointCorrupt):
        LearnedPolicy.load(checkpoint)


def test_unparseable_weights_with_matching_hash_are_corrupt(checkpoint):
    garbage = b"\x00" * 64
    rewrite_manifest(checkpoint, sha256=sha256_of(garbage), weights_bytes=len(garbage))
    (checkpoint / "policy.safetensors").write_bytes(garbage)
    with pytest.raises(CheckpointCorrupt, match="safetensors"):
        LearnedPolicy.load(checkpoint)


def test_changed_weights_fail_the_hash(checkpoint):
    weights = checkpoint / "policy.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointHashMismatch):
        LearnedPolicy.load(checkpoint)


def test_nan_weights_are_refused_even_with_a_valid_hash(checkpoint):
    weights = checkpoint / "policy.safetensors"
    tensors = load_file(weights)
    tensors["layers.0.weight"][0, 0] = np.nan
    save_file(tensors, weights)
    data = weights.read_bytes()
    rewrite_manifest(checkpoint, sha256=sha256_of(data), weights_bytes=len(data))
    with pytest.raises(CheckpointNaN):
        LearnedPolicy.load(checkpoint)


def test_nan_normalisation_is_refused(checkpoint):
    data = json.loads((checkpoint / "manifest.json").read_text())
    data["normalization"]["var"][1] = float("nan")
    (checkpoint / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointNaN):
        LearnedPolicy.load(checkpoint)


def test_other_spec_is_refused(checkpoint):
    with pytest.raises(CheckpointSpecMismatch, match="spec"):
        LearnedPolicy.load(checkpoint, obs_spec_version="test-2")
    with pytest.raises(CheckpointSpecMismatch):
        LearnedPolicy.load(checkpoint, obs_names=OBS_NAMES[::-1])
    with pytest.raises(CheckpointSpecMismatch, match="actions"):
        LearnedPolicy.load(checkpoint, actions=ACTIONS[:2])
    rewrite_manifest(checkpoint, format_version=99)
    with pytest.raises(CheckpointSpecMismatch, match="format"):
        LearnedPolicy.load(checkpoint)


def test_every_error_is_a_checkpoint_error():
    for error in (CheckpointMissing, CheckpointCorrupt, CheckpointHashMismatch, CheckpointNaN,
                  CheckpointSpecMismatch):
        assert issubclass(error, CheckpointError)


def test_export_refuses_nan_weights(tmp_path):
    model, venv = make_model("ppo")
    model.policy.action_net.weight.data[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        export(model, venv, tmp_path)


def rewrite_manifest(directory, **fields):
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def test_every_checkpoint_error_names_its_cause():
    causes = {error.cause for error in (CheckpointMissing, CheckpointCorrupt, CheckpointHashMismatch, CheckpointNaN,
                                        CheckpointSpecMismatch)}
    assert causes == {"checkpoint_missing", "checkpoint_corrupt", "checkpoint_hash", "checkpoint_nan",
                      "checkpoint_spec"}
    assert CheckpointError.cause == "checkpoint_corrupt"


def test_the_shipped_router_checkpoint_loads_with_the_served_observation_spec():
    """The server derives the spec from its own settings (RouterConfig), not the environment's:
    the shipped policy must still find its layout there, and act on it. A checkpoint trained on
    an older spec (the shipped one until it is retrained) is refused as a spec mismatch, which
    the server turns into a fallback with one warning (tests/serving/test_router.py)."""
    from env.config import resolve_path
    from router.config import RouterConfig
    from router.observation import observation_spec_for
    path = resolve_path("checkpoints/router")
    actions = [a.decision for a in read_manifest(path).actions]
    spec = observation_spec_for(actions, RouterConfig(max_batch=16, max_model_len=2048, slo_tpot_s=0.25,
                                                      slo_ttft_s=5.0))
    if read_manifest(path).obs_spec_version != spec.version:
        with pytest.raises(CheckpointSpecMismatch, match=f"the environment uses '{spec.version}'"):
            LearnedPolicy.load(path, obs_spec_version=spec.version, obs_names=spec.names, actions=actions)
        return
    policy = LearnedPolicy.load(path, obs_spec_version=spec.version, obs_names=spec.names, actions=actions)
    assert policy.decisions() == actions and [str(d) for d in actions] == [a.label for a in policy.manifest.actions]
    assert 0 <= policy.act(np.clip(np.zeros(len(spec.names), np.float32), spec.low, spec.high)) < len(actions)
