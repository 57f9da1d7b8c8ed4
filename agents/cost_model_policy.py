"""The analytical cost model as a Policy over the environment's observation.

It reads the running batch, the mean context and each pair's acceptance EMA from the
observation (the same numbers `CostModelRouter` reads from the engine's `BatchView`) and asks
`engine.cost_model.CostModel` for the highest-goodput (chain, K) that meets the TPOT SLO.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agents.policies import BasePolicy, ObservationIndex
from engine.cost_model import CostModel
from engine.decision import Decision


class CostModelPolicy(BasePolicy):
    """Args:
        cost_model: a CostModel over (at least) the action list's decisions.
        decisions: the environment's Discrete action list.
        obs_names: the observation spec's feature names.
    """

    def __init__(self, cost_model: CostModel, decisions: Sequence[Decision], obs_names: Sequence[str]):
        self.cost_model = cost_model
        self.decisions = list(decisions)
        self.index = ObservationIndex(obs_names)
        for name in ("running_batch", "context_mean"):
            if not self.index.has(name):
                raise ValueError(f"the cost model policy needs observation feature {name!r}")
        unknown = [d.label for d in self.decisions if d not in cost_model.decisions]
        if unknown:
            raise ValueError(f"the cost model does not evaluate actions {unknown}")
        self._labels = {d.label: i for i, d in enumerate(self.decisions)}
        self._pairs = [name[len("acceptance["):-1] for name in self.index.names if name.startswith("acceptance[")]
        self.name = "cost-model"

    @classmethod
    def from_env(cls, env) -> "CostModelPolicy":
        """Build it from a SpecRoute env: its profile, SLO, action list and observation spec."""
        from engine.profile import LatencyProfile
        from env.config import resolve_path
        inner = env.unwrapped
        profile = LatencyProfile.load(resolve_path(inner.config.profile))
        cost_model = CostModel(profile, inner.decisions, slo_tpot_s=inner.config.slo_tpot_s)
        return cls(cost_model, inner.decisions, inner.obs_spec.names)

    def acceptance(self, obs) -> dict[str, float]:
        return {pair: self.index.get(obs, f"acceptance[{pair}]") for pair in self._pairs}

    def act(self, obs) -> int:
        obs = np.asarray(obs)
        batch = int(round(self.index.get(obs, "running_batch")))
        if batch < 1:
            return self._labels.get(Decision().label, 0)
        context = max(self.index.get(obs, "context_mean"), 1.0)
        best = self.cost_model.best(batch, context, self.acceptance(obs))
        return self._labels[best.label]
