"""The sim env runs in stable-baselines3's SubprocVecEnv (one process per env)."""

from __future__ import annotations

import gymnasium
import numpy as np
from stable_baselines3.common.vec_env import SubprocVecEnv


def make_env(kwargs):
    def build():
        import env  # noqa: F401  (registers SpecRoute-v0 in the worker)
        return gymnasium.make("SpecRoute-v0", **kwargs)
    return build


def test_sim_env_runs_in_subproc_vec_env(sim_kwargs):
    vec = SubprocVecEnv([make_env(sim_kwargs), make_env(sim_kwargs)], start_method="fork")
    try:
        vec.seed(0)
        obs = vec.reset()
        assert obs.shape == (2, vec.observation_space.shape[0]) and obs.dtype == np.float32
        episodes_done = 0
        for step in range(400):
            obs, rewards, dones, infos = vec.step(np.array([step % 7, (step + 3) % 7]))
            assert np.isfinite(rewards).all() and all(vec.observation_space.contains(o) for o in obs)
            episodes_done += int(dones.sum())
        assert episodes_done >= 2          # workers reset themselves at episode end and go on
    finally:
        vec.close()
