"""Load and latency statistics the observation and the reward need, observed step by step.

Both backends feed the same `LoadStats` from the same events (arrivals, a finished step, a
finished request), so the observation means the same thing on the real engine and in the
simulator. Times are in the backend's clock (wall or virtual), seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class StepOutcome:
    """What one step did; `reward` = tokens/s of the step - penalty x SLO misses."""

    reward: float
    num_committed: int
    latency_s: float
    num_rows: int
    num_finished: int
    num_violations: int


@dataclass
class LoadStats:
    """Args:
        slo_tpot_s / slo_ttft_s: the SLO a finished request is judged against.
        ema_alpha: weight of the newest sample in the latency EMAs.
        rate_horizon_s: time constant of the arrival-rate estimate.
    """

    slo_tpot_s: float
    slo_ttft_s: float
    ema_alpha: float = 0.2
    rate_horizon_s: float = 10.0
    arrival_rate: float = 0.0           # requests per second, exponentially weighted
    step_latency_s: float = 0.0         # the last step's duration
    tpot_ema_s: float = 0.0             # time per output token per request, over recent steps
    ttft_ema_s: float = 0.0             # over requests that got their first token recently
    last_time: float = 0.0
    num_arrived: int = 0
    num_finished: int = 0
    num_violations: int = 0
    _has_tpot: bool = False
    _has_ttft: bool = False

    def fresh(self) -> LoadStats:
        """The same SLOs and smoothing, with nothing observed yet."""
        return LoadStats(self.slo_tpot_s, self.slo_ttft_s, self.ema_alpha, self.rate_horizon_s)

    def observe_time(self, now: float) -> None:
        """Decay the arrival-rate estimate up to `now`."""
        if now > self.last_time:
            self.arrival_rate *= math.exp(-(now - self.last_time) / self.rate_horizon_s)
            self.last_time = now

    def observe_arrivals(self, num_arrivals: int, now: float) -> None:
        self.observe_time(now)
        self.arrival_rate += num_arrivals / self.rate_horizon_s
        self.num_arrived += num_arrivals

    def observe_step(self, num_rows: int, num_committed: int, latency_s: float) -> None:
        self.step_latency_s = latency_s
        if num_committed:
            tpot = latency_s * num_rows / num_committed
            self.tpot_ema_s = tpot if not self._has_tpot else self.tpot_ema_s + self.ema_alpha * (tpot - self.tpot_ema_s)
            self._has_tpot = True

    def observe_first_token(self, ttft_s: float) -> None:
        self.ttft_ema_s = ttft_s if not self._has_ttft else self.ttft_ema_s + self.ema_alpha * (ttft_s - self.ttft_ema_s)
        self._has_ttft = True

    def observe_finish(self, arrival: float, first_token: float | None, finish: float, num_output: int) -> bool:
        """Count a finished request; True when it missed the TTFT or the mean-TPOT SLO."""
        self.num_finished += 1
        ttft = (first_token if first_token is not None else finish) - arrival
        tpot = (finish - first_token) / (num_output - 1) if first_token is not None and num_output > 1 else 0.0
        violated = ttft > self.slo_ttft_s or tpot > self.slo_tpot_s
        self.num_violations += violated
        return violated

    @property
    def tpot_slack_s(self) -> float:
        return self.slo_tpot_s - self.tpot_ema_s

    @property
    def ttft_slack_s(self) -> float:
        return self.slo_ttft_s - self.ttft_ema_s

    def observe_rows(self, rows: Iterable[tuple[object | None, int]], latency_s: float,
                     slo_penalty: float) -> StepOutcome:
        """One step's rows as (request, tokens it committed): first tokens, finished requests
        against the SLO, the step's latency; and the reward the environment and the server's
        decision log give it. A row's request may be None (unknown: its tokens still count)."""
        num_rows = num_committed = num_finished = num_violations = 0
        for request, num_new in rows:
            num_rows += 1
            num_committed += num_new
            if request is None:
                continue
            if num_new and len(request.output_token_ids) == num_new:      # its first tokens
                self.observe_first_token(request.first_token_time - request.arrival_time)
            if request.is_finished:
                num_finished += 1
                num_violations += self.observe_finish(request.arrival_time, request.first_token_time,
                                                      request.finish_time, len(request.output_token_ids))
        self.observe_step(num_rows, num_committed, latency_s)
        reward = (num_committed / latency_s if latency_s > 0 else 0.0) - slo_penalty * num_violations
        return StepOutcome(float(reward), num_committed, latency_s, num_rows, num_finished, num_violations)
