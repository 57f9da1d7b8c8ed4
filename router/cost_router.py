"""The cost model as the engine's router."""

from __future__ import annotations

from engine.batch_view import BatchView, StepFeedback
from engine.cost_model import CostModel, Estimate
from engine.decision import Decision
from router.online_correction import OnlineCorrection, OnlineCorrectionConfig


class CostModelRouter:
    """Engine router: each step, the cost model's best decision for the running batch; with
    `per_row`, one per row (`CostModel.best_rows`: rows on their own chain and K where that is
    predicted to pay by more than the cost model's `min_row_gain`).

    Reads the view's batch size, mean context in tokens, the rows' request ids, what each model
    level's cache holds per row (catch-up) and the trackers' snapshot; remembers the batch's
    Estimate for metrics. With `correction` enabled (the default) the batch's decision is scored
    with the cost model's predictions corrected by what the steps it chose took and committed
    (router/online_correction.py); the per-row assignment starts from that decision.
    """

    def __init__(self, cost_model: CostModel, per_row: bool = False,
                 correction: OnlineCorrectionConfig = OnlineCorrectionConfig()):
        self.cost_model = cost_model
        self.per_row = per_row
        self.correction = (OnlineCorrection(cost_model.decisions, correction, cost_model.min_gain)
                           if correction.enabled else None)
        self.last_estimate: Estimate | None = None

    def decide(self, view: BatchView) -> list[Decision]:
        if not view.rows:
            return []
        catch_up = self.cost_model.catch_up_rates(view.rows)
        self.last_estimate = self._estimate(view, catch_up)
        if self.per_row and view.batch_size > 1:
            return self.cost_model.best_rows(view.mean_context, view.acceptance, view.request_ids,
                                             self.last_estimate.decision, catch_up=catch_up)
        return [self.last_estimate.decision] * view.batch_size

    def _estimate(self, view: BatchView, catch_up) -> Estimate:
        """The batch's decision: the cost model's best, on corrected figures when correcting."""
        batch, model = view.batch_size, self.cost_model
        if self.correction is None:
            return model.best_estimate(batch, view.mean_context, view.acceptance, view.request_ids, catch_up)
        tokens, times = model.scores(batch, view.mean_context, view.acceptance, view.request_ids, catch_up)
        fixed_tokens, fixed_times, explore = self.correction.correct(batch, tokens, times)
        if explore is None:
            estimate = model.select(batch, fixed_tokens, fixed_times)
        else:
            estimate = model.estimate(explore, batch, fixed_tokens[explore], fixed_times[explore])
        i = model.decisions.index(estimate.decision)
        self.correction.expect(i, batch, tokens[i], times[i])
        return estimate

    def observe_feedback(self, feedback: StepFeedback) -> None:
        """How the step went (the engine calls this after every step that ran a batch)."""
        if self.correction is not None:
            self.correction.observe(feedback)
