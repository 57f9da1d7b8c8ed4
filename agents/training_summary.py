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


def summarize_policy(learned: LearnedPolicy, env_kwargs: dict, episodes: int) -> dict:
    """Mean reward per decision, goodput and SLO attainment of the trained policy vs the cost model
    and no speculation, over `episodes` seeds of every evaluation workload (none: {})."""
    if episodes == 0:
        return {}
    kwargs = {k: v for k, v in env_kwargs.items() if k != "workload"}
    evaluation = gymnasium.make("SpecRoute-v0", **kwargs)
    inner = evaluation.unwrapped
    policies = {"learned": learned, "cost-model": CostModelPolicy.from_env(evaluation),
                "no-spec": NoSpeculationPolicy(inner.decisions)}
    summary: dict = {"episodes_per_workload": episodes, "seeds_from": 10_000, "workloads": {}}
    for name, workload in evaluation_workloads(kwargs).items():
        rows = {}
        for label, policy in policies.items():
            results = [run_episode(evaluation, policy, 10_000 + i, {"workload": workload})
                       for i in range(episodes)]
            rows[label] = {"mean_reward": float(np.mean([r.mean_reward for r in results])),
                           "goodput": float(np.mean([r.goodput for r in results])),
                           "slo_attainment": float(np.mean([r.slo_attainment for r in results]))}
        summary["workloads"][name] = rows
    evaluation.close()
    return summary
