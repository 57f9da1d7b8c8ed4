"""How long a refused client should wait (Retry-After): the queue's expected wait, not a guess.

`WaitEstimator` observes each engine step on the engine thread: the time one row takes per
output token (EWMA of step latency / tokens committed per row) and each request's remaining
tokens, running and waiting. `expected_wait_s(n)` replays that queue on `max_batch` slots,
first come first served, and returns when the n-th request will have finished, which is when
a client needing n sequences finds room. Requests that stop early (EOS, stop strings) make it
an overestimate, so it is capped.
"""

from __future__ import annotations

import heapq

from engine import Engine, RequestOutput


class WaitEstimator:
    """Args:
        max_batch: rows decoded together (the slots the replay fills).
        smoothing: weight of the newest step in the per-token time (EWMA).
    """

    def __init__(self, max_batch: int, smoothing: float = 0.2):
        if max_batch <= 0 or not 0 < smoothing <= 1:
            raise ValueError("max_batch must be > 0 and smoothing in (0, 1]")
        self.max_batch = max_batch
        self.smoothing = smoothing
        self.seconds_per_token: float | None = None
        self._running: tuple[int, ...] = ()         # remaining tokens of each running request
        self._waiting: tuple[int, ...] = ()         # tokens each waiting request will need, in order

    def observe_step(self, engine: Engine, outputs: list[RequestOutput]) -> None:
        step = engine.last_step
        if step.batch_size and step.num_committed:
            per_token = step.latency_s / (step.num_committed / step.batch_size)
            previous = self.seconds_per_token
            self.seconds_per_token = per_token if previous is None else (
                self.smoothing * per_token + (1 - self.smoothing) * previous)
        scheduler = engine.scheduler
        self._running = tuple(max(r.params.max_tokens - len(r.output_token_ids), 0) for r in scheduler.running)
        self._waiting = tuple(max(r.params.max_tokens - len(r.output_token_ids), 0) for r in scheduler.waiting)

    def expected_wait_s(self, num_needed: int = 1) -> float | None:
        """Seconds until `num_needed` of the requests now in the engine have finished (None: no data yet)."""
        if self.seconds_per_token is None:
            return None
        per_token = self.seconds_per_token
        running, waiting = self._running, self._waiting      # one consistent snapshot (tuples swap whole)
        slots = sorted(tokens * per_token for tokens in running)
        finishes = list(slots)
        slots += [0.0] * max(self.max_batch - len(slots), 0)
        heapq.heapify(slots)
        for tokens in waiting:
            start = heapq.heappop(slots)
            heapq.heappush(slots, start + tokens * per_token)
            finishes.append(start + tokens * per_token)
        if not finishes:
            return 0.0
        finishes.sort()
        return finishes[min(num_needed, len(finishes)) - 1]
