"""The router's settings (`RouterConfig`): what its observation is scaled by and its reward charges.

The environment and the server both build one (`EnvConfig.observation_spec`, serving.launch), so
a policy trained in the one sees the same observation layout and ranges in the other; the ranges'
and the penalty's defaults are declared here only (`EnvConfig` takes them from these fields).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class RouterConfig:
    """Args:
        max_batch / max_model_len: the engine's batching limits (the ranges of batch and context).
        slo_tpot_s / slo_ttft_s: per-request SLO on mean time per output token and time to first token.
        max_queue / max_rate / max_latency_s / max_wait_s: upper ends of the observation's ranges.
        slo_penalty: reward subtracted per finished request that missed either SLO.
    """

    max_batch: int
    max_model_len: int
    slo_tpot_s: float
    slo_ttft_s: float
    max_queue: int = 256
    max_rate: float = 100.0
    max_latency_s: float = 30.0
    max_wait_s: float = 600.0
    slo_penalty: float = 20.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            lowest = 0.0 if item.name == "slo_penalty" else math.nextafter(0.0, 1.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < lowest:
                raise ValueError(f"{item.name} must be a finite number {'>= 0' if lowest == 0 else '> 0'}, "
                                 f"got {value!r}")


def canonical_policy_name(spelling: str) -> str:
    """The one spelling of the cost-model router in a policy or router name: the server's old
    `cost_model` names the same router as `cost-model` (and `cost_model-rows` as `cost-model-rows`)."""
    return spelling.replace("cost_model", "cost-model")
