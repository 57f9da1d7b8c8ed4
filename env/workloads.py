"""Workloads: which prompts arrive when, and how long each answer is. One episode = one window.

A `WorkloadSpec` is data (a named preset, or built from a dict); `build_window` draws one
window from it with the environment's RNG. Output lengths are fixed in advance (from reference
answers, the Azure trace or `max_new_tokens`) and generated with `ignore_eos`, so the real
engine and the simulator produce exactly the same number of tokens per request.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from env.arrivals import (ARRIVAL_PROCESSES, azure_rows, azure_window, closed_loop_arrivals, gamma_arrivals,
                          poisson_arrivals)
from env.prompt_sources import PROMPT_SOURCES, SPEC_BENCH_TASKS, Prompt, azure_code_prompt, load_prompts

OUTPUT_LENGTHS = ("data", "fixed", "trace")


@dataclass(frozen=True)
class WorkloadSpec:
    """Args:
        prompts: prompt source: spec_bench, spec_bench:<task>, mt_bench, humaneval, sharegpt, azure_code.
        arrival: poisson (rate), gamma (rate, cv), azure (the code trace's timestamps x time_scale),
            offline (everything at time 0), closed (closed loop: `concurrency` users, each sending
            its next request when its last one finished, after a think time).
        rate: mean arrival rate in requests per second (poisson, gamma).
        cv: coefficient of variation of the gaps (gamma); 1 is Poisson, larger is burstier.
        time_scale: multiplies the Azure trace's timestamps (0.5 = twice the load).
        num_requests: requests in one window (one episode).
        concurrency: closed loop: how many users (requests in flight at most).
        think_s: closed loop: mean pause (exponential) between an answer and the user's next request.
        output_len: data (reference answer length where the data has one, else max_new_tokens),
            fixed (max_new_tokens), trace (the Azure trace's GeneratedTokens).
        max_new_tokens / min_new_tokens: output lengths are clipped to this range.
        max_prompt_tokens: longer prompts keep their last tokens.
    """

    prompts: str = "sharegpt"
    arrival: str = "poisson"
    rate: float = 1.0
    cv: float = 2.0
    time_scale: float = 1.0
    num_requests: int = 32
    output_len: str = "data"
    max_new_tokens: int = 64
    min_new_tokens: int = 4
    max_prompt_tokens: int = 1024
    concurrency: int = 1
    think_s: float = 0.0

    def __post_init__(self) -> None:
        name, _, task = self.prompts.partition(":")
        if name not in PROMPT_SOURCES or (task and (name != "spec_bench" or task not in SPEC_BENCH_TASKS)):
            raise ValueError(f"unknown prompt source {self.prompts!r}; known: {', '.join(PROMPT_SOURCES)}, "
                             f"spec_bench:<task> with task in {', '.join(SPEC_BENCH_TASKS)}")
        if self.arrival not in ARRIVAL_PROCESSES:
            raise ValueError(f"unknown arrival process {self.arrival!r}; known: {', '.join(ARRIVAL_PROCESSES)}")
        for field_name in ("rate", "cv", "time_scale"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{field_name} must be a finite number > 0, got {value!r}")
        if isinstance(self.think_s, bool) or not isinstance(self.think_s, (int, float)) \
                or not math.isfinite(self.think_s) or self.think_s < 0:
            raise ValueError(f"think_s must be a finite number >= 0, got {self.think_s!r}")
        for field_name in ("num_requests", "max_new_tokens", "min_new_tokens", "max_prompt_tokens", "concurrency"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{field_name} must be an integer > 0, got {value!r}")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens ({self.min_new_tokens}) exceeds max_new_tokens ({self.max_new_tokens})")
        if self.output_len not in OUTPUT_LENGTHS:
            raise ValueError(f"unknown output_len {self.output_len!r}; known: {', '.join(OUTPUT_LENGTHS)}")

    @property
    def uses_trace_sizes(self) -> bool:
        return self.prompts == "azure_code" or self.arrival == "azure" or self.output_len == "trace"


@dataclass(frozen=True)
class WorkloadRequest:
    """One request of a window: when it arrives, what it asks, how many tokens it generates."""

    index: int
    arrival_s: float
    prompt: Prompt
    max_new_tokens: int


def _presets() -> dict[str, WorkloadSpec]:
    presets = {
        "sharegpt": WorkloadSpec(prompts="sharegpt"),
        "sharegpt-bursty": WorkloadSpec(prompts="sharegpt", arrival="gamma", cv=3.0),
        "spec_bench": WorkloadSpec(prompts="spec_bench"),
        "spec_bench-bursty": WorkloadSpec(prompts="spec_bench", arrival="gamma", cv=3.0),
        "mt_bench": WorkloadSpec(prompts="mt_bench"),
        "humaneval": WorkloadSpec(prompts="humaneval"),
        "azure_code": WorkloadSpec(prompts="azure_code", arrival="azure", output_len="trace"),
        "single-user": WorkloadSpec(prompts="sharegpt", arrival="closed"),
        "single-user-think": WorkloadSpec(prompts="sharegpt", arrival="closed", think_s=3.0),
    }
    for task in SPEC_BENCH_TASKS:
        presets[f"spec_bench:{task}"] = WorkloadSpec(prompts=f"spec_bench:{task}")
    return presets


WORKLOADS = tuple(_presets())


def resolve_workload(workload: str | dict | WorkloadSpec) -> WorkloadSpec:
    """A preset name, a WorkloadSpec, or a dict of WorkloadSpec fields (optionally with `name`: the
    preset it starts from)."""
    if isinstance(workload, WorkloadSpec):
        return workload
    presets = _presets()
    if isinstance(workload, str):
        if workload not in presets:
            raise ValueError(f"unknown workload {workload!r}; known: {', '.join(presets)} "
                             "(or pass a dict of WorkloadSpec fields)")
        return presets[workload]
    if isinstance(workload, dict):
        fields = dict(workload)
        base = presets.get(fields.pop("name", None) or "sharegpt")
        if base is None:
            raise ValueError(f"unknown workload {workload['name']!r}; known: {', '.join(presets)}")
        known = {f.name for f in dataclasses.fields(WorkloadSpec)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown workload fields {unknown}; known: {sorted(known)}")
        return dataclasses.replace(base, **fields)
    raise TypeError(f"workload must be a name, a dict or a WorkloadSpec, got {type(workload).__name__}")


def load_sweep(workload: str | dict | WorkloadSpec, rates: list[float]) -> list[WorkloadSpec]:
    """The same workload at several loads: arrival rates, or for the trace, speed-ups of its timestamps."""
    spec = resolve_workload(workload)
    if spec.arrival == "azure":
        return [dataclasses.replace(spec, time_scale=1.0 / rate) for rate in rates]
    if spec.arrival in ("offline", "closed"):
        raise ValueError(f"an {spec.arrival} workload has no arrival rate to sweep")
    return [dataclasses.replace(spec, rate=float(rate)) for rate in rates]


def _output_tokens(spec: WorkloadSpec, prompt: Prompt, trace_generated: int | None) -> int:
    if spec.output_len == "fixed":
        wanted = spec.max_new_tokens
    elif spec.output_len == "trace":
        wanted = trace_generated
    else:
        wanted = prompt.reference_tokens or spec.max_new_tokens
    return int(min(max(wanted, spec.min_new_tokens), spec.max_new_tokens))


def build_window(spec: WorkloadSpec, rng: np.random.Generator) -> list[WorkloadRequest]:
    """Draw one window of `spec.num_requests` requests, sorted by arrival time."""
    n = spec.num_requests
    trace_rows = None
    if spec.arrival == "azure":
        times, trace_rows = azure_window(rng, n, spec.time_scale)
    elif spec.arrival == "poisson":
        times = poisson_arrivals(rng, n, spec.rate)
    elif spec.arrival == "gamma":
        times = gamma_arrivals(rng, n, spec.rate, spec.cv)
    elif spec.arrival == "closed":
        times = closed_loop_arrivals(n, spec.concurrency)
    else:
        times = np.zeros(n)
    if trace_rows is None and spec.uses_trace_sizes:
        trace_rows = azure_rows(rng, n)
    if spec.prompts == "azure_code":
        offsets = rng.integers(0, 1 << 16, size=n)
        prompts = [azure_code_prompt(int(o), min(r.context_tokens, spec.max_prompt_tokens), r.generated_tokens)
                   for o, r in zip(offsets, trace_rows)]
    else:
        bank = load_prompts(spec.prompts)
        picks = rng.choice(len(bank), size=n, replace=n > len(bank))
        prompts = [bank[int(i)] for i in picks]
    window = []
    for i, (time_s, prompt) in enumerate(zip(times, prompts)):
        generated = trace_rows[i].generated_tokens if trace_rows is not None else None
        window.append(WorkloadRequest(i, float(time_s), prompt, _output_tokens(spec, prompt, generated)))
    return window
