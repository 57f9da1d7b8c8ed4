"""The observation builder: fills the vector `router.observation` specifies, clipped into its ranges.

It reads only what any engine exposes (the running rows as `engine.batch_view.RowView`s with
their draft signals and cached lengths, the waiting requests, the acceptance trackers' snapshot,
`LoadStats`), so the real engine, the simulator and the server build the same vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from engine.catch_up_cost import remaining_output
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


class ObservationBuilder:
    """Fills `spec`'s vector; which pairs, drafters, levels and how many actions it shows come
    from the spec's own feature names."""

    def __init__(self, spec: ObservationSpec):
        self.spec = spec
        self.pairs = spec.listed("acceptance")
        self.signal_drafters = spec.listed("signal_mean")
        self.catch_up_levels = spec.listed("catch_up")
        self.num_actions = len(spec.listed("last_action"))
        self.low = spec.low
        self.high = spec.high

    def build(self, running: Sequence, waiting: Sequence, acceptance: dict[str, float], stats: LoadStats,
              now: float, last_action: int | None) -> np.ndarray:
        """`running`: the running rows as `RowView`s (with their draft signals and cached lengths);
        `waiting`: the queue (anything with `arrival_time`), oldest first; `acceptance`: pair -> EMA."""
        contexts = [r.num_tokens for r in running]
        oldest_wait = now - waiting[0].arrival_time if waiting else 0.0
        values = [len(running), len(waiting), stats.arrival_rate,
                  sum(contexts) / len(contexts) if contexts else 0.0, max(contexts, default=0),
                  stats.step_latency_s, stats.tpot_slack_s, stats.ttft_slack_s, oldest_wait]
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
