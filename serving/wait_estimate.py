"""How long a refused client should wait (Retry-After): the queue ahead of it replayed on the
batch's slots at the observed per-request service time.

`WaitEstimator` observes each engine step on the engine thread: the per-request service time
(EWMA of the time from a request's first step in the batch to its end, which reflects the
current batch size and how early requests really stop), that time per output token, the time
one row takes per output token in a step, and the requests running and waiting. `expected_wait_s(n, num_promised)` replays that
queue, plus `num_promised` clients told earlier to come back (`serving/retry_after.py`), on
`max_batch` slots, first come first served, and returns when the (num_promised + n)-th place
frees. A job lasts the service time (what is left of it, for a running request), never more
than its remaining max_tokens allow.
"""

from __future__ import annotations

import heapq
import time

from engine import Engine, RequestOutput


class WaitEstimator:
    """Args:
        max_batch: rows decoded together (the slots the replay fills).
        smoothing: weight of the newest observation in each EWMA.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, max_batch: int, smoothing: float = 0.2, clock=time.monotonic):
        if max_batch <= 0 or not 0 < smoothing <= 1:
            raise ValueError("max_batch must be > 0 and smoothing in (0, 1]")
        self.max_batch = max_batch
        self.smoothing = smoothing
        self.clock = clock
        self.seconds_per_token: float | None = None
        self.seconds_per_request: float | None = None
        self.seconds_per_request_token: float | None = None     # a finished request's service time per token
        self._started: dict[str, float] = {}           # request id -> when it first ran in the batch
        self._running: tuple[tuple[int, float], ...] = ()     # (tokens left, seconds run) per running request
        self._waiting: tuple[int, ...] = ()         # tokens each waiting request may need, in order

    def _smooth(self, previous: float | None, sample: float) -> float:
        return sample if previous is None else self.smoothing * sample + (1 - self.smoothing) * previous

    def observe_step(self, engine: Engine, outputs: list[RequestOutput]) -> None:
        now = self.clock()
        step = engine.last_step
        if step.batch_size and step.num_committed:
            self.seconds_per_token = self._smooth(self.seconds_per_token,
                                                  step.latency_s / (step.num_committed / step.batch_size))
        for output in outputs:
            started = self._started.pop(output.request_id, None) if output.finished else None
            if started is not None:
                self.seconds_per_request = self._smooth(self.seconds_per_request, now - started)
                self.seconds_per_request_token = self._smooth(
                    self.seconds_per_request_token, (now - started) / max(len(output.output_token_ids), 1))
        scheduler = engine.scheduler
        running_ids = {r.request_id for r in scheduler.running}
        self._started = {rid: t for rid, t in self._started.items() if rid in running_ids}
        for request_id in running_ids:
            self._started.setdefault(request_id, now - step.latency_s)
        self._running = tuple((max(r.params.max_tokens - len(r.output_token_ids), 0), now - self._started[r.request_id])
                              for r in scheduler.running)
        self._waiting = tuple(max(r.params.max_tokens - len(r.output_token_ids), 0) for r in scheduler.waiting)

    def observe_removed(self, request_id: str) -> None:
        self._started.pop(request_id, None)

    def _job_s(self, tokens_left: int, seconds_run: float = 0.0) -> float:
        """Expected seconds left of one request: the service time less what it has run, within its
        token bound. Once requests have finished, the bound uses their time per token, which holds
        over a whole request (a step's rate swings with how well the drafts are doing)."""
        per_token = self.seconds_per_request_token or self.seconds_per_token
        bound = tokens_left * per_token
        if self.seconds_per_request is None:
            return bound
        return min(bound, max(self.seconds_per_request - seconds_run, per_token))

    def expected_wait_s(self, num_needed: int = 1, num_promised: int = 0) -> float | None:
        """Seconds until `num_promised + num_needed` places have freed (None: no step observed yet)."""
        if self.seconds_per_token is None:
            return None
        running, waiting = self._running, self._waiting      # one consistent snapshot (tuples swap whole)
        finishes = [self._job_s(tokens, run) for tokens, run in running]
        slots = finishes + [0.0] * max(self.max_batch - len(finishes), 0)
        heapq.heapify(slots)
        durations = [self._job_s(tokens) for tokens in waiting]
        promised_s = self.seconds_per_request or (sum(durations + finishes) / max(len(durations + finishes), 1))
        for duration in durations + [promised_s] * num_promised:
            start = heapq.heappop(slots)
            heapq.heappush(slots, start + duration)
            finishes.append(start + duration)
        if not finishes:
            return 0.0
        finishes.sort()
        return finishes[min(num_promised + num_needed, len(finishes)) - 1]
