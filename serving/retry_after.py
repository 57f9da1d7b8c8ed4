"""Retry-After a retrying client can live by: each refusal is a promise of a later place.

When the server is full, every refused client is told when a place should be free for it.
Telling all of them "when the next place frees" sends them back together: one gets in, the
rest are refused again, and at 5x oversubscription some run out of tries. So each refusal
is remembered as a promise (the time the client should come back) and the next client is
placed behind the promises still outstanding: its Retry-After is when the place after theirs
frees (`WaitEstimator.expected_wait_s(n, num_promised)`).

The server cannot tell a returning client from a new one, so an arrival consumes the
earliest promise that has come due (it is most likely that client's); promises nobody came
back for lapse `lapse_s` after they came due. Used on the event loop only.
"""

from __future__ import annotations

import bisect
import math
import time

from serving.wait_estimate import WaitEstimator

MAX_RETRY_AFTER_S = 60


class RetryPromises:
    """Args:
        estimator: the queue's expected wait (observed on the engine thread).
        lapse_s: how long after it came due a promise nobody came back for is kept.
        clock: seconds, monotonic.
    """

    def __init__(self, estimator: WaitEstimator | None, lapse_s: float = 2.0, clock=time.monotonic):
        self.estimator = estimator
        self.lapse_s = lapse_s
        self.clock = clock
        self._due: list[float] = []         # when each refused client should come back, sorted

    @property
    def num_outstanding(self) -> int:
        return len(self._due)

    def observe_arrival(self) -> None:
        """A request arrived: forget lapsed promises and consume the earliest one that came due."""
        now = self.clock()
        lapsed = bisect.bisect_left(self._due, now - self.lapse_s)
        del self._due[:lapsed]
        if self._due and self._due[0] <= now:
            self._due.pop(0)

    def refuse(self, num_needed: int) -> int:
        """Whole seconds (1 to MAX_RETRY_AFTER_S) until `num_needed` places should be free for a
        client queued behind the outstanding promises; remembered as a promise of its own."""
        estimate = None if self.estimator is None else self.estimator.expected_wait_s(num_needed, len(self._due))
        seconds = int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(estimate if estimate is not None else 1.0))))
        bisect.insort(self._due, self.clock() + seconds)
        return seconds
