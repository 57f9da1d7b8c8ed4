"""Arrival processes: Poisson at rate lambda, bursty gamma with a chosen CV, the Azure code trace, offline,
and closed loop (users who each send their next request when the last one finishes).

All return arrival times in seconds from the window start, the first request at 0, drawn from
the caller's numpy Generator (the environment's `np_random`) so a seed fixes them.
"""

from __future__ import annotations

import numpy as np

from env.prompt_sources import TraceRow, azure_code_trace

ARRIVAL_PROCESSES = ("poisson", "gamma", "azure", "offline", "closed")
NOT_YET = float("inf")          # a closed-loop request's arrival until its user's previous one finishes


def closed_loop_arrivals(num_requests: int, concurrency: int) -> np.ndarray:
    """The first `concurrency` requests (one per user) at 0; the rest wait for a finish
    (`env.episode.Episode` releases them)."""
    times = np.full(num_requests, NOT_YET)
    times[:concurrency] = 0.0
    return times


def think_time(rng: np.random.Generator, mean_s: float) -> float:
    """A user's pause between an answer and the next request: exponential with mean `mean_s` (0: none)."""
    return float(rng.exponential(mean_s)) if mean_s > 0 else 0.0


def poisson_arrivals(rng: np.random.Generator, num_requests: int, rate: float) -> np.ndarray:
    """Exponential gaps of mean 1/rate (CV 1)."""
    gaps = rng.exponential(1.0 / rate, size=num_requests - 1)
    return np.concatenate([[0.0], np.cumsum(gaps)])


def gamma_arrivals(rng: np.random.Generator, num_requests: int, rate: float, cv: float) -> np.ndarray:
    """Gamma gaps of mean 1/rate and coefficient of variation `cv` (> 1 is burstier than Poisson)."""
    shape = 1.0 / cv ** 2
    gaps = rng.gamma(shape, 1.0 / (rate * shape), size=num_requests - 1)
    return np.concatenate([[0.0], np.cumsum(gaps)])


def azure_window(rng: np.random.Generator, num_requests: int, time_scale: float) -> tuple[np.ndarray, list[TraceRow]]:
    """`num_requests` consecutive trace requests from a random start, times multiplied by `time_scale`
    (0.5 replays the trace twice as fast)."""
    trace = azure_code_trace()
    if num_requests > len(trace):
        raise ValueError(f"the Azure code trace has {len(trace)} requests, asked for {num_requests}")
    start = int(rng.integers(0, len(trace) - num_requests + 1))
    rows = list(trace[start: start + num_requests])
    times = np.array([r.time_s - rows[0].time_s for r in rows]) * time_scale
    return times, rows


def azure_rows(rng: np.random.Generator, num_requests: int) -> list[TraceRow]:
    """Random trace requests (for their sizes only)."""
    trace = azure_code_trace()
    return [trace[i] for i in rng.integers(0, len(trace), size=num_requests)]
