"""The observation: a float32 vector with a versioned spec of names and ranges.

The builder reads only what any engine exposes (the running rows as `engine.batch_view.RowView`s
with their draft signals and cached lengths, the waiting requests, the acceptance trackers'
snapshot, `LoadStats`), so the real engine, the simulator and the server build the same vector.
Values are clipped into the spec's [low, high].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.catch_up_cost import remaining_output
from engine.drafters import SIGNAL_LEVELS
from env.load_stats import LoadStats

OBS_SPEC_VERSION = "specroute-obs-v3"
MAX_CATCH_UP = math.log1p(4096.0)       # the catch-up feature's upper end (4096 tokens per output token)


@dataclass(frozen=True)
class Feature:
    name: str
    low: float
    high: float
    description: str


@dataclass(frozen=True)
class ObservationSpec:
    """Names and ranges of the observation vector; `version` changes whenever the layout does."""

    version: str
    features: tuple[Feature, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def low(self) -> np.ndarray:
        return np.array([f.low for f in self.features], dtype=np.float32)

    @property
    def high(self) -> np.ndarray:
        return np.array([f.high for f in self.features], dtype=np.float32)

    def to_json(self) -> dict:
        return {"version": self.version, "names": self.names,
                "low": [f.low for f in self.features], "high": [f.high for f in self.features]}

    def table(self) -> str:
        """Markdown table (index, name, min, max, meaning) for docs."""
        rows = ["| index | name | min | max | meaning |", "|---|---|---|---|---|"]
        rows += [f"| {i} | {f.name} | {f.low:g} | {f.high:g} | {f.description} |" for i, f in enumerate(self.features)]
        return "\n".join(rows)


def observation_spec(pairs: Sequence[str], action_labels: Sequence[str], *, max_batch: int, max_model_len: int,
                     slo_tpot_s: float, slo_ttft_s: float, max_queue: int, max_rate: float,
                     max_latency_s: float, max_wait_s: float, signal_drafters: Sequence[str] = (),
                     catch_up_levels: Sequence[str] = ()) -> ObservationSpec:
    """The v3 layout: load, context, latency and SLO slack, acceptance per pair, this step's draft
    signals per model-free first level (mean and max over the rows), the catch-up each model
    level below the target would pay before it drafts or verifies, last action one-hot."""
    features = [
        Feature("running_batch", 0, max_batch, "requests in the running batch"),
        Feature("queue_length", 0, max_queue, "requests waiting for admission (clipped)"),
        Feature("arrival_rate_ema", 0, max_rate, "arrivals per second, exponentially weighted"),
        Feature("context_mean", 0, max_model_len, "mean prompt + output tokens of running requests"),
        Feature("context_max", 0, max_model_len, "largest prompt + output tokens of running requests"),
        Feature("step_latency_s", 0, max_latency_s, "duration of the last step"),
        Feature("tpot_slack_s", slo_tpot_s - max_latency_s, slo_tpot_s, "TPOT SLO minus recent time per output token"),
        Feature("ttft_slack_s", slo_ttft_s - max_wait_s, slo_ttft_s, "TTFT SLO minus recent time to first token"),
        Feature("oldest_wait_s", 0, max_wait_s, "how long the oldest waiting request has waited"),
    ]
    features += [Feature(f"acceptance[{pair}]", 0, 1, f"acceptance EMA of {pair}") for pair in pairs]
    for name in signal_drafters:
        features += [Feature(f"signal_mean[{name}]", 0, 1, f"mean over rows of {name}'s draft signal for this step / {SIGNAL_LEVELS}"),
                     Feature(f"signal_max[{name}]", 0, 1, f"largest row's {name} draft signal for this step / {SIGNAL_LEVELS}")]
    features += [Feature(f"catch_up[{name}]", 0, MAX_CATCH_UP,
                         f"log1p(tokens {name}'s cache lacks over the rows / their remaining output tokens): its "
                         "prefill of new prompts and catch-up after sitting out, per token it could speed up")
                 for name in catch_up_levels]
    features += [Feature(f"last_action[{label}]", 0, 1, "1 for the action of the last step") for label in action_labels]
    return ObservationSpec(OBS_SPEC_VERSION, tuple(features))


def signal_drafters(spec: ObservationSpec) -> list[str]:
    """The drafters whose signals the spec shows, in order."""
    return [name[len("signal_mean["):-1] for name in spec.names if name.startswith("signal_mean[")]


def catch_up_levels(spec: ObservationSpec) -> list[str]:
    """The model levels whose catch-up the spec shows, in order."""
    return [name[len("catch_up["):-1] for name in spec.names if name.startswith("catch_up[")]


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
    def __init__(self, spec: ObservationSpec, pairs: Sequence[str], num_actions: int):
        self.spec = spec
        self.pairs = list(pairs)
        self.signal_drafters = signal_drafters(spec)
        self.catch_up_levels = catch_up_levels(spec)
        self.num_actions = num_actions
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
