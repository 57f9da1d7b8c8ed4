"""Online correction of the cost model: what each decision really costs and yields at this load.

The cost model predicts a step's seconds from a latency profile measured once (engine/step_time.py)
and its committed tokens from acceptance (engine/expectation.py). The machine the server runs on,
under the load it serves, may differ: other work on the cores, a drafter slower than profiled, a
batch whose rows commit fewer tokens than the pooled acceptance says. `OnlineCorrection` keeps, per
(decision, batch bucket), the ratio of observed to predicted step seconds and of observed to
predicted committed tokens per row, and the router scores with the corrected figures once a cell
has `min_observations` steps. A decision not yet observed at a bucket is taken to be off in time
by as much as plain decoding is there: much of a profile's error is the machine's, shared by all.

Averaging: an exponential moving average (weight `alpha`; the first steps a running mean, so the
start is not pulled towards 1), not a windowed median: O(1) memory and work per step, nothing
sorted on the decision path, and it forgets at a known rate (half-life ln 2 / alpha, under 3 steps
at 0.25), so an action comes back soon after its feed turns honest. The `min_observations` gate
keeps a single outlier (a pause) from acting alone at the start.

Plain decoding is observed the same way, so the comparison is live: an observed decision whose
corrected time per token at this batch is not below plain's (plain's corrected figures, or its
prediction before plain has run here) by the cost model's margin `min_gain` is excluded, scored as
plain, so it stops being chosen (the margin keeps a decision that would not win anyway from being
stranded between "excluded" and "chosen", never run and so never re-measured). A decision that is
not chosen is not observed, so in a bucket that has excluded decisions an `exploration` share of the
decisions (a seeded `random.Random`: runs repeat) tries the best excluded one instead: the evidence
that can bring it back.

Buckets: batch 1, 2-3, 4-7, 8-15, 16+. Within a bucket the profile's own dependence on the batch is
kept; only its error is taken as shared.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from engine.batch_view import StepFeedback
from engine.decision import Decision

NUM_BUCKETS = 5


def batch_bucket(batch: int) -> int:
    """The bucket of a batch size: 0 for 1, 1 for 2-3, 2 for 4-7, 3 for 8-15, 4 for 16 and more."""
    return min(max(batch, 1).bit_length() - 1, NUM_BUCKETS - 1)


@dataclass(frozen=True)
class OnlineCorrectionConfig:
    """Args:
        enabled: correct the cost model online (off: the profile's predictions alone, for A/B runs).
        alpha: EMA weight of the newest step.
        min_observations: steps a (decision, bucket) needs before its correction is used.
        exploration: share of the decisions in a bucket with excluded decisions that tries the best of them.
        seed: the exploration's random generator.
    """

    enabled: bool = True
    alpha: float = 0.25
    min_observations: int = 8
    exploration: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.min_observations < 1:
            raise ValueError(f"min_observations must be >= 1, got {self.min_observations}")
        if not 0 <= self.exploration < 1:
            raise ValueError(f"exploration must be in [0, 1), got {self.exploration}")


@dataclass
class CorrectionCell:
    """Observed / predicted step seconds and committed tokens per row of one (decision, bucket)."""

    time_ratio: float = 1.0
    token_ratio: float = 1.0
    num_observed: int = 0

    def observe(self, time_ratio: float, token_ratio: float, alpha: float) -> None:
        self.num_observed += 1
        w = max(alpha, 1.0 / self.num_observed)
        self.time_ratio += w * (time_ratio - self.time_ratio)
        self.token_ratio += w * (token_ratio - self.token_ratio)


class OnlineCorrection:
    """Corrections of one cost model's `decisions` (in its order), fed by the steps the router chose.

    `correct` before a decision; `expect` with the raw prediction of what was chosen; `observe`
    with the step's feedback. Steps the router did not choose (another router's, a mixed per-row
    batch, rows dropped before running) are not counted.
    """

    def __init__(self, decisions: Sequence[Decision], config: OnlineCorrectionConfig = OnlineCorrectionConfig(),
                 margin: float = 0.0):
        self.decisions = list(decisions)
        self.config = config
        self.margin = margin        # the cost model's min_gain
        self.plain = next((i for i, d in enumerate(self.decisions) if d.is_plain), None)
        self.cells = [[CorrectionCell() for _ in self.decisions] for _ in range(NUM_BUCKETS)]
        self.rng = random.Random(config.seed)
        self.num_explored = 0
        self._pending: tuple[int, int, float, float] | None = None     # index, batch, tokens, seconds

    def cell(self, decision: Decision, batch: int) -> CorrectionCell:
        return self.cells[batch_bucket(batch)][self.decisions.index(decision)]

    def correct(self, batch: int, tokens: Sequence[float], times: Sequence[float]
                ) -> tuple[list[float], list[float], int | None]:
        """Corrected (tokens per row, step seconds) of every decision, excluded ones scored as
        plain, and the index of the excluded decision to explore this step (None: choose as usual)."""
        cells, n, plain = self.cells[batch_bucket(batch)], self.config.min_observations, self.plain
        # an unobserved decision's time is taken as off by as much as plain's (the machine's share of the error)
        base = cells[plain].time_ratio if plain is not None and cells[plain].num_observed >= n else 1.0
        tokens = [t * c.token_ratio if c.num_observed >= n else t for t, c in zip(tokens, cells)]
        times = [t * (c.time_ratio if c.num_observed >= n else base) for t, c in zip(times, cells)]
        if plain is None:
            return tokens, times, None
        threshold = times[plain] / tokens[plain] * (1 - self.margin)
        excluded = [i for i, c in enumerate(cells)
                    if i != plain and c.num_observed >= n and times[i] / tokens[i] > threshold]
        if not excluded:
            return tokens, times, None
        explore = None
        if self.rng.random() < self.config.exploration:
            explore = min(excluded, key=lambda i: times[i] / tokens[i])
            self.num_explored += 1
        tokens_, times_ = tokens[:], times[:]
        for i in excluded:
            tokens_[i], times_[i] = tokens[plain], times[plain]
        return tokens_, times_, explore

    def expect(self, index: int, batch: int, tokens: float, seconds: float) -> None:
        """The raw prediction (tokens per row, step seconds) of decision `index`, the router's choice."""
        self._pending = (index, batch, tokens, seconds)

    def observe(self, feedback: StepFeedback) -> None:
        """Fold a step into its cell when it ran the decision `expect` was told, on that batch."""
        pending, self._pending = self._pending, None
        if pending is None or feedback.latency_s <= 0:
            return
        i, batch, tokens, seconds = pending
        decision = self.decisions[i]
        observed_tokens = sum(feedback.num_committed) / batch
        if feedback.batch_size != batch or observed_tokens <= 0 or any(d != decision for d in feedback.decisions):
            return
        self.cells[batch_bucket(batch)][i].observe(feedback.latency_s / seconds, observed_tokens / tokens,
                                                   self.config.alpha)
