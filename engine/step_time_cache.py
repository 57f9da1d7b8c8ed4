"""The cost model's step times, cached off the decision's path.

`engine.step_time.step_time` walks a step's forward groups through the latency profile; a router
that re-priced every decision whenever the batch's mean context crossed a 16-token bucket paid it
on the decision's path every few steps (its p99). Here uniform batches are priced at `knot`-token
context multiples and interpolated between (the profile is linear in context between its grid
points), and `warm` prices every batch and knot a server can see at start-up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from engine.decision import Decision
from engine.step_time import step_time

MAX_CACHED = 1 << 17       # a server's warm-up holds ~10k entries


def _odds(stops: Sequence[tuple[float, float]]) -> tuple[float, ...]:
    """The cache key of the thresholds: each decision's c, to 0.01."""
    return tuple(round(c, 2) for c, _ in stops)


class StepTimeCache:
    """Step seconds of `decisions` on `profile`, cached; `knot`: the context interpolation step."""

    def __init__(self, profile, decisions: Sequence[Decision], knot: int):
        self.profile, self.decisions, self.knot = profile, list(decisions), knot
        self._times: dict[tuple, object] = {}

    def _cached(self, key: tuple, decisions: Sequence[Decision], context: int, continue_odds=None) -> float:
        seconds = self._times.get(key)
        if seconds is None:
            if len(self._times) >= MAX_CACHED:
                self._times.clear()
            seconds = self._times[key] = step_time(self.profile, decisions, context, continue_odds)
        return seconds

    def uniform(self, decision: Decision, batch: int, context: int, continue_odds: float = 1.0) -> float:
        """Seconds of one step of `decision` for `batch` rows at context `context` (threshold c `continue_odds`)."""
        return self._cached((decision, batch, context, continue_odds), [decision] * batch, context,
                            [continue_odds] * batch)

    def mixed(self, decisions: Sequence[Decision], context: int, continue_odds=None) -> float:
        """Seconds of one step whose row i runs `decisions[i]` (threshold c `continue_odds[i]`, default 1)."""
        odds = list(continue_odds or [1.0] * len(decisions))
        key = ("mixed", tuple(sorted(Counter(zip(decisions, odds)).items(), key=lambda item: item[0][0].label)), context)
        return self._cached(key, decisions, context, odds)

    def every(self, batch: int, context: int, stops: Sequence[tuple[float, float]]) -> list[float]:
        """Every decision's uniform step seconds (its threshold's (c, lift) in `stops`, c to 0.01),
        interpolated between the knots either side of `context`."""
        odds = _odds(stops)
        low, offset = divmod(context, self.knot)
        below = self._at_knot(batch, low * self.knot, odds)
        if not offset:
            return below
        above, w = self._at_knot(batch, (low + 1) * self.knot, odds), offset / self.knot
        return [a + w * (b - a) for a, b in zip(below, above)]

    def _at_knot(self, batch: int, context: int, odds: tuple[float, ...]) -> list[float]:
        key = (batch, context, odds)
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = [self.uniform(d, batch, context, c) for d, c in zip(self.decisions, odds)]
        return times

    def warm(self, max_batch: int, max_context: int, stops: Sequence[tuple[float, float]]) -> int:
        """Price every batch 1..max_batch at every knot up to max_context; returns the lists priced."""
        odds = _odds(stops)
        knots = range(0, max_context + self.knot, self.knot)
        for batch in range(1, max_batch + 1):
            for knot in knots:
                self._at_knot(batch, knot, odds)
        return max_batch * len(knots)
