"""The evaluation summary `python -m train_router` writes into the exported policy's manifest."""

from __future__ import annotations

import gymnasium
import numpy as np

import env  # noqa: F401  (registers SpecRoute-v0)
from agents.cost_model_policy import CostModelPolicy
from agents.policies import NoSpeculationPolicy
from agents.rollout import run_episode
from agents.scenarios import evaluation_workloads
from router.learned_policy import LearnedPolicy


class ServedLearnedPolicy:
    """The learned policy as the server runs it (serving.router): on an observation outside its
    training range it falls back to `fallback` (the cost model); `fallback_share` is how often."""

    def __init__(self, learned: LearnedPolicy, fallback):
        self.learned, self.fallback = learned, fallback
        self.name = learned.name
        self.num_decisions = self.num_fallbacks = 0

    @property
    def fallback_share(self) -> float:
        return self.num_fallbacks / max(self.num_decisions, 1)

    def reset(self) -> None:
        self.num_decisions = self.num_fallbacks = 0
        getattr(self.fallback, "reset", lambda: None)()

    def observe(self, reward: float) -> None:
        getattr(self.fallback, "observe", lambda r: None)(reward)

    def act(self, obs):
        self.num_decisions += 1
        if self.learned.out_of_range(obs):
            self.num_fallbacks += 1
            return self.fallback.act(obs)
        return self.learned.act(obs)


def summarize_policy(learned: LearnedPolicy, env_kwargs: dict, episodes: int) -> dict:
    """Mean reward per decision, goodput and SLO attainment of the trained policy (served: with its
    out-of-range fallback, whose share is reported) vs the cost model and no speculation, over
    `episodes` seeds of every evaluation workload (none: {})."""
    if episodes == 0:
        return {}
    kwargs = {k: v for k, v in env_kwargs.items() if k != "workload"}
    evaluation = gymnasium.make("SpecRoute-v0", **kwargs)
    inner = evaluation.unwrapped
    cost_model = CostModelPolicy.from_env(evaluation)
    served = ServedLearnedPolicy(learned, cost_model)
    policies = {"learned": served, "cost-model": cost_model, "no-spec": NoSpeculationPolicy(inner.decisions)}
    summary: dict = {"episodes_per_workload": episodes, "seeds_from": 10_000, "workloads": {}}
    for name, workload in evaluation_workloads(kwargs).items():
        rows = {}
        for label, policy in policies.items():
            results, shares = [], []
            for i in range(episodes):
                results.append(run_episode(evaluation, policy, 10_000 + i, {"workload": workload}))
                shares.append(served.fallback_share)
            rows[label] = {"mean_reward": float(np.mean([r.mean_reward for r in results])),
                           "goodput": float(np.mean([r.goodput for r in results])),
                           "slo_attainment": float(np.mean([r.slo_attainment for r in results]))}
            if policy is served:
                rows[label]["fallback_share"] = float(np.mean(shares))
        summary["workloads"][name] = rows
    summary["fallback_share_max"] = max((r["learned"]["fallback_share"] for r in summary["workloads"].values()),
                                        default=0.0)
    evaluation.close()
    return summary
