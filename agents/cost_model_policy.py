"""The served cost-model router (`router.cost_router.CostModelRouter`) as a Policy.

One cost model: evaluation, the environment's baselines and the server all run
`CostModelRouter.decide` on a `BatchView`. Built from an environment, the policy reads the view
of the env's engine (the rows, their own acceptance estimates, the queue), exactly what the
served router reads. Without one (scoring logged observations offline) it rebuilds the view
from the observation: the batch size, the mean context, each pair's pooled acceptance and each
level's catch-up, which is all a logged row holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from agents.policies import BasePolicy, ObservationIndex
from engine.batch_view import BatchView, RowView
from engine.catch_up_cost import CATCH_UP_HORIZON
from engine.cost_model import CostModel
from engine.decision import Decision
from router.cost_router import CostModelRouter
from router.observation import ObservationScale


class CostModelPolicy(BasePolicy):
    """Args:
        cost_model: a CostModel over (at least) the action list's decisions.
        decisions: the environment's Discrete action list.
        obs_names: the observation spec's feature names.
        view_of: the live engine's view (`SpecRouteEnv.batch_view`); None scores from `obs` alone.
    """

    def __init__(self, cost_model: CostModel, decisions: Sequence[Decision], obs_names: Sequence[str],
                 view_of: Callable[[], BatchView] | None = None, per_row: bool = False,
                 scale: ObservationScale | None = None):
        if per_row and view_of is None:
            raise ValueError("per-row routing reads the engine's rows: it needs view_of")
        self.router = CostModelRouter(cost_model, per_row=per_row)
        self.decisions = list(decisions)
        self.index = ObservationIndex(obs_names, scale)
        if not self.index.has_batch() or not self.index.has("context_mean"):
            raise ValueError("the cost model policy needs the observation's batch (running_batch, or batch_occupancy "
                             "with the spec's scale) and context_mean")
        unknown = [d.label for d in self.decisions if d not in cost_model.decisions]
        if unknown:
            raise ValueError(f"the cost model does not evaluate actions {unknown}")
        self._labels = {d.label: i for i, d in enumerate(self.decisions)}
        self._pairs = [name[len("acceptance["):-1] for name in self.index.names if name.startswith("acceptance[")]
        self._catch_up = [name[len("catch_up["):-1] for name in self.index.names if name.startswith("catch_up[")]
        self.view_of = view_of
        self.name = "cost-model-rows" if per_row else "cost-model"
        self._priced = cost_model.profile        # the latency profile the router prices with

    def price_with(self, profile) -> None:
        """Price with `profile` from now on: the live engine's, which a simulator randomising its
        cost curve draws anew each episode (the server prices with its own measured one)."""
        if profile is None or profile is self._priced:
            return
        old = self.router.cost_model
        self.router = CostModelRouter(CostModel(
            profile, old.decisions, slo_tpot_s=old.slo_tpot_s, prior_acceptance=old.prior_acceptance,
            context_bucket=old.context_bucket, min_gain=old.min_gain, min_row_gain=old.min_row_gain,
            catch_up_horizon=old.catch_up_horizon, context_knot=old.context_knot), per_row=self.router.per_row)
        self._priced = profile

    @property
    def cost_model(self) -> CostModel:
        return self.router.cost_model

    @classmethod
    def from_env(cls, env, per_row: bool = False) -> CostModelPolicy:
        """The served router over a SpecRoute env: its profile, SLO, action list and engine's
        view; `per_row`: one action per row (`SpecRouteEnv.step` takes a sequence)."""
        from engine.profile import LatencyProfile
        from env.config import resolve_path
        inner = env.unwrapped
        profile = LatencyProfile.load(resolve_path(inner.config.sim.profile))
        cost_model = CostModel(profile, inner.decisions, slo_tpot_s=inner.config.slo_tpot_s)
        return cls(cost_model, inner.decisions, inner.obs_spec.names, view_of=inner.batch_view, per_row=per_row,
                   scale=inner.obs_spec.scale)

    def offline(self) -> CostModelPolicy:
        """The same router scoring observations alone: what off-policy evaluation can replay
        from a decision log, which holds observations and not the engine's per-request state."""
        return CostModelPolicy(self.cost_model, self.decisions, self.index.names, scale=self.index.scale)

    def acceptance(self, obs) -> dict[str, float]:
        return {pair: self.index.get(obs, f"acceptance[{pair}]") for pair in self._pairs}

    def view_from_obs(self, obs) -> BatchView:
        """What a logged observation says of the batch: its running rows at the mean context,
        the pooled acceptance of each pair, and each level's catch-up spread evenly over rows
        with `CATCH_UP_HORIZON` tokens to go (`router.observation_builder.catch_up_feature` inverted)."""
        batch = round(float(self.index.batch(obs)))
        context = max(round(float(self.index.context(obs))), 1)
        cached = []
        for level in self._catch_up:
            lacking = round(float(np.expm1(self.index.get(obs, f"catch_up[{level}]"))) * CATCH_UP_HORIZON)
            cached.append((level, context - 1 - min(max(lacking, 0), context - 1)))
        rows = tuple(RowView(f"row-{i}", "", context, 0, CATCH_UP_HORIZON, 0.0, cached=tuple(sorted(cached)))
                     for i in range(batch))
        pairs = {pair: {"acceptance": a} for pair, a in self.acceptance(obs).items()}
        return BatchView(rows, (), {"pairs": pairs, "requests": {}})

    def act(self, obs) -> int | tuple[int, ...]:
        """The action index; per row, a tuple of indices where the rows' decisions differ."""
        view = self.view_of() if self.view_of is not None else self.view_from_obs(np.asarray(obs))
        self.price_with(view.profile)
        if not view.rows:
            return self._labels.get(Decision().label, 0)
        actions = tuple(self._labels[d.label] for d in self.router.decide(view))
        return actions[0] if len(set(actions)) == 1 else actions
