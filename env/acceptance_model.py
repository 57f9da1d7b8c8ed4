"""Per (pair, category) acceptance models fitted on real engine steps, sampled by the simulator.

The model is a position-wise acceptance curve: a_j = P(proposed token j is accepted | tokens
0..j-1 were), counted from every PairOutcome (j < accepted: accepted; j = accepted < proposed:
rejected). It handles any draft length, keeps the shape real drafters have (prompt lookup is
all-or-nothing: a low a_0, a high a_1..), and reproduces the mean accepted length at the K it
was fitted on. Categories with few observations shrink towards the pair's pooled curve.
Model-free first levels may propose fewer than K tokens (no match): that is modelled as
P(non-empty) and P(full | non-empty) per category, a partial proposal being uniform in 1..K-1.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

POOLED = "*"
PRIOR_TRIALS = 8.0          # pseudo-observations pulling a category towards the pooled curve


@dataclass
class PositionCounts:
    """Sufficient statistics of one acceptance curve."""

    trials: list[int] = field(default_factory=list)
    accepts: list[int] = field(default_factory=list)
    num_proposed_tokens: int = 0
    num_accepted_tokens: int = 0

    def observe(self, num_proposed: int, num_accepted: int) -> None:
        self.num_proposed_tokens += num_proposed
        self.num_accepted_tokens += num_accepted
        reached = min(num_accepted + 1, num_proposed)       # positions that were judged
        while len(self.trials) < reached:
            self.trials.append(0)
            self.accepts.append(0)
        for j in range(reached):
            self.trials[j] += 1
            self.accepts[j] += j < num_accepted

    def merged(self, other: PositionCounts) -> PositionCounts:
        n = max(len(self.trials), len(other.trials))
        pad = lambda xs: xs + [0] * (n - len(xs))
        return PositionCounts([a + b for a, b in zip(pad(self.trials), pad(other.trials))],
                              [a + b for a, b in zip(pad(self.accepts), pad(other.accepts))],
                              self.num_proposed_tokens + other.num_proposed_tokens,
                              self.num_accepted_tokens + other.num_accepted_tokens)

    @property
    def num_observed(self) -> int:
        return self.trials[0] if self.trials else 0


@dataclass
class ProposalCounts:
    """How often a model-free first level proposed nothing, all K, or part of K."""

    num_steps: int = 0
    num_nonempty: int = 0
    num_full: int = 0

    def observe(self, num_requested: int, num_proposed: int) -> None:
        self.num_steps += 1
        self.num_nonempty += num_proposed > 0
        self.num_full += num_proposed >= num_requested

    def merged(self, other: ProposalCounts) -> ProposalCounts:
        return ProposalCounts(self.num_steps + other.num_steps, self.num_nonempty + other.num_nonempty,
                              self.num_full + other.num_full)


class AcceptanceModel:
    """Fit with `observe_*`, save with `to_json`, sample with `sample_accepted` / `sample_proposed`."""

    def __init__(self):
        self.pairs: dict[str, dict[str, PositionCounts]] = {}
        self.proposers: dict[str, dict[str, ProposalCounts]] = {}
        self._curves: dict[tuple[str, str], list[float]] = {}
        self._cdfs: dict[tuple[str, str, int], list[float]] = {}
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

    def _invalidate(self) -> None:
        self._curves.clear()
        self._cdfs.clear()
        self._proposal_rates.clear()

    # ---- serialisation ---------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "pairs": {p: {c: vars(k).copy() for c, k in cats.items()} for p, cats in self.pairs.items()},
            "proposers": {d: {c: vars(k).copy() for c, k in cats.items()} for d, cats in self.proposers.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> AcceptanceModel:
        model = cls()
        for pair, cats in data.get("pairs", {}).items():
            model.pairs[pair] = {c: PositionCounts(**k) for c, k in cats.items()}
        for drafter, cats in data.get("proposers", {}).items():
            model.proposers[drafter] = {c: ProposalCounts(**k) for c, k in cats.items()}
        return model

    # ---- the fitted curves -----------------------------------------------------------------
    def has_pair(self, pair: str) -> bool:
        return any(k.num_observed for k in self.pairs.get(pair, {}).values())

    def _pooled(self, pair: str) -> PositionCounts:
        pooled = PositionCounts()
        for counts in self.pairs[pair].values():
            pooled = pooled.merged(counts)
        return pooled

    def curve(self, pair: str, category: str) -> list[float]:
        """a_j for j = 0..J-1; positions past J reuse a_{J-1}."""
        key = (pair, category)
        if key not in self._curves:
            if not self.has_pair(pair):
                raise KeyError(f"the acceptance model has no observations of {pair!r}; "
                               f"fitted pairs: {', '.join(sorted(p for p in self.pairs if self.has_pair(p)))}")
            pooled = self._pooled(pair)
            base = [(a + 0.5) / (t + 1.0) for t, a in zip(pooled.trials, pooled.accepts)]
            own = self.pairs[pair].get(category, PositionCounts())
            curve = []
            for j, prior in enumerate(base):
                t = own.trials[j] if j < len(own.trials) else 0
                a = own.accepts[j] if j < len(own.accepts) else 0
                curve.append((a + PRIOR_TRIALS * prior) / (t + PRIOR_TRIALS))
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
        counts = self._pooled(pair) if category == POOLED else self.pairs[pair][category]
        return counts.num_accepted_tokens / counts.num_proposed_tokens if counts.num_proposed_tokens else 0.0

    def _cdf(self, pair: str, category: str, num_proposed: int) -> list[float]:
        key = (pair, category, num_proposed)
        cdf = self._cdfs.get(key)
        if cdf is None:
            curve = self.curve(pair, category)
            survive, total, cdf = 1.0, 0.0, []
            for j in range(num_proposed):
                a = curve[min(j, len(curve) - 1)]
                total += survive * (1.0 - a)          # P(accepted == j)
                cdf.append(total)
                survive *= a
            cdf.append(1.0)                           # P(accepted == num_proposed) closes it
            self._cdfs[key] = cdf
        return cdf

    def sample_accepted(self, pair: str, category: str, num_proposed: int, uniform: float) -> int:
        """Accepted count for `num_proposed` tokens, by inverting the CDF at `uniform` in [0, 1)."""
        if num_proposed <= 0:
            return 0
        return bisect.bisect_right(self._cdf(pair, category, num_proposed), uniform)

    def proposal_rates(self, drafter: str, category: str) -> tuple[float, float]:
        """(P(non-empty), P(full | non-empty)); a model drafter (no record) always proposes all K."""
        key = (drafter, category)
        rates = self._proposal_rates.get(key)
        if rates is None:
            cats = self.proposers.get(drafter)
            if not cats:
                rates = (1.0, 1.0)
            else:
                pooled = ProposalCounts()
                for counts in cats.values():
                    pooled = pooled.merged(counts)
                own = cats.get(category, ProposalCounts())
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
