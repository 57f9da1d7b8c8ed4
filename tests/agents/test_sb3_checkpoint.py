"""A checkpoint loads in plain stable-baselines3 and acts as the served policy does; --resume
continues from the saved observation and reward statistics."""

from __future__ import annotations

from pathlib import Path

import gymnasium
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from agents.sb3_checkpoint import (RESUME_NAME, VEC_NORMALIZE_NAME, restore_vec_normalize, save_sb3_checkpoint,
                                   write_vec_normalize_from_manifest)
from agents.scenarios import sim_env_kwargs
from env.config import resolve_path
from router.checkpoint import read_manifest
from router.learned_policy import LearnedPolicy
from train_router import TrainConfig, main


def tiny_config(tmp_path: Path, profile: str, acceptance: str, **fields) -> TrainConfig:
    return TrainConfig(**{"timesteps": 256, "n_envs": 1, "n_steps": 128, "batch_size": 64, "warm_start_steps": 128,
                          "validation_requests": 4, "eval_episodes": 0, "progress_bar": False, "workload": "sharegpt",
                          "output_dir": str(tmp_path / "router"), "runs_dir": str(tmp_path / "runs"),
                          "profile": profile, "acceptance": acceptance, **fields})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, agent_sim_files) -> Path:
    """A checkpoint directory from a tiny PPO run on the small simulator."""
    profile, acceptance = agent_sim_files
    return main(tiny_config(tmp_path_factory.mktemp("trained"), profile, acceptance))


def load_plain_sb3(checkpoint: Path, environment) -> tuple[PPO, VecNormalize]:
    """What an SB3 user writes: the zip, and the VecNormalize pickle in evaluation mode."""
    model = PPO.load(checkpoint / RESUME_NAME, device="cpu")
    vecnorm = VecNormalize.load(str(checkpoint / VEC_NORMALIZE_NAME), DummyVecEnv([lambda: environment]))
    vecnorm.training, vecnorm.norm_reward = False, False
    return model, vecnorm


def check_sb3_acts_as_served(checkpoint: Path, environment, options: dict | None = None) -> int:
    """Drive one episode with the served policy; at every step plain SB3 must choose the same
    action on the same raw observation. Returns the number of steps."""
    inner = environment.unwrapped
    served = LearnedPolicy.load(checkpoint, obs_spec_version=inner.obs_spec.version, obs_names=inner.obs_spec.names,
                                actions=inner.decisions)
    model, vecnorm = load_plain_sb3(checkpoint, environment)
    obs, _ = environment.reset(seed=0, options=options)
    num_steps, done = 0, False
    while not done:
        action = served.act(obs)
        predicted, _ = model.predict(vecnorm.normalize_obs(obs), deterministic=True)
        assert int(predicted) == action, f"step {num_steps}: SB3 chose {int(predicted)}, the served policy {action}"
        obs, _, terminated, truncated, _ = environment.step(action)
        num_steps, done = num_steps + 1, terminated or truncated
    return num_steps


def test_plain_sb3_with_vecnormalize_acts_as_the_served_policy(trained, make_sim_env):
    assert check_sb3_acts_as_served(trained, make_sim_env(num_requests=32)) > 20


def test_the_shipped_checkpoint_acts_the_same_in_plain_sb3():
    environment = gymnasium.make("SpecRoute-v0", **sim_env_kwargs())
    workload = {"name": "sharegpt", "num_requests": 12, "rate": 8.0, "max_new_tokens": 32}
    try:
        assert check_sb3_acts_as_served(resolve_path("checkpoints/router"), environment, {"workload": workload}) > 20
    finally:
        environment.close()


def test_resume_restores_observation_and_reward_statistics(trained, agent_sim_files, make_sim_env, tmp_path):
    saved = VecNormalize.load(str(trained / VEC_NORMALIZE_NAME), DummyVecEnv([make_sim_env]))
    assert saved.ret_rms.count > 100 and saved.ret_rms.var.item() != 1.0   # reward statistics were saved

    restored = restore_vec_normalize(trained / RESUME_NAME, DummyVecEnv([make_sim_env]), gamma=0.5)
    assert restored.training and restored.norm_reward and restored.gamma == saved.gamma == 0.8
    for name in ("obs_rms", "ret_rms"):
        np.testing.assert_array_equal(getattr(restored, name).mean, getattr(saved, name).mean)
        np.testing.assert_array_equal(getattr(restored, name).var, getattr(saved, name).var)
        assert getattr(restored, name).count == getattr(saved, name).count

    profile, acceptance = agent_sim_files
    out = main(tiny_config(tmp_path, profile, acceptance, timesteps=128, select_best=False,
                           resume=str(trained / RESUME_NAME)))
    resumed = VecNormalize.load(str(out / VEC_NORMALIZE_NAME), DummyVecEnv([make_sim_env]))
    assert resumed.ret_rms.count == pytest.approx(saved.ret_rms.count + 128)   # continued, not restarted
    assert resumed.obs_rms.count == pytest.approx(saved.obs_rms.count + 1 + 128)   # + the first reset's


def test_a_large_zip_moves_to_the_runs_dir_with_its_statistics(trained, make_sim_env, tmp_path):
    model, vecnorm = load_plain_sb3(trained, make_sim_env())
    out, runs = tmp_path / "router", tmp_path / "runs"
    out.mkdir()
    (out / VEC_NORMALIZE_NAME).write_bytes(b"stale")
    zip_path = save_sb3_checkpoint(model, vecnorm, out, runs, max_zip_bytes=1)
    assert zip_path == runs / RESUME_NAME and (runs / VEC_NORMALIZE_NAME).is_file()
    assert sorted(p.name for p in out.iterdir()) == []


def test_a_checkpoint_without_the_pickle_gets_one_from_its_manifest(trained, make_sim_env, tmp_path):
    for name in ("manifest.json", "policy.safetensors", RESUME_NAME):
        (tmp_path / name).write_bytes((trained / name).read_bytes())
    normalization = read_manifest(tmp_path).normalization
    restored = restore_vec_normalize(tmp_path / RESUME_NAME, DummyVecEnv([make_sim_env]), gamma=0.8)
    np.testing.assert_allclose(restored.obs_rms.var, normalization["var"])
    assert restored.ret_rms.count < 1   # the manifest holds no reward statistics: they start fresh

    write_vec_normalize_from_manifest(tmp_path)
    _, vecnorm = load_plain_sb3(tmp_path, make_sim_env())
    np.testing.assert_allclose(vecnorm.obs_rms.mean, normalization["mean"])
    assert vecnorm.clip_obs == normalization["clip"] and vecnorm.gamma == 0.8
    assert check_sb3_acts_as_served(tmp_path, make_sim_env(num_requests=32)) > 20
