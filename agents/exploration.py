"""Exploring behaviour policies that know their propensities, and a logger that runs them in an env.

An exploring policy wraps any Policy and samples an action from a known distribution, so every
logged decision carries mu(a|s) for off-policy evaluation. The same rows, in the same format
(`router.decision_log`), are what the server writes.
"""

from __future__ import annotations

import numpy as np

from router.decision_log import DecisionLogRow, DecisionLogWriter


class EpsilonGreedy:
    """With probability epsilon a uniform action, else the base policy's action."""

    def __init__(self, base, num_actions: int, epsilon: float = 0.2, seed: int | None = None):
        if not 0.0 < epsilon <= 1.0:
            raise ValueError(f"epsilon must be in (0, 1] so that every action has a propensity, got {epsilon}")
        if num_actions < 1:
            raise ValueError("num_actions must be >= 1")
        self.base, self.num_actions, self.epsilon = base, num_actions, epsilon
        self.rng = np.random.default_rng(seed)
        self.name = f"eps{epsilon:g}-{getattr(base, 'name', type(base).__name__)}"

    def action_probs(self, obs) -> np.ndarray:
        probs = np.full(self.num_actions, self.epsilon / self.num_actions)
        probs[self.base.act(obs)] += 1.0 - self.epsilon
        return probs

    def act(self, obs) -> int:
        return int(self.rng.choice(self.num_actions, p=self.action_probs(obs)))

    def reset(self) -> None:
        getattr(self.base, "reset", lambda: None)()

    def observe(self, reward: float) -> None:
        getattr(self.base, "observe", lambda r: None)(reward)


class SoftmaxExploration:
    """Boltzmann exploration over a base policy's action values (logits or Q-values)."""

    def __init__(self, base, temperature: float = 1.0, min_prob: float = 1e-3, seed: int | None = None):
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        if not hasattr(base, "action_values"):
            raise ValueError("softmax exploration needs a policy with action_values(obs)")
        self.base, self.temperature, self.min_prob = base, temperature, min_prob
        self.rng = np.random.default_rng(seed)
        self.name = f"softmax{temperature:g}-{getattr(base, 'name', type(base).__name__)}"

    def action_probs(self, obs) -> np.ndarray:
        values = np.asarray(self.base.action_values(obs), dtype=np.float64) / self.temperature
        probs = np.exp(values - values.max())
        probs /= probs.sum()
        probs = np.maximum(probs, self.min_prob)       # a floor keeps importance weights bounded
        return probs / probs.sum()

    def act(self, obs) -> int:
        return int(self.rng.choice(len(self.action_probs(obs)), p=self.action_probs(obs)))

    def reset(self) -> None:
        getattr(self.base, "reset", lambda: None)()

    def observe(self, reward: float) -> None:
        getattr(self.base, "observe", lambda r: None)(reward)


def log_episodes(env, policy, writer: DecisionLogWriter, num_episodes: int, seed: int = 0,
                 policy_version: str | None = None, obs_spec_version: str | None = None) -> int:
    """Run an exploring policy for whole episodes and write one row per decision; return the rows."""
    version = policy_version or getattr(policy, "name", type(policy).__name__)
    num_rows = 0
    for episode in range(num_episodes):
        obs, _ = env.reset(seed=seed + episode)
        getattr(policy, "reset", lambda: None)()
        step, done = 0, False
        while not done:
            probs = np.asarray(policy.action_probs(obs), dtype=np.float64)
            action = int(policy.rng.choice(len(probs), p=probs / probs.sum()))
            next_obs, reward, terminated, truncated, _ = env.step(action)
            done = bool(terminated or truncated)
            getattr(policy, "observe", lambda r: None)(float(reward))
            writer.write(DecisionLogRow(
                obs=np.asarray(obs).tolist(), action=action, propensity=float(probs[action]),
                reward=float(reward), next_obs=np.asarray(next_obs).tolist(), done=done,
                policy_version=version, episode=f"{seed}-{episode}", step=step,
                action_probs=probs.tolist(), obs_spec_version=obs_spec_version))
            obs, step, num_rows = next_obs, step + 1, num_rows + 1
    return num_rows
