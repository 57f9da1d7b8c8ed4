"""Off-policy estimators of a router's value from decision logs: IPS, SNIPS, DR and FQE.

The estimand is the router's *reward per decision*: the mean step reward (goodput minus SLO
penalty) a target policy pi would earn, estimated from steps logged under a behaviour policy mu
that recorded its propensities mu(a|s).

- IPS   mean(rho * r), rho = pi(a|s) / mu(a|s)                       (unbiased, high variance)
- SNIPS sum(rho * r) / sum(rho)                                      (self-normalised, small bias)
- DR    mean(sum_a pi(a|s) q(s,a) + rho * (r - q(s,a)))              (per-decision doubly robust;
        q is a ridge reward model, unbiased when either q or mu is right)
- FQE   fitted Q evaluation with discount gamma over ridge features; the value is the
        discounted reward per discounted step from the logged states, sum pi*Q_r / sum pi*Q_1,
        so it also accounts for the states pi itself would lead to over ~1/(1-gamma) steps.

IPS, SNIPS and DR treat each decision as a contextual bandit: they reweight the action, not the
state distribution. Confidence intervals come from a bootstrap over whole episodes, since steps
within an episode are correlated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ESTIMATORS = ("ips", "snips", "dr", "fqe")


@dataclass
class LoggedSteps:
    """Decision logs as arrays. Shapes: obs/next_obs [n, d]; the rest [n]; episode ids are ints."""

    obs: np.ndarray
    actions: np.ndarray
    propensities: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    dones: np.ndarray
    episodes: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.actions)
        if n == 0:
            raise ValueError("no logged steps")
        for name in ("obs", "next_obs"):
            if getattr(self, name).shape[0] != n or getattr(self, name).ndim != 2:
                raise ValueError(f"{name} must have shape [{n}, d]")
        for name in ("propensities", "rewards", "dones", "episodes"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape [{n}]")
        if not ((self.propensities > 0) & (self.propensities <= 1)).all():
            raise ValueError("propensities must be in (0, 1]")

    @classmethod
    def from_rows(cls, rows) -> "LoggedSteps":
        episodes = {key: i for i, key in enumerate(dict.fromkeys(str(r.episode) for r in rows))}
        return cls(
            obs=np.asarray([r.obs for r in rows], dtype=np.float64),
            actions=np.asarray([r.action for r in rows], dtype=np.int64),
            propensities=np.asarray([r.propensity for r in rows], dtype=np.float64),
            rewards=np.asarray([r.reward for r in rows], dtype=np.float64),
            next_obs=np.asarray([r.next_obs for r in rows], dtype=np.float64),
            dones=np.asarray([r.done for r in rows], dtype=bool),
            episodes=np.asarray([episodes[str(r.episode)] for r in rows], dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.actions)


@dataclass
class OPEConfig:
    """gamma: FQE discount; ridge: L2 penalty; fqe_iterations: 0 picks 5 / (1 - gamma) (gamma^n < 1%);
    bootstrap: resamples for the intervals; seed: bootstrap RNG seed."""

    gamma: float = 0.9
    ridge: float = 1.0
    fqe_iterations: int = 0
    bootstrap: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        if self.ridge <= 0:
            raise ValueError("ridge must be > 0")
        if self.bootstrap < 0 or self.fqe_iterations < 0:
            raise ValueError("bootstrap and fqe_iterations must be >= 0")

    @property
    def num_fqe_iterations(self) -> int:
        return self.fqe_iterations or int(np.ceil(5.0 / (1.0 - self.gamma)))


class ActionFeatures:
    """phi(s, a): per-action block of [1, s, s^2] over standardised observations.

    Precomputes, for the logged steps, the features FQE needs under the target policy:
    psi_next = sum_a pi(a|s') phi(s', a) and psi_now = sum_a pi(a|s) phi(s, a), both [n, A*block].
    """

    def __init__(self, data: LoggedSteps, pi: np.ndarray, pi_next: np.ndarray):
        self.mean = data.obs.mean(axis=0)
        self.std = data.obs.std(axis=0) + 1e-6
        self.num_actions = pi.shape[1]
        self.block = 1 + 2 * data.obs.shape[1]
        self.phi = self.state(data.obs)                                               # [n, block]
        self.psi_next = self._mix(pi_next, self.state(data.next_obs))                 # [n, A*block]
        self.psi_now = self._mix(pi, self.phi)                                        # [n, A*block]

    def state(self, obs: np.ndarray) -> np.ndarray:
        z = np.clip((obs - self.mean) / self.std, -10.0, 10.0)
        return np.concatenate([np.ones((len(obs), 1)), z, z * z], axis=1)     # [n, block]

    @staticmethod
    def _mix(probs: np.ndarray, state_feats: np.ndarray) -> np.ndarray:
        return (probs[:, :, None] * state_feats[:, None, :]).reshape(len(probs), -1)

    @property
    def dim(self) -> int:
        return self.block * self.num_actions


def _ridge_maps(features: ActionFeatures, actions: np.ndarray, weights: np.ndarray, ridge: float):
    """Per action a: (rows of a, G_a^-1 X_a^T W_a), the weighted ridge map from targets to weights."""
    maps = []
    for a in range(features.num_actions):
        rows = np.flatnonzero(actions == a)
        x = features.phi[rows]                                                        # [n_a, block]
        xw = x * weights[rows, None]
        gram = x.T @ xw + ridge * np.eye(features.block)
        maps.append((rows, np.linalg.solve(gram, xw.T)))                               # [block, n_a]
    return maps


def estimate_all(data: LoggedSteps, pi: np.ndarray, pi_next: np.ndarray, config: OPEConfig,
                 sample_weights: np.ndarray | None = None, features: ActionFeatures | None = None) -> dict[str, float]:
    """Point estimates of every estimator. pi / pi_next: target probabilities [n, A] at obs / next_obs.

    `sample_weights` (bootstrap counts per step) reweight every mean and every regression.
    """
    n, num_actions = pi.shape
    w = np.ones(n) if sample_weights is None else sample_weights.astype(np.float64)
    total = w.sum()
    features = features or ActionFeatures(data, pi, pi_next)
    rho = pi[np.arange(n), data.actions] / data.propensities
    r = data.rewards
    ips = float((w * rho * r).sum() / total)
    snips = float((w * rho * r).sum() / max((w * rho).sum(), 1e-12))

    maps = _ridge_maps(features, data.actions, w, config.ridge)
    reward_weights = np.stack([m @ r[rows] for rows, m in maps])                      # [A, block]
    q_reward = features.phi @ reward_weights.T                                        # [n, A]
    q_taken = q_reward[np.arange(n), data.actions]
    dr_terms = (pi * q_reward).sum(axis=1) + rho * (r - q_taken)
    dr = float((w * dr_terms).sum() / total)

    # FQE: Q(s, a) = phi(s) . theta_a, refitted to r + gamma * V(s') for two value columns at
    # once: discounted reward-to-go and discounted step count. Bootstrapped values are clipped to
    # what any policy could reach, which keeps off-policy linear FQE from diverging.
    targets = np.stack([r, np.ones(n)], axis=1)                                       # [n, 2]
    cont = config.gamma * (~data.dones).astype(np.float64)[:, None]
    horizon = 1.0 / (1.0 - config.gamma)
    low = np.array([min(r.min(), 0.0) * horizon, 0.0])
    high = np.array([max(r.max(), 0.0) * horizon, horizon])
    theta = np.zeros((features.dim, 2))
    for _ in range(config.num_fqe_iterations):
        v_next = np.clip(features.psi_next @ theta, low, high)                        # [n, 2]
        y = targets + cont * v_next
        theta = np.concatenate([m @ y[rows] for rows, m in maps])                     # [A*block, 2]
    v_now = (w @ features.psi_now) @ theta                                           # [2]
    fqe = float(v_now[0] / max(v_now[1], 1e-12))
    return {"ips": ips, "snips": snips, "dr": dr, "fqe": fqe}


@dataclass
class Estimate:
    value: float
    low: float
    high: float

    def to_json(self) -> dict:
        return {"value": self.value, "ci95": [self.low, self.high]}


def evaluate_off_policy(data: LoggedSteps, pi: np.ndarray, pi_next: np.ndarray,
                        config: OPEConfig | None = None) -> dict[str, Estimate]:
    """Every estimator with a 95% percentile interval from an episode bootstrap."""
    config = config or OPEConfig()
    if pi.shape != (len(data), pi.shape[1]) or pi_next.shape != pi.shape:
        raise ValueError("pi and pi_next must have shape [n, num_actions]")
    if data.actions.max() >= pi.shape[1]:
        raise ValueError(f"logged action {data.actions.max()} is outside the target's {pi.shape[1]} actions")
    features = ActionFeatures(data, pi, pi_next)
    point = estimate_all(data, pi, pi_next, config, features=features)
    rng = np.random.default_rng(config.seed)
    episodes = np.unique(data.episodes)
    position = np.searchsorted(episodes, data.episodes)
    samples = {name: [] for name in ESTIMATORS}
    for _ in range(config.bootstrap):
        counts = np.bincount(rng.integers(0, len(episodes), len(episodes)), minlength=len(episodes))
        step_weights = counts[position]
        if step_weights.sum() == 0:
            continue
        for name, value in estimate_all(data, pi, pi_next, config, step_weights, features).items():
            samples[name].append(value)
    out = {}
    for name in ESTIMATORS:
        values = np.asarray(samples[name])
        low, high = (np.percentile(values, [2.5, 97.5]) if len(values) else (np.nan, np.nan))
        out[name] = Estimate(point[name], float(low), float(high))
    return out


def effective_sample_size(data: LoggedSteps, pi: np.ndarray) -> float:
    """Kish effective sample size of the importance weights (how many logged steps really count)."""
    rho = pi[np.arange(len(data)), data.actions] / data.propensities
    return float(rho.sum() ** 2 / max((rho * rho).sum(), 1e-12))
