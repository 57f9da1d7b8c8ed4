"""Warm start for PPO: clone a teacher router (the cost model) before reinforcement learning.

The teacher drives the training environments (with epsilon-random actions, so the states off
its path are seen too) while we record the raw observations, the teacher's choice at each, the
rewards and episode ends. Then the actor is trained to imitate the teacher (cross-entropy) and
the critic to predict the discounted return (MSE), both on observations and rewards normalised
with the VecNormalize statistics gathered on the way. PPO then starts from a policy about as good
as the teacher and a critic that already knows the scale of returns, instead of from random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class WarmStartResult:
    num_steps: int
    imitation_accuracy: float
    value_explained_variance: float
    obs_low: np.ndarray
    obs_high: np.ndarray


def collect(venv, teachers: list, num_steps: int, epsilon: float, rng: np.random.Generator):
    """Roll the teachers (one per env) through `venv`; returns raw obs, teacher actions, rewards, dones."""
    num_envs = venv.num_envs
    num_actions = int(venv.action_space.n)
    venv.reset()
    raw_obs, labels, rewards, dones = [], [], [], []
    for _ in range(max(1, num_steps // num_envs)):
        raw = venv.get_original_obs() if hasattr(venv, "get_original_obs") else venv.buf_obs[None]
        teacher = np.array([t.act(o) for t, o in zip(teachers, raw)])
        explore = rng.random(num_envs) < epsilon
        actions = np.where(explore, rng.integers(0, num_actions, num_envs), teacher)
        _, _, done, _ = venv.step(actions)
        raw_obs.append(np.array(raw))
        labels.append(teacher)
        rewards.append(venv.get_original_reward() if hasattr(venv, "get_original_reward") else np.zeros(num_envs))
        dones.append(done)
    return (np.stack(raw_obs), np.stack(labels), np.stack(rewards), np.stack(dones))   # [T, n_envs, ...]


def discounted_returns(rewards: np.ndarray, dones: np.ndarray, gamma: float) -> np.ndarray:
    """Per env, the discounted sum of future rewards up to the episode end ([T, n_envs])."""
    returns = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros(rewards.shape[1])
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running * (1.0 - dones[t])
        returns[t] = running
    return returns


def warm_start(model, venv, teachers: list, num_steps: int, gamma: float, epsilon: float = 0.2,
               epochs: int = 10, batch_size: int = 256, seed: int = 0) -> WarmStartResult:
    """Imitate `teachers` and fit the critic; `venv` is the (VecNormalize-wrapped) training env."""
    rng = np.random.default_rng(seed)
    raw_obs, labels, rewards, dones = collect(venv, teachers, num_steps, epsilon, rng)
    returns = discounted_returns(rewards, dones, gamma)
    obs = raw_obs.reshape(-1, raw_obs.shape[-1])
    if hasattr(venv, "normalize_obs"):
        obs = venv.normalize_obs(obs)
        scale = np.sqrt(venv.ret_rms.var + venv.epsilon) if venv.norm_reward else 1.0
        returns = returns / scale
    x = torch.as_tensor(obs, dtype=torch.float32)
    y = torch.as_tensor(labels.reshape(-1), dtype=torch.long)
    v = torch.as_tensor(returns.reshape(-1), dtype=torch.float32)
    policy = model.policy
    policy.set_training_mode(True)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    cross_entropy, mse = nn.CrossEntropyLoss(), nn.MSELoss()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            features = policy.extract_features(x[batch])
            latent_pi, latent_vf = policy.mlp_extractor(features)
            loss = cross_entropy(policy.action_net(latent_pi), y[batch]) \
                + 0.5 * mse(policy.value_net(latent_vf).squeeze(-1), v[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    policy.set_training_mode(False)
    with torch.no_grad():
        features = policy.extract_features(x)
        latent_pi, latent_vf = policy.mlp_extractor(features)
        accuracy = float((policy.action_net(latent_pi).argmax(-1) == y).float().mean())
        predicted = policy.value_net(latent_vf).squeeze(-1)
        explained = float(1.0 - torch.var(v - predicted) / torch.clamp(torch.var(v), min=1e-8))
    raw = raw_obs.reshape(-1, raw_obs.shape[-1])
    return WarmStartResult(len(x), accuracy, explained, raw.min(axis=0), raw.max(axis=0))
