"""The workloads the router is trained and evaluated on, and the training mixture over them.

Loads are fractions of the engine's *saturation rate*: the requests per second the simulator
completes with plain decoding when every request is queued at once (a full batch). That keeps
"low", "medium" and "high" meaning the same thing whatever latency profile the simulator was
calibrated with: at low load the batch is mostly 1-2 rows (speculation pays), at high load the
batch is full and a queue builds (the verifier is compute-bound, speculation must back off).
The Azure code trace keeps its own arrival pattern, replayed at the speed that puts its mean
rate at the medium load. Closed-loop workloads (a single user's sequential requests, with and
without think time, and 2 to 16 concurrent users) set their own load: each user sends the next
request when the last one is answered.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import gymnasium
import numpy as np

from env.workloads import WorkloadSpec, load_sweep, resolve_workload

NUM_REQUESTS = 48
LOAD_LOW, LOAD_MEDIUM, LOAD_HIGH = 0.15, 0.5, 1.0
LOAD_SWEEP = (0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 1.0, 1.25)
SPEC_BENCH, SHAREGPT, AZURE = "spec_bench", "sharegpt", "azure_code"
CONCURRENCY = (2, 4, 8, 16)
THINK_S = 3.0                   # a single user's mean pause between an answer and the next question


def sim_env_kwargs(profile: str | None = None, acceptance: str | None = None) -> dict:
    """SpecRoute-v0 keyword arguments of the simulator, with the env's profile and acceptance
    files unless others are named (training and evaluation must agree on them)."""
    kwargs = {"backend": "sim"}
    if profile:
        kwargs["profile"] = profile
    if acceptance:
        kwargs["acceptance"] = acceptance
    return kwargs


def _spec(name: str, num_requests: int, **fields) -> WorkloadSpec:
    return resolve_workload({"name": name, "num_requests": num_requests, **fields})


@lru_cache(maxsize=32)
def _saturation_rate(env_kwargs: tuple, preset: str, num_requests: int) -> float:
    import env  # noqa: F401  (registers SpecRoute-v0)
    from agents.policies import NoSpeculationPolicy
    from agents.rollout import run_episode
    probe = gymnasium.make("SpecRoute-v0", **dict(env_kwargs))
    spec = _spec(preset, num_requests, arrival="offline")
    rates = []
    for seed in range(2):
        result = run_episode(probe, NoSpeculationPolicy(probe.unwrapped.decisions), seed, {"workload": spec})
        rates.append(len(result.slo_met) / result.span_s)
    probe.close()
    return float(np.mean(rates))


def saturation_rate(env_kwargs: dict, preset: str, num_requests: int = NUM_REQUESTS) -> float:
    """Requests/s the simulator finishes with plain decoding and a full queue (offline arrivals)."""
    return _saturation_rate(tuple(sorted(env_kwargs.items())), preset, num_requests)


@lru_cache(maxsize=1)
def azure_trace_rate() -> float:
    """Mean arrival rate of the whole Azure code trace, requests per second."""
    from env.prompt_sources import azure_code_trace
    trace = azure_code_trace()
    return (len(trace) - 1) / (trace[-1].time_s - trace[0].time_s)


def closed_loop_workloads(num_requests: int = NUM_REQUESTS) -> dict[str, WorkloadSpec]:
    """name -> workload: a single user's sequential requests (no think time, and `THINK_S`), and
    closed loops of each `CONCURRENCY`; at least 3 requests per user, a third of `num_requests`
    for the fewest users (a single user's window is long in steps)."""
    def size(users: int) -> int:
        return max(3 * users, num_requests // 3, 1)
    out = {"single-user": _spec(SHAREGPT, size(1), arrival="closed", concurrency=1),
           "single-user-think": _spec(SHAREGPT, size(1), arrival="closed", concurrency=1, think_s=THINK_S)}
    out |= {f"closed-c{c}": _spec(SHAREGPT, size(c), arrival="closed", concurrency=c) for c in CONCURRENCY}
    return out


def evaluation_workloads(env_kwargs: dict | None = None, num_requests: int = NUM_REQUESTS) -> dict[str, WorkloadSpec]:
    """name -> workload: the Spec-Bench mix, the Azure code trace, Poisson low/medium/high, bursty,
    Spec-Bench at low load (judged under `GOODPUT_SLO_TPOT_S`), and the closed loops
    (`closed_loop_workloads`).

    `env_kwargs` are the simulator's gymnasium.make arguments (its profile decides the rates).
    """
    kwargs = {"backend": "sim", **(env_kwargs or {})}
    kwargs.pop("workload", None)
    spec_bench = saturation_rate(kwargs, SPEC_BENCH, num_requests)
    sharegpt = saturation_rate(kwargs, SHAREGPT, num_requests)
    azure = saturation_rate(kwargs, AZURE, num_requests)
    return {
        "spec_bench-mix": _spec(SPEC_BENCH, num_requests, rate=LOAD_MEDIUM * spec_bench),
        "azure_code": _spec(AZURE, num_requests, time_scale=azure_trace_rate() / (LOAD_MEDIUM * azure)),
        "poisson-low": _spec(SHAREGPT, num_requests, rate=LOAD_LOW * sharegpt),
        "poisson-medium": _spec(SHAREGPT, num_requests, rate=LOAD_MEDIUM * sharegpt),
        "poisson-high": _spec(SHAREGPT, num_requests, rate=LOAD_HIGH * sharegpt),
        "bursty": _spec("sharegpt-bursty", num_requests, rate=LOAD_MEDIUM * sharegpt, cv=3.0),
        "spec_bench-low-tight": _spec(SPEC_BENCH, num_requests, rate=LOAD_LOW * spec_bench),
        **closed_loop_workloads(num_requests),
    }


WORKLOAD_NAMES = ("spec_bench-mix", "azure_code", "poisson-low", "poisson-medium", "poisson-high", "bursty",
                  "spec_bench-low-tight", "single-user", "single-user-think",
                  *(f"closed-c{c}" for c in CONCURRENCY))
# goodput SLOs of workloads that judge per-token latency tighter than the env's reward does: at
# low load every policy meets a loose SLO, and goodput then only counts arrivals; 50 ms per
# token (20 tokens/s, reading speed) is one that plain decoding of the embedded model misses
GOODPUT_SLO_TPOT_S = {"spec_bench-low-tight": 0.05}


def spec_bench_load_sweep(env_kwargs: dict | None = None, loads=LOAD_SWEEP,
                          num_requests: int = NUM_REQUESTS) -> dict[float, WorkloadSpec]:
    """Spec-Bench prompts with Poisson arrivals at each load (fraction of the saturation rate),
    as `env.workloads.load_sweep` of the rates."""
    kwargs = {"backend": "sim", **(env_kwargs or {})}
    kwargs.pop("workload", None)
    rate = saturation_rate(kwargs, SPEC_BENCH, num_requests)
    loads = [float(load) for load in loads]
    return dict(zip(loads, load_sweep(_spec(SPEC_BENCH, num_requests), [load * rate for load in loads])))


class WorkloadMixture(gymnasium.Wrapper):
    """Each reset draws one of `workloads` and scales its load by a log-uniform factor in
    [1 / rate_spread, rate_spread] (a closed loop's think time by its inverse), so one policy
    sees idle, medium and saturated engines."""

    def __init__(self, env, workloads: list[WorkloadSpec], rate_spread: float = 1.5):
        super().__init__(env)
        if rate_spread < 1.0:
            raise ValueError("rate_spread must be >= 1")
        self.workloads = list(workloads)
        if not self.workloads:
            raise ValueError("the mixture needs at least one workload")
        self.rate_spread = rate_spread

    def draw(self, rng: np.random.Generator) -> WorkloadSpec:
        spec = self.workloads[int(rng.integers(len(self.workloads)))]
        factor = float(np.exp(rng.uniform(-np.log(self.rate_spread), np.log(self.rate_spread))))
        if spec.arrival == "azure":
            return dataclasses.replace(spec, time_scale=spec.time_scale / factor)
        if spec.arrival == "closed":
            return dataclasses.replace(spec, think_s=spec.think_s / factor)
        if spec.arrival == "offline":
            return spec
        return dataclasses.replace(spec, rate=spec.rate * factor)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.env.reset(seed=seed)               # seed np_random first, then draw from it
        options = dict(options or {})
        options.setdefault("workload", self.draw(self.env.unwrapped.np_random))
        return self.env.reset(options=options)
