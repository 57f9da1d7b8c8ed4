"""Per (pair, category) acceptance models fitted on real engine steps, sampled by the simulator.

The model is a position-wise acceptance curve: a_j = P(proposed token j is accepted | tokens
0..j-1 were), counted from every PairOutcome (j < accepted: accepted; j = accepted < proposed:
rejected). It handles any draft length, keeps the shape real drafters have (prompt lookup is
all-or-nothing: a low a_0, a high a_1..), and reproduces the mean accepted length at the K it
was fitted on. Categories with few observations shrink towards the pair's pooled curve.
Model-free first levels may propose fewer than K tokens (no match): that is modelled as
P(non-empty) and P(full | non-empty) per category, a partial proposal being uniform in 1..K-1.

Per-step draft signals: a model-free drafter's signal before the step (`ModelFreeDrafter.signal`,
0..SIGNAL_LEVELS) is fitted as a distribution per (drafter, category), and its proposals and
first pair's acceptance are fitted per `signal_key(category, signal)`, "category|signal". Such a
key shrinks towards the same signal pooled over categories ("*|signal"), then the pair's pooled
curve; a plain category reads all of its signal keys merged. So the simulator draws a row's
signal, shows it to the router, and draws that step's proposal and acceptance given it, as the
real drafter's match length foretells its acceptance.

Draft confidence: per pair whose drafter is a model level, the histogram of its drafted tokens'
top-1 probability (`engine.draft_stop.ConfidenceHistogram`), from which a p_min threshold's
(c, lift) are read (`stop_rates`): the simulator stops a draft with probability 1 - c per token
and scales the pair's curve by lift. Files written before it have none: the threshold is then
neutral, as the cost model's prior is.
"""

from __future__ import annotations

import bisect

import numpy as np

from engine.draft_stop import ConfidenceHistogram, stop_rates
from env.acceptance_counts import POOLED, PositionCounts, ProposalCounts, split_key

PRIOR_TRIALS = 8.0          # pseudo-observations pulling a category towards the pooled curve


class AcceptanceModel:
    """Fit with `observe_*`, save with `to_json`, sample with `sample_accepted` / `sample_proposed`."""

    def __init__(self):
        self.pairs: dict[str, dict[str, PositionCounts]] = {}
        self.proposers: dict[str, dict[str, ProposalCounts]] = {}
        self.signals: dict[str, dict[str, list[int]]] = {}    # drafter -> category -> count per signal
        self.odds_factors: dict[str, float] = {}        # pair -> factor on each a_j's odds (`perturbed`)
        self.confidence: dict[str, ConfidenceHistogram] = {}   # pair -> its drafter's confidence histogram
        self._curves: dict[tuple[str, str], list[float]] = {}
        self._cdfs: dict[tuple[str, str, int], list[float] | None] = {}
        self._proposal_rates: dict[tuple[str, str], tuple[float, float]] = {}

    # ---- fitting ---------------------------------------------------------------------------
    def observe_pair(self, pair: str, category: str, num_proposed: int, num_accepted: int) -> None:
        if num_proposed:
            self.pairs.setdefault(pair, {}).setdefault(category, PositionCounts()).observe(num_proposed, num_accepted)
            self._invalidate()

    def observe_proposal(self, drafter: str, category: str, num_requested: int, num_proposed: int) -> None:
        if num_requested:
            self.proposers.setdefault(drafter, {}).setdefault(category, ProposalCounts()).observe(num_requested, num_proposed)
            self._invalidate()

    def observe_confidences(self, pair: str, confidences: list[float] | None, num_proposed: int,
                            num_accepted: int) -> None:
        """A first pair's `PairOutcome.confidences` (None for a model-free drafter: nothing kept)."""
        if confidences is not None:
            self.confidence.setdefault(pair, ConfidenceHistogram()).observe(confidences, num_proposed, num_accepted)

    def confidence_histograms(self) -> dict[str, dict]:
        """Pair -> its fitted histogram as the trackers show one (their confidence priors)."""
        return {pair: histogram.to_dict() for pair, histogram in self.confidence.items()}

    def stop_rates(self, pair: str, p_min: float) -> tuple[float, float]:
        """(c, lift) of threshold `p_min` on `pair` (`engine.draft_stop.stop_rates`)."""
        return stop_rates(self.confidence.get(pair), p_min)

    def observe_signal(self, drafter: str, category: str, signal: int) -> None:
        counts = self.signals.setdefault(drafter, {}).setdefault(category, [])
        counts.extend([0] * (signal + 1 - len(counts)))
        counts[signal] += 1
        self._invalidate()

    def _invalidate(self) -> None:
        self._curves.clear()
        self._cdfs.clear()
        self._proposal_rates.clear()

    def perturbed(self, odds_factors: dict[str, float]) -> AcceptanceModel:
        """The same fit with each pair's a_j odds multiplied by a factor: a drafter that agrees
        more or less often than measured (domain randomisation), its curve's shape kept."""
        model = AcceptanceModel()
        model.pairs, model.proposers, model.signals = self.pairs, self.proposers, self.signals   # shared, read only
        model.confidence = self.confidence
        model.odds_factors = dict(odds_factors)
        return model

    # ---- serialisation ---------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "pairs": {p: {c: vars(k).copy() for c, k in cats.items()} for p, cats in self.pairs.items()},
            "proposers": {d: {c: vars(k).copy() for c, k in cats.items()} for d, cats in self.proposers.items()},
            "signals": {d: {c: list(k) for c, k in cats.items()} for d, cats in self.signals.items()},
            "confidence": {p: h.to_dict() for p, h in self.confidence.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> AcceptanceModel:
        model = cls()
        for pair, cats in data.get("pairs", {}).items():
            model.pairs[pair] = {c: PositionCounts(**k) for c, k in cats.items()}
        for drafter, cats in data.get("proposers", {}).items():
            model.proposers[drafter] = {c: ProposalCounts(**k) for c, k in cats.items()}
        for drafter, cats in data.get("signals", {}).items():
            model.signals[drafter] = {c: [int(n) for n in k] for c, k in cats.items()}
        for pair, histogram in data.get("confidence", {}).items():      # absent from older files
            model.confidence[pair] = ConfidenceHistogram.from_dict(histogram)
        return model

    # ---- the fitted curves -----------------------------------------------------------------
    def has_pair(self, pair: str) -> bool:
        return any(k.num_observed for k in self.pairs.get(pair, {}).values())

    def _pooled(self, pair: str, keep=lambda key: True) -> PositionCounts:
        pooled = PositionCounts()
        for key, counts in self.pairs[pair].items():
            if keep(key):
                pooled = pooled.merged(counts)
        return pooled

    def _own(self, pair: str, key: str) -> PositionCounts:
        """A signal key's own counts; a plain category's merged over its signal keys."""
        if split_key(key)[1] is not None:
            return self.pairs[pair].get(key, PositionCounts())
        return self._pooled(pair, lambda k: split_key(k)[0] == key)

    def _prior_curve(self, pair: str, key: str) -> list[float]:
        """What a key shrinks towards: its signal pooled over categories, else the pair's pooled curve."""
        signal = split_key(key)[1]
        pooled = self._pooled(pair, lambda k: split_key(k)[1] == signal) if signal is not None else PositionCounts()
        if not pooled.num_observed:
            pooled = self._pooled(pair)
        return [(a + 0.5) / (t + 1.0) for t, a in zip(pooled.trials, pooled.accepts)]

    def curve(self, pair: str, category: str) -> list[float]:
        """a_j for j = 0..J-1; positions past J reuse a_{J-1}."""
        key = (pair, category)
        if key not in self._curves:
            if not self.has_pair(pair):
                raise KeyError(f"the acceptance model has no observations of {pair!r}; "
                               f"fitted pairs: {', '.join(sorted(p for p in self.pairs if self.has_pair(p)))}")
            base = self._prior_curve(pair, category)
            own = self._own(pair, category)
            curve = []
            for j, prior in enumerate(base):
                t = own.trials[j] if j < len(own.trials) else 0
                a = own.accepts[j] if j < len(own.accepts) else 0
                curve.append((a + PRIOR_TRIALS * prior) / (t + PRIOR_TRIALS))
            factor = self.odds_factors.get(pair, 1.0)
            if factor != 1.0:
                curve = [factor * a / (1.0 - a + factor * a) for a in curve]
            self._curves[key] = curve
        return self._curves[key]

    def per_token_acceptance(self) -> dict[str, float]:
        """Pooled P(accept a proposed token | the ones before it were), per fitted pair: the
        trackers' estimate, so it seeds their priors (a router then starts from measured
        acceptance instead of a guess it may never test). As in the trackers, an empty proposal
        of a model-free first level is one rejected trial: the pair's non-empty observations
        come with the drafter's pooled share of empty ones."""
        rates = {}
        for pair in self.pairs:
            if self.has_pair(pair):
                pooled = self._pooled(pair)
                p_nonempty, _ = self.proposal_rates(pair.partition(">")[0], POOLED)
                empty = pooled.num_observed * (1.0 - p_nonempty) / p_nonempty
                rates[pair] = sum(pooled.accepts) / (sum(pooled.trials) + empty)
        return rates

    def mean_acceptance(self, pair: str, category: str = POOLED) -> float:
        """Token-level acceptance rate (accepted / proposed tokens), for reports."""
        counts = self._pooled(pair) if category == POOLED else self._own(pair, category)
        return counts.num_accepted_tokens / counts.num_proposed_tokens if counts.num_proposed_tokens else 0.0

    def _cdf(self, pair: str, category: str, num_proposed: int, lift: float = 1.0) -> list[float]:
        key = (pair, category, num_proposed) if lift == 1.0 else (pair, category, num_proposed, lift)
        cdf = self._cdfs.get(key)
        if cdf is None:
            curve = self.curve(pair, category)
            survive, total, cdf = 1.0, 0.0, []
            for j in range(num_proposed):
                a = min(curve[min(j, len(curve) - 1)] * lift, 1.0)
                total += survive * (1.0 - a)          # P(accepted == j)
                cdf.append(total)
                survive *= a
            cdf.append(1.0)                           # P(accepted == num_proposed) closes it
            self._cdfs[key] = cdf
        return cdf

    def sample_accepted(self, pair: str, category: str, num_proposed: int, uniform: float, lift: float = 1.0) -> int:
        """Accepted count for `num_proposed` tokens, by inverting the CDF at `uniform` in [0, 1);
        `lift` scales every a_j (a p_min threshold's, `stop_rates`)."""
        if num_proposed <= 0:
            return 0
        return bisect.bisect_right(self._cdf(pair, category, num_proposed, lift), uniform)

    def proposal_rates(self, drafter: str, category: str) -> tuple[float, float]:
        """(P(non-empty), P(full | non-empty)); a model drafter (no record) always proposes all K."""
        key = (drafter, category)
        rates = self._proposal_rates.get(key)
        if rates is None:
            cats = self.proposers.get(drafter)
            if not cats:
                rates = (1.0, 1.0)
            else:
                name, signal = split_key(category)
                pooled = ProposalCounts()
                for counts in (c for k, c in cats.items() if signal is None or split_key(k)[1] == signal):
                    pooled = pooled.merged(counts)
                if not pooled.num_steps:                     # an unseen signal: all of the drafter's steps
                    for counts in cats.values():
                        pooled = pooled.merged(counts)
                own = ProposalCounts()
                for fitted, counts in cats.items():
                    if fitted == category or (signal is None and split_key(fitted)[0] == name):
                        own = own.merged(counts)
                p_nonempty = (pooled.num_nonempty + 0.5) / (pooled.num_steps + 1.0)
                p_full = (pooled.num_full + 0.5) / (pooled.num_nonempty + 1.0)
                rates = ((own.num_nonempty + PRIOR_TRIALS * p_nonempty) / (own.num_steps + PRIOR_TRIALS),
                         (own.num_full + PRIOR_TRIALS * p_full) / (own.num_nonempty + PRIOR_TRIALS))
            self._proposal_rates[key] = rates
        return rates

    def sample_proposed(self, drafter: str, category: str, num_requested: int, u_nonempty: float, u_full: float) -> int:
        """Tokens a first level proposes when asked for `num_requested`, from two uniforms in [0, 1)."""
        if num_requested <= 0:
            return 0
        p_nonempty, p_full = self.proposal_rates(drafter, category)
        if u_nonempty >= p_nonempty:
            return 0
        if num_requested == 1 or u_full < p_full:
            return num_requested
        partial = (u_full - p_full) / (1.0 - p_full)           # uniform in [0, 1) given not full
        return 1 + min(int(partial * (num_requested - 1)), num_requested - 2)

    # ---- per-step draft signals --------------------------------------------------------------
    def has_signals(self, drafter: str) -> bool:
        return any(sum(k) for k in self.signals.get(drafter, {}).values())

    def signal_distribution(self, drafter: str, category: str) -> list[float]:
        """P(signal = s) for s = 0.. of `drafter` on `category`, shrunk towards its pooled one."""
        cats = self.signals[drafter]
        width = max(len(k) for k in cats.values())
        pooled = [sum(k[s] if s < len(k) else 0 for k in cats.values()) for s in range(width)]
        prior = [(n + 0.5) / (sum(pooled) + 0.5 * width) for n in pooled]
        own = cats.get(category, [])
        total = sum(own)
        return [((own[s] if s < len(own) else 0) + PRIOR_TRIALS * prior[s]) / (total + PRIOR_TRIALS)
                for s in range(width)]

    def sample_signal(self, drafter: str, category: str, uniform: float) -> int | None:
        """A signal drawn for one row and step, or None when the drafter's signals were not fitted."""
        key = (drafter, category, -1)
        if key not in self._cdfs:                # the simulator's hot path: one lookup per draw
            self._cdfs[key] = np.cumsum(self.signal_distribution(drafter, category)).tolist() \
                if self.has_signals(drafter) else None
        cdf = self._cdfs[key]
        return None if cdf is None else min(bisect.bisect_right(cdf, uniform * cdf[-1]), len(cdf) - 1)
