"""Acceptance trackers: how well each drafter's proposals fare against the level above it.

One estimate per (drafter, verifier) pair, keyed "drafter>verifier" (e.g. "ngram>target"),
kept globally and per running request, updated from every step's `StepRecord`.

What an estimate holds:
    acceptance          per-token acceptance probability a, the quantity the cost model's
                        (1 - a^(K+1)) / (1 - a) needs. A step that proposed m tokens and had n
                        accepted is n successes in n + 1 trials (n in n when all m were accepted:
                        no rejection was seen), so, unlike accepted / proposed, it does not
                        shrink as K grows. The prior counts as observation 0 with
                        `prior_weight` trials at the prior rate; observation i (1, 2, ...)
                        updates successes S and trials T with weight w_i = max(alpha, 1/(i+1)):
                        S <- (1 - w_i) S + w_i n, T <- (1 - w_i) T + w_i (n + [n < m]), a = S / T.
                        Early on this is the pooled ratio (prior_weight * prior + sum n) /
                        (prior_weight + sum trials); later an EMA over about 1/alpha observations.
                        A model-free drafter asked for K tokens may find nothing to propose
                        (no n-gram match: about half the steps on Spec-Bench); the verifier
                        then commits one token of its own, as after a rejection of the first
                        token, so an empty proposal counts as 0 successes in 1 trial. Leaving
                        it out made n-gram look 25% better than it was at K = 2, and the cost
                        model chose it at concurrency 4 on steps where no row had a proposal.
                        A model level's empty draft is a p_min threshold's stop, which the cost
                        model prices through c (engine/draft_stop.py): not a trial.
    accepted_fraction   EMA of num_accepted / num_proposed per step with a proposal (vLLM's
                        draft acceptance rate), weights max(alpha, 1/i): the mean until the
                        window fills.
    similarity          EMA of 1 - TV(p, q) (weights as accepted_fraction) where the step had
                        both distributions (sampled rows whose drafter is a model), None until
                        seen. For sampling, E[acceptance] = 1 - TV, so a measured similarity is
                        the natural per-pair prior for a pair that has not run (see `priors`).
    num_observed        steps (rows) that fed the estimate, empty proposals included.
    num_empty           of those, the ones whose drafter proposed nothing.
    num_proposed_tokens / num_accepted_tokens: running totals.
    confidence          global estimates of a pair whose drafter is a model level only: the
                        histogram of its drafted tokens' top-1 probability (10 bins; per bin
                        tokens drafted, judged up to and including the first rejection, and
                        accepted: `engine.draft_stop.ConfidenceHistogram.to_dict`), from which
                        the cost model predicts what a p_min threshold would do. Counts, not
                        an EMA: they are measured at whatever p_min the steps ran. Until a
                        pair has its own, `confidence_priors` (the calibration's) stand in.

Per-request estimates start from the global acceptance of the pair at the request's first
observation, worth `request_prior_weight` trials (16: one lucky shadow proposal of 8 tokens must
not make a request look like a summary), and use `request_alpha`. The engine forgets a
request's estimates when it finishes or is aborted.

`snapshot()` is the one dict read by the cost model, the environment's observation and the
metrics:
    {"pairs": {"ngram>target": {"acceptance": 0.61, "accepted_fraction": 0.42, "similarity": None,
                                "num_observed": 40, "num_proposed_tokens": 160, "num_accepted_tokens": 67}},
     "requests": {"req-0": {"ngram>target": {...same keys...}}},
     "prior": 0.5, "num_steps": 12}
Pairs listed in `priors` appear with num_observed 0 before they have run.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from engine.draft_stop import ConfidenceHistogram
from engine.drafters import MODEL_FREE_DRAFTERS


def pair_key(drafter: str, verifier: str) -> str:
    return f"{drafter}>{verifier}"


def chain_pair_keys(chain: tuple[str, ...]) -> tuple[str, ...]:
    """The acceptance pairs of a chain, cheapest first: ("ngram", "target") -> ("ngram>target",)."""
    return tuple(pair_key(a, b) for a, b in pairwise(chain))


@dataclass
class PairEstimate:
    """Exponentially weighted acceptance of one pair; see the module docstring."""

    successes: float
    trials: float
    accepted_fraction: float | None = None
    similarity: float | None = None
    num_observed: int = 0
    num_empty: int = 0
    num_similarity: int = 0
    num_proposed_tokens: int = 0
    num_accepted_tokens: int = 0
    confidence: ConfidenceHistogram | None = None

    @classmethod
    def from_prior(cls, acceptance: float, weight: float) -> PairEstimate:
        return cls(successes=acceptance * weight, trials=weight)

    @property
    def acceptance(self) -> float:
        return self.successes / self.trials

    def observe(self, num_proposed: int, num_accepted: int, similarity: float | None, alpha: float,
                confidences: list[float] | None = None, empty_is_trial: bool = True) -> None:
        """One row of one step (num_proposed 0: the drafter found nothing to propose, a trial
        unless `empty_is_trial` is False); `alpha` is the EMA weight's floor; `confidences`
        (`PairOutcome.confidences`) feed the histogram."""
        num_accepted = min(num_accepted, num_proposed)
        if confidences is not None:
            self.confidence = self.confidence or ConfidenceHistogram()
            self.confidence.observe(confidences, num_proposed, num_accepted)
        if not num_proposed and not empty_is_trial:
            self.num_observed += 1
            self.num_empty += 1
            return
        self.num_observed += 1
        self.num_proposed_tokens += num_proposed
        self.num_accepted_tokens += num_accepted
        rejected = num_accepted < num_proposed or num_proposed == 0
        w = max(alpha, 1.0 / (self.num_observed + 1))
        self.successes += w * (num_accepted - self.successes)
        self.trials += w * (num_accepted + rejected - self.trials)
        if num_proposed == 0:
            self.num_empty += 1
            return
        fraction = num_accepted / num_proposed
        w = max(alpha, 1.0 / (self.num_observed - self.num_empty))
        self.accepted_fraction = fraction if self.accepted_fraction is None else \
            self.accepted_fraction + w * (fraction - self.accepted_fraction)
        if similarity is not None:
            self.num_similarity += 1
            w = max(alpha, 1.0 / self.num_similarity)
            self.similarity = similarity if self.similarity is None else \
                self.similarity + w * (similarity - self.similarity)

    def to_dict(self) -> dict:
        return {"acceptance": self.acceptance, "accepted_fraction": self.accepted_fraction,
                "similarity": self.similarity, "num_observed": self.num_observed, "num_empty": self.num_empty,
                "num_proposed_tokens": self.num_proposed_tokens, "num_accepted_tokens": self.num_accepted_tokens,
                **({"confidence": self.confidence.to_dict()} if self.confidence and self.confidence.num_drafted else {})}


class AcceptanceTrackers:
    """Args:
        alpha: EMA weight of one observation (one row of one step) in the global estimates,
            once more than 1/alpha observations have been seen (the mean before that).
        request_alpha: the same for per-request estimates (they see fewer observations).
        prior: acceptance assumed for a pair that has not run yet.
        prior_weight: how many trials (proposed tokens) the prior is worth.
        request_prior_weight: the same for the global estimate a request's own one starts from.
        priors: per-pair priors ("draft>target" -> a), e.g. from a measured similarity.
    """

    def __init__(self, alpha: float = 0.05, request_alpha: float = 0.2, prior: float = 0.5,
                 prior_weight: float = 1.0, priors: dict[str, float] | None = None,
                 request_prior_weight: float = 16.0):
        for name, value in (("alpha", alpha), ("request_alpha", request_alpha)):
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        priors = dict(priors or {})
        for key, value in [("prior", prior), *priors.items()]:
            if not 0 <= value <= 1:
                raise ValueError(f"prior acceptance of {key} must be in [0, 1], got {value}")
        if prior_weight <= 0 or request_prior_weight <= 0:
            raise ValueError(f"prior_weight and request_prior_weight must be > 0, "
                             f"got {prior_weight} and {request_prior_weight}")
        if any(">" not in key for key in priors):
            raise ValueError("priors are keyed 'drafter>verifier'")
        self.alpha = alpha
        self.request_alpha = request_alpha
        self.prior = prior
        self.prior_weight = prior_weight
        self.request_prior_weight = request_prior_weight
        self.priors = priors
        # pair -> a fitted confidence histogram (ConfidenceHistogram.to_dict) shown until measured
        self.confidence_priors: dict[str, dict] = {}
        self.reset()

    def reset(self) -> None:
        """Forget everything observed (a new episode); priors stay."""
        self.pairs: dict[str, PairEstimate] = {}
        self.requests: dict[str, dict[str, PairEstimate]] = {}
        self.num_steps = 0

    def prior_of(self, key: str) -> float:
        return self.priors.get(key, self.prior)

    def acceptance(self, key: str, request_id: str | None = None) -> float:
        """Current per-token acceptance of a pair (the request's own when it has one)."""
        estimate = self.requests.get(request_id, {}).get(key) if request_id is not None else None
        estimate = estimate or self.pairs.get(key)
        return estimate.acceptance if estimate is not None else self.prior_of(key)

    def observe_step(self, record) -> None:
        """Consume an engine StepRecord: `record.results[i].pairs` (and the shadow proposals'
        `shadow_pairs`, engine/shadow_drafts.py) belong to `record.request_ids[i]`."""
        if not record.results:
            return
        self.num_steps += 1
        for request_id, result in zip(record.request_ids, record.results):
            for pair in (*result.pairs, *result.shadow_pairs):
                key = pair_key(pair.drafter, pair.verifier)
                estimate = self.pairs.get(key)
                if estimate is None:
                    estimate = self.pairs[key] = PairEstimate.from_prior(self.prior_of(key), self.prior_weight)
                own = self.requests.setdefault(request_id, {})
                if key not in own:
                    own[key] = PairEstimate.from_prior(estimate.acceptance, self.request_prior_weight)
                trial = pair.drafter in MODEL_FREE_DRAFTERS       # a model level's empty draft: a p_min stop
                estimate.observe(pair.num_proposed, pair.num_accepted, pair.similarity, self.alpha,
                                 getattr(pair, "confidences", None), trial)
                own[key].observe(pair.num_proposed, pair.num_accepted, pair.similarity, self.request_alpha,
                                 empty_is_trial=trial)

    def forget_request(self, request_id: str) -> None:
        self.requests.pop(request_id, None)

    def snapshot(self) -> dict:
        pairs = {key: {"acceptance": value, "accepted_fraction": None, "similarity": None, "num_observed": 0,
                       "num_empty": 0, "num_proposed_tokens": 0, "num_accepted_tokens": 0}
                 for key, value in self.priors.items()}
        pairs.update({key: estimate.to_dict() for key, estimate in self.pairs.items()})
        for key, histogram in self.confidence_priors.items():
            if key in pairs:
                pairs[key].setdefault("confidence", histogram)
        requests = {rid: {key: estimate.to_dict() for key, estimate in own.items()}
                    for rid, own in self.requests.items()}
        return {"pairs": pairs, "requests": requests, "prior": self.prior, "num_steps": self.num_steps}
