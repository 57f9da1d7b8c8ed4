"""The cost model as the engine's router."""

from __future__ import annotations

from engine.batch_view import BatchView
from engine.cost_model import CostModel, Estimate
from engine.decision import Decision


class CostModelRouter:
    """Engine router: each step, the cost model's best decision for the running batch, the same
    for every row.

    Reads the view's batch size, mean context in tokens, the rows' request ids and the trackers'
    snapshot; remembers the last Estimate for metrics.
    """

    def __init__(self, cost_model: CostModel):
        self.cost_model = cost_model
        self.last_estimate: Estimate | None = None

    def decide(self, view: BatchView) -> list[Decision]:
        if not view.rows:
            return []
        self.last_estimate = self.cost_model.best_estimate(view.batch_size, view.mean_context, view.acceptance,
                                                           view.request_ids)
        return [self.last_estimate.decision] * view.batch_size
