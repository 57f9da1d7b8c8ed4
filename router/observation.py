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

OBS_SPEC_VERSION = "specroute-obs-v4"
MAX_CATCH_UP = math.log1p(4096.0)       # the catch-up feature's upper end (4096 tokens per output token)
# the v4 features' upper ends, reached in training so that larger values (clipped) stay in its range
MAX_QUEUE_BATCHES = 1.0                 # a full batch waiting: saturated, whatever more queues
MAX_ARRIVALS_PER_STEP = 1.0             # one arrival per plain step: far past any batch's service rate
MAX_STEP_X_PLAIN = 8.0                  # a step 8x the plain one (a prefill, a long chain on a steep machine)
MAX_COST_X_PLAIN = 8.0
MIN_SLACK = -3.0                        # 4x the SLO
MAX_WAIT_SLO = 4.0


@dataclass(frozen=True)
class Feature:
    name: str
    low: float
    high: float
    description: str


@dataclass(frozen=True)
class ObservationScale:
    """What the builder divides by: the engine's limits and the SLOs (`RouterConfig`'s)."""

    max_batch: int = 1
    max_model_len: int = 1
    slo_tpot_s: float = 1.0
    slo_ttft_s: float = 1.0


@dataclass(frozen=True)
class ObservationSpec:
    """Names and ranges of the observation vector; `version` changes whenever the layout does."""

    version: str
    features: tuple[Feature, ...]
    scale: ObservationScale = ObservationScale()

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
                     slo_tpot_s: float, slo_ttft_s: float, verify_ks: Sequence[int] = (),
                     signal_drafters: Sequence[str] = (), catch_up_levels: Sequence[str] = ()) -> ObservationSpec:
    """The v4 layout: every load, latency and cost feature relative to this machine and these
    limits (batch occupancy, the queue in batches, arrivals per plain step, contexts as a share
    of max_model_len, the last step and each level's forward as multiples of this machine's
    plain step at the current batch, slacks as shares of the SLO), so a policy trained on one
    CPU's cost curve reads another's on the same scale; then acceptance per pair, this step's
    draft signals per model-free first level, the catch-up of each model level below the target,
    last action one-hot. The absolute v3 ranges (max_queue, max_rate, ...) no longer apply."""
    features = [
        Feature("batch_occupancy", 0, 1, "running requests / max_batch"),
        Feature("queue_batches", 0, MAX_QUEUE_BATCHES, "waiting requests / max_batch (clipped)"),
        Feature("arrivals_per_step", 0, MAX_ARRIVALS_PER_STEP,
                "arrivals per second (exponentially weighted) x this machine's plain step at the current batch"),
        Feature("context_mean", 0, 1, "mean prompt + output tokens of running requests / max_model_len"),
        Feature("context_max", 0, 1, "largest prompt + output tokens of running requests / max_model_len"),
        Feature("step_x_plain", 0, MAX_STEP_X_PLAIN, "the last step's duration / this machine's plain step at the current batch"),
        Feature("tpot_slack", MIN_SLACK, 1, f"1 - recent time per output token / the TPOT SLO ({slo_tpot_s:g} s)"),
        Feature("ttft_slack", MIN_SLACK, 1, f"1 - recent time to first token / the TTFT SLO ({slo_ttft_s:g} s)"),
        Feature("oldest_wait", 0, MAX_WAIT_SLO, "how long the oldest waiting request has waited / the TTFT SLO"),
    ]
    features += [Feature(f"verify_cost[{k}]", 0, MAX_COST_X_PLAIN,
                         f"the target's forward of {k} drafts + 1 per row / its plain forward, at the current batch")
                 for k in verify_ks]
    features += [Feature(f"draft_cost[{name}]", 0, MAX_COST_X_PLAIN,
                         f"{name}'s one-token forward / the target's, at the current batch") for name in catch_up_levels]
    features += [Feature(f"acceptance[{pair}]", 0, 1, f"acceptance EMA of {pair}") for pair in pairs]
    for name in signal_drafters:
        features += [Feature(f"signal_mean[{name}]", 0, 1, f"mean over rows of {name}'s draft signal for this step / {SIGNAL_LEVELS}"),
                     Feature(f"signal_max[{name}]", 0, 1, f"largest row's {name} draft signal for this step / {SIGNAL_LEVELS}")]
    features += [Feature(f"catch_up[{name}]", 0, MAX_CATCH_UP,
                         f"log1p(tokens {name}'s cache lacks over the rows / their remaining output tokens): its "
                         "prefill of new prompts and catch-up after sitting out, per token it could speed up")
                 for name in catch_up_levels]
    features += [Feature(f"last_action[{label}]", 0, 1, "1 for the action of the last step") for label in action_labels]
    return ObservationSpec(OBS_SPEC_VERSION, tuple(features),
                           ObservationScale(max_batch, max_model_len, slo_tpot_s, slo_ttft_s))


def verify_ks_of(decisions: Sequence[Decision]) -> list[int]:
    """The distinct draft lengths K of the speculative decisions, ascending: whose verify cost the observation shows."""
    return sorted({int(d.k) for d in decisions if not d.is_plain})


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
    return observation_spec(pairs_of(decisions), [d.label for d in decisions], verify_ks=verify_ks_of(decisions),
                            signal_drafters=signal_drafters_of(decisions),
                            catch_up_levels=catch_up_levels_of(decisions), max_batch=config.max_batch,
                            max_model_len=config.max_model_len, slo_tpot_s=config.slo_tpot_s,
                            slo_ttft_s=config.slo_ttft_s)
