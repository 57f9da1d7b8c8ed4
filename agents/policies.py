"""The baseline routers the learned policy is compared with.

Every router is a `router.policy.Policy`: `act(obs) -> action index` into the environment's
Discrete action list, with optional `reset()` (start of an episode) and `observe(reward)` (after each step).
Baselines read the observation by feature name (`ObservationIndex`), so they work with any
observation spec that has the features they need.

    StaticPolicy            always one (chain, K)
    NoSpeculationPolicy     always plain decoding
    AcceptanceEMAPolicy     SmartSpec-like: expected tokens from each pair's acceptance EMA over
                            a step cost that grows with batch x K; picks the best (chain, K)
    UCBPolicy               UCB1 over actions on observed step rewards (no context)
    HindsightOraclePolicy   sim only: tries every action from a cloned env state, keeps the best
    CostModelPolicy         (agents.cost_model_policy) the analytical cost model
    LearnedPolicy           (router.learned_policy) the exported network
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from engine.decision import Decision
from engine.expectation import expected_output
from router.observation import ObservationScale


class ObservationIndex:
    """Reads named features out of an observation vector; `scale` (the spec's) turns the v4
    relative features back into rows and tokens (`batch`, `context`)."""

    def __init__(self, obs_names: Sequence[str], scale: ObservationScale | None = None):
        self.names = list(obs_names)
        self.scale = scale
        self._index = {name: i for i, name in enumerate(self.names)}

    def has_batch(self) -> bool:
        return self.has("running_batch") or (self.has("batch_occupancy") and self.scale is not None)

    def batch(self, obs, default: float | None = None) -> float:
        """Running rows: v3's `running_batch`, or v4's occupancy x max_batch."""
        if self.has("running_batch") or not self.has("batch_occupancy"):
            return self.get(obs, "running_batch", default)
        if self.scale is None:
            raise KeyError("reading rows from batch_occupancy needs the observation spec's scale")
        return self.get(obs, "batch_occupancy") * self.scale.max_batch

    def context(self, obs) -> float:
        """Mean context tokens of the running rows (v4 stores a share of max_model_len)."""
        if self.has("batch_occupancy") and self.scale is not None:
            return self.get(obs, "context_mean") * self.scale.max_model_len
        return self.get(obs, "context_mean")

    def has(self, name: str) -> bool:
        return name in self._index

    def get(self, obs, name: str, default: float | None = None) -> float:
        if name not in self._index:
            if default is None:
                raise KeyError(f"observation has no feature {name!r}; it has {self.names}")
            return default
        return float(obs[self._index[name]])

    def acceptance(self, obs, decision: Decision) -> float:
        """Acceptance of the chain as one composite drafter: the product of its pairs' EMAs."""
        value = 1.0
        for below, above in zip(decision.chain, decision.chain[1:]):
            value *= self.get(obs, f"acceptance[{below}>{above}]", default=0.0)
        return value


def action_index(decisions: Sequence[Decision], decision: Decision | str) -> int:
    """Index of a decision (or its spelling, e.g. "ngram>target@k4", "plain") in the action list."""
    labels = [d.label for d in decisions]
    label = (decision if isinstance(decision, Decision) else Decision.parse(decision)).label
    if label not in labels:
        raise ValueError(f"action {label!r} is not in the action list {labels}")
    return labels.index(label)


class BasePolicy:
    """No-op reset/observe for stateless policies."""

    name = "policy"

    def reset(self) -> None:
        pass

    def observe(self, reward: float) -> None:
        pass


class StaticPolicy(BasePolicy):
    """Always the same (chain, K)."""

    def __init__(self, decisions: Sequence[Decision], decision: Decision | str):
        self.action = action_index(decisions, decision)
        self.name = f"static:{decisions[self.action].label}"

    def act(self, obs) -> int:
        return self.action


class NoSpeculationPolicy(StaticPolicy):
    """Plain decoding every step (the speed-up baseline)."""

    def __init__(self, decisions: Sequence[Decision]):
        plain = [d for d in decisions if d.is_plain]
        if not plain:
            raise ValueError("the action list has no plain-decoding action")
        super().__init__(decisions, plain[0])
        self.name = "no-spec"


class AcceptanceEMAPolicy(BasePolicy):
    """SmartSpec-like: maximise expected goodput from the acceptance EMAs in the observation.

    Goodput of (chain, K) per row ~ expected_output(a_chain, K) / (1 + token_cost * batch * K):
    verifying K extra tokens per row is nearly free at batch 1 (memory-bound) and costs more as
    the batch grows (compute-bound), which is what turns speculation down under load.
    """

    def __init__(self, decisions: Sequence[Decision], obs_names: Sequence[str], token_cost: float = 0.02,
                 scale: ObservationScale | None = None):
        if token_cost < 0:
            raise ValueError("token_cost must be >= 0")
        self.decisions = list(decisions)
        self.index = ObservationIndex(obs_names, scale)
        self.token_cost = token_cost
        self.name = "acceptance-ema"

    def scores(self, obs) -> np.ndarray:
        batch = max(self.index.batch(obs, default=1.0), 1.0)
        scores = []
        for decision in self.decisions:
            k = 0 if decision.is_plain else decision.k
            tokens = expected_output(self.index.acceptance(obs, decision), k) if k else 1.0
            scores.append(tokens / (1.0 + self.token_cost * batch * k))
        return np.asarray(scores)

    def act(self, obs) -> int:
        return int(np.argmax(self.scores(obs)))


class UCBPolicy(BasePolicy):
    """UCB1 over the actions on step rewards; rewards are scaled by their running spread."""

    def __init__(self, num_actions: int, exploration: float = 1.0, seed: int | None = None):
        if num_actions < 1 or exploration < 0:
            raise ValueError("num_actions must be >= 1 and exploration >= 0")
        self.num_actions, self.exploration = num_actions, exploration
        self.rng = np.random.default_rng(seed)
        self.name = "ucb"
        self.reset()

    def reset(self) -> None:
        self.counts = np.zeros(self.num_actions)
        self.sums = np.zeros(self.num_actions)
        self.sum_sq = 0.0
        self.total = 0
        self.last_action: int | None = None

    def act(self, obs) -> int:
        untried = np.flatnonzero(self.counts == 0)
        if len(untried):
            self.last_action = int(self.rng.choice(untried))
            return self.last_action
        means = self.sums / self.counts
        mean_all = self.sums.sum() / self.total
        spread = math.sqrt(max(self.sum_sq / self.total - mean_all ** 2, 1e-12))
        bonus = self.exploration * spread * np.sqrt(2.0 * math.log(self.total) / self.counts)
        self.last_action = int(np.argmax(means + bonus))
        return self.last_action

    def observe(self, reward: float) -> None:
        if self.last_action is None:
            return
        self.counts[self.last_action] += 1
        self.sums[self.last_action] += reward
        self.sum_sq += reward * reward
        self.total += 1


class HindsightOraclePolicy(BasePolicy):
    """Sim only: from a clone of the env's state, run each action for `horizon` steps, keep the best.

    It sees the future (the same arrivals and acceptance draws the real step will get when the
    simulator's RNG is part of the cloned state), so it is an upper reference, not a deployable router.
    """

    def __init__(self, env, horizon: int = 1):
        if horizon < 1:
            raise ValueError("horizon must be >= 1")
        self.env = env.unwrapped
        for method in ("clone_state", "restore_state"):
            if not hasattr(self.env, method):
                raise ValueError(f"the hindsight oracle needs env.unwrapped.{method}() (sim backend)")
        self.num_actions = int(env.action_space.n)
        self.horizon = horizon
        self.name = f"oracle-h{horizon}"

    def returns(self) -> np.ndarray:
        """Return over the horizon of each action, held for `horizon` steps, from the current state."""
        state = self.env.clone_state()
        totals = np.zeros(self.num_actions)
        try:
            for action in range(self.num_actions):
                if action:                      # the first action runs from the live state itself
                    self.env.restore_state(state)
                for _ in range(self.horizon):
                    _, reward, terminated, truncated, _ = self.env.step(action)
                    totals[action] += reward
                    if terminated or truncated:
                        break
        finally:
            self.env.restore_state(state)
        return totals

    def act(self, obs) -> int:
        return int(np.argmax(self.returns()))
