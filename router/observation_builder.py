"""The observation builder: fills the vector `router.observation` specifies, clipped into its ranges.

It reads only what any engine exposes (the running rows as `engine.batch_view.RowView`s with
their draft signals and cached lengths, the waiting requests, the acceptance trackers' snapshot,
`LoadStats`, the engine's latency profile), so the real engine, the simulator and the server
build the same vector. Times are divided by this machine's plain step from its own profile (the
server's measured one, the simulator's episode curve): without a profile the cost features are 0
(outside any trained range, so a learned policy falls back).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from engine.catch_up_cost import remaining_output
from engine.decision import TARGET
from engine.drafters import SIGNAL_LEVELS
from router.load_stats import LoadStats
from router.observation import ObservationSpec


def catch_up_feature(rows: Sequence, level: str) -> float:
    """log1p(sum over rows of the tokens `level`'s cache lacks beyond the step's own feed / sum of
    the rows' remaining output tokens), the quantity the cost model charges per token
    (engine/cost_model.py, Catch-up) in tokens rather than seconds. Rows: `RowView`s."""
    lacking = remaining = 0
    for row in rows:
        pending = row.lacking(level)
        if pending is None:
            continue
        lacking += pending
        remaining += remaining_output(row.max_tokens, row.num_output_tokens)
    return math.log1p(lacking / remaining) if remaining else 0.0


CONTEXT_BUCKET = 32        # contexts are looked up in the profile rounded down to this (its lookups are cached)


class StepCosts:
    """This machine's forward times at one (batch, context), from its latency profile."""

    def __init__(self, profile, batch: int, context: float):
        self.profile = profile
        self.batch = max(int(batch), 1)
        self.context = int(context) // CONTEXT_BUCKET * CONTEXT_BUCKET
        self.plain_s = profile.forward_time(TARGET, self.batch, 1, self.context) if profile is not None else 0.0

    def ratio(self, seconds: float) -> float:
        return seconds / self.plain_s if self.plain_s > 0 else 0.0

    def verify(self, k: int) -> float:
        """The target's forward of k drafts + 1 per row, x its plain forward."""
        return self.ratio(self.profile.forward_time(TARGET, self.batch, k + 1, self.context)) if self.plain_s else 0.0

    def draft(self, level: str) -> float:
        """`level`'s one-token forward, x the target's."""
        return self.ratio(self.profile.forward_time(level, self.batch, 1, self.context)) if self.plain_s else 0.0


class ObservationBuilder:
    """Fills `spec`'s vector; which pairs, drafters, levels and how many actions it shows come
    from the spec's own feature names."""

    def __init__(self, spec: ObservationSpec):
        self.spec = spec
        self.pairs = spec.listed("acceptance")
        self.signal_drafters = spec.listed("signal_mean")
        self.catch_up_levels = spec.listed("catch_up")
        self.num_actions = len(spec.listed("last_action"))
        self.verify_ks = [int(k) for k in spec.listed("verify_cost")]
        self.draft_levels = spec.listed("draft_cost")
        self.low = spec.low
        self.high = spec.high

    def build(self, running: Sequence, waiting: Sequence, acceptance: dict[str, float], stats: LoadStats,
              now: float, last_action: int | None, profile=None) -> np.ndarray:
        """`running`: the running rows as `RowView`s (with their draft signals and cached lengths);
        `waiting`: the queue (anything with `arrival_time`), oldest first; `acceptance`: pair -> EMA;
        `profile`: this machine's `LatencyProfile` (the engine's)."""
        scale = self.spec.scale
        contexts = [r.num_tokens for r in running]
        context_mean = sum(contexts) / len(contexts) if contexts else 0.0
        costs = StepCosts(profile, len(running), context_mean)
        oldest_wait = now - waiting[0].arrival_time if waiting else 0.0
        values = [len(running) / scale.max_batch, len(waiting) / scale.max_batch,
                  stats.arrival_rate * costs.plain_s, context_mean / scale.max_model_len,
                  max(contexts, default=0) / scale.max_model_len, costs.ratio(stats.step_latency_s),
                  stats.tpot_slack_s / scale.slo_tpot_s, stats.ttft_slack_s / scale.slo_ttft_s,
                  oldest_wait / scale.slo_ttft_s]
        values += [costs.verify(k) for k in self.verify_ks]
        values += [costs.draft(name) for name in self.draft_levels]
        values += [acceptance.get(pair, 0.0) for pair in self.pairs]
        for name in self.signal_drafters:
            row_signals = [dict(row.signals).get(name, 0) / SIGNAL_LEVELS for row in running] or [0.0]
            values += [sum(row_signals) / len(row_signals), max(row_signals)]
        values += [catch_up_feature(running, name) for name in self.catch_up_levels]
        one_hot = [0.0] * self.num_actions
        if last_action is not None:
            one_hot[last_action] = 1.0
        obs = np.array(values + one_hot, dtype=np.float32)
        return np.clip(obs, self.low, self.high, out=obs)
