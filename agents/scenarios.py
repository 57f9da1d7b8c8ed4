"""The workloads the router is trained and evaluated on, and the training mixture over them.

Rates are in requests per second of the simulator's virtual clock. "low" leaves the engine
mostly idle (batch 1-2, speculation pays), "high" keeps the batch full and a queue building
(the verifier is compute-bound, speculation must back off); the Azure code trace replays its
real timestamps.
"""

from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np

from env.workloads import WorkloadSpec, resolve_workload

NUM_REQUESTS = 48
RATE_LOW, RATE_MEDIUM, RATE_HIGH = 0.5, 2.0, 6.0
LOAD_SWEEP = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def _spec(name: str, num_requests: int, **fields) -> WorkloadSpec:
    return resolve_workload({"name": name, "num_requests": num_requests, **fields})


def evaluation_workloads(num_requests: int = NUM_REQUESTS) -> dict[str, WorkloadSpec]:
    """name -> workload: the Spec-Bench mix, the Azure code trace, Poisson low/medium/high, bursty."""
    return {
        "spec_bench-mix": _spec("spec_bench", num_requests, rate=RATE_MEDIUM),
        "azure_code": _spec("azure_code", num_requests),
        "poisson-low": _spec("sharegpt", num_requests, rate=RATE_LOW),
        "poisson-medium": _spec("sharegpt", num_requests, rate=RATE_MEDIUM),
        "poisson-high": _spec("sharegpt", num_requests, rate=RATE_HIGH),
        "bursty": _spec("sharegpt-bursty", num_requests, rate=RATE_MEDIUM, cv=3.0),
    }


def load_sweep(rates=LOAD_SWEEP, num_requests: int = NUM_REQUESTS) -> dict[float, WorkloadSpec]:
    """The Spec-Bench mix at several Poisson rates (goodput against load)."""
    return {float(rate): _spec("spec_bench", num_requests, rate=float(rate)) for rate in rates}


def training_workloads() -> list[WorkloadSpec]:
    """Every evaluation workload; the mixture also scales their rates (see WorkloadMixture)."""
    return list(evaluation_workloads().values())


class WorkloadMixture(gymnasium.Wrapper):
    """Each reset draws a workload from `workloads` and scales its load by a log-uniform factor
    in [1 / rate_spread, rate_spread], so one policy sees idle, medium and saturated engines."""

    def __init__(self, env, workloads: list[WorkloadSpec] | None = None, rate_spread: float = 1.5):
        super().__init__(env)
        if rate_spread < 1.0:
            raise ValueError("rate_spread must be >= 1")
        self.workloads = list(workloads or training_workloads())
        if not self.workloads:
            raise ValueError("the mixture needs at least one workload")
        self.rate_spread = rate_spread

    def draw(self, rng: np.random.Generator) -> WorkloadSpec:
        spec = self.workloads[int(rng.integers(len(self.workloads)))]
        factor = float(np.exp(rng.uniform(-np.log(self.rate_spread), np.log(self.rate_spread))))
        if spec.arrival == "azure":
            return dataclasses.replace(spec, time_scale=spec.time_scale / factor)
        if spec.arrival == "offline":
            return spec
        return dataclasses.replace(spec, rate=spec.rate * factor)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.env.reset(seed=seed)               # seed np_random first, then draw from it
        options = dict(options or {})
        options.setdefault("workload", self.draw(self.env.unwrapped.np_random))
        return self.env.reset(options=options)
