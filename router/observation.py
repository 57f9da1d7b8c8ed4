"""The observation spec: the names and ranges of the router's float32 observation, versioned.

The layout follows from the action list (which pairs, drafters and levels it uses) and a
`RouterConfig` (the ranges), so the environment and the server derive the same spec from their
own settings. `router.observation_builder` fills the vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.decision import Decision
from engine.drafters import MODEL_FREE_DRAFTERS, SIGNAL_LEVELS
from engine.trackers import pair_key
from router.config import RouterConfig

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

    def listed(self, prefix: str) -> list[str]:
        """What the features named `prefix[...]` are about, in order: `listed("acceptance")` -> pairs."""
        return [name[len(prefix) + 1:-1] for name in self.names if name.startswith(f"{prefix}[")]

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


def pairs_of(decisions: Sequence[Decision]) -> list[str]:
    """Every (drafter > verifier) pair the decisions use, in first-use order."""
    pairs = [pair_key(below, above) for d in decisions if not d.is_plain
             for below, above in zip(d.chain, d.chain[1:])]
    return list(dict.fromkeys(pairs))


def signal_drafters_of(decisions: Sequence[Decision]) -> list[str]:
    """The model-free drafters that start a chain of the decisions, whose draft signals the observation shows."""
    starts = [d.chain[0] for d in decisions if not d.is_plain and d.chain[0] in MODEL_FREE_DRAFTERS]
    return list(dict.fromkeys(starts))


def catch_up_levels_of(decisions: Sequence[Decision]) -> list[str]:
    """The model levels below the target in the decisions' chains, whose catch-up the observation shows."""
    levels = [name for d in decisions if not d.is_plain for name in d.chain[:-1] if name not in MODEL_FREE_DRAFTERS]
    return list(dict.fromkeys(levels))


def observation_spec_for(decisions: Sequence[Decision], config: RouterConfig) -> ObservationSpec:
    """The spec of a router choosing among `decisions` (the Discrete action list, in order)."""
    return observation_spec(pairs_of(decisions), [d.label for d in decisions],
                            signal_drafters=signal_drafters_of(decisions),
                            catch_up_levels=catch_up_levels_of(decisions), max_batch=config.max_batch,
                            max_model_len=config.max_model_len, slo_tpot_s=config.slo_tpot_s,
                            slo_ttft_s=config.slo_ttft_s, max_queue=config.max_queue, max_rate=config.max_rate,
                            max_latency_s=config.max_latency_s, max_wait_s=config.max_wait_s)
