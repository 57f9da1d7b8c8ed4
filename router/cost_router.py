"""The cost model as the engine's router."""

from __future__ import annotations

from engine.batch_view import BatchView
from engine.cost_model import CostModel, Estimate
from engine.decision import Decision


class CostModelRouter:
    """Engine router: each step, the cost model's best decision for the running batch; with
    `per_row`, one per row (`CostModel.best_rows`: rows on their own chain and K where that is
    predicted to pay by more than the cost model's `min_row_gain`).

    Reads the view's batch size, mean context in tokens, the rows' request ids, what each model
    level's cache holds per row (catch-up) and the trackers' snapshot; remembers the batch's
    Estimate for metrics.
    """

    def __init__(self, cost_model: CostModel, per_row: bool = False):
        self.cost_model = cost_model
        self.per_row = per_row
        self.last_estimate: Estimate | None = None

    def decide(self, view: BatchView) -> list[Decision]:
        if not view.rows:
            return []
        catch_up = self.cost_model.catch_up_rates(view.rows)
        self.last_estimate = self.cost_model.best_estimate(view.batch_size, view.mean_context, view.acceptance,
                                                           view.request_ids, catch_up)
        if self.per_row and view.batch_size > 1:
            return self.cost_model.best_rows(view.mean_context, view.acceptance, view.request_ids,
                                             self.last_estimate.decision, catch_up=catch_up)
        return [self.last_estimate.decision] * view.batch_size
