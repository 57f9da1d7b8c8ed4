"""The analytical cost model: expected goodput of every (chain, K) from a profile and acceptance.

Expected tokens come from the expectation model (engine/expectation.py: f(a, K) level by level).

Time. One step at batch B and mean context C, from the profile:
    L0 model-free:   forward_time(L0, B, K, C)  (B proposals of K tokens)
    L0 draft model:  K * forward_time(L0, B, 1, C)  (K autoregressive forwards of one token)
    Li, i >= 1:      forward_time(Li, B, K + i, C)  (one forward over the last committed token
                     plus the longest proposal it can receive, K + i - 1: the batch is padded)
    plain:           forward_time(target, B, 1, C)
Lazy catch-up of a level that sat out earlier steps is not charged.

Goodput = B * expected committed tokens / step time. `best` returns the highest-goodput
decision whose time per token (step time / expected tokens) meets the TPOT SLO, or, when none
does, the one with the lowest time per token. (At a fixed batch both orderings agree; the SLO
decides whether `best` reports `meets_slo`, and matters to callers that compare batches.)

Margin. Speculation is chosen over plain decoding only when it is predicted to cut the time per
token by more than `min_gain` (default 10%): the profile and the acceptance estimates are each
off by 5-9% (env.calibrate), so a smaller predicted gain is as likely a loss, and the loss is
paid on every step (bench_chains at concurrency 4 lost 12% choosing n-gram on a predicted tie).

Rows. `best_estimate` given the running rows' request ids (as `CostModelRouter` gives them)
scores a decision by the mean of every row's expected tokens, each from that request's own
acceptance where the trackers have one (shadow proposals give every request one for the
model-free pairs), so one request that suffix drafting suits is seen as such instead of being
averaged into the pool; E[tokens] is convex in acceptance, so the mean of the rows is not the
tokens of the mean acceptance.

Acceptance comes as the trackers' snapshot ({"pairs": {"a>b": {"acceptance": ...}}, "prior": p})
or a flat {"a>b": acceptance}; a pair missing from it gets the snapshot's prior, else
`prior_acceptance`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from engine.decision import TARGET, Decision
from engine.expectation import acceptance_rates, chain_expected_tokens
from engine.profile import LatencyProfile, ProfileError
from engine.trackers import pair_key

_MAX_CACHED_TIMES = 16384


@dataclass(frozen=True)
class Estimate:
    """What the cost model expects of one decision at one batch and context."""

    decision: Decision
    expected_tokens: float          # committed tokens per row per step
    step_time_s: float
    goodput: float                  # committed tokens per second across the batch
    time_per_token_s: float         # step time / expected tokens (a row's TPOT)
    meets_slo: bool


class CostModel:
    """Args:
        profile: latency of every level the decisions use.
        decisions: the candidates (see `decision_grid`).
        slo_tpot_s: time-per-output-token target, or None for no SLO.
        prior_acceptance: acceptance of a pair the acceptance mapping does not mention.
        context_bucket: `evaluate` / `best` round the context to a multiple of this many tokens,
            so consecutive steps reuse cached step times (latency barely moves within 16 tokens).
        min_gain: `best` keeps plain decoding unless a decision's predicted time per token is
            lower by more than this fraction (see Margin above); 0 picks the plain argmax.
    """

    def __init__(self, profile: LatencyProfile, decisions: Iterable[Decision], slo_tpot_s: float | None = None,
                 prior_acceptance: float = 0.5, context_bucket: int = 16, min_gain: float = 0.1):
        self.profile = profile
        self.decisions = list(dict.fromkeys(decisions))
        if not self.decisions:
            raise ValueError("the cost model needs at least one decision")
        if slo_tpot_s is not None and not slo_tpot_s > 0:
            raise ValueError(f"slo_tpot_s must be > 0 or None, got {slo_tpot_s}")
        if not 0 <= prior_acceptance <= 1:
            raise ValueError(f"prior_acceptance must be in [0, 1], got {prior_acceptance}")
        if context_bucket < 1:
            raise ValueError(f"context_bucket must be >= 1, got {context_bucket}")
        if not 0 <= min_gain < 1:
            raise ValueError(f"min_gain must be in [0, 1), got {min_gain}")
        self.min_gain = min_gain
        self.context_bucket = context_bucket
        missing = sorted({name for d in self.decisions for name in (d.chain if not d.is_plain else (TARGET,))
                          if name not in profile.levels})
        if missing:
            raise ProfileError(f"the profile of {profile.model} has no levels {missing}; "
                               f"it has {sorted(profile.levels)}")
        self.slo_tpot_s = slo_tpot_s
        self.prior_acceptance = prior_acceptance
        # per decision, what evaluating it needs, worked out once: (pair keys, K)
        self._plans = [((), 0) if d.is_plain else
                       (tuple(pair_key(low, high) for low, high in zip(d.chain, d.chain[1:])), d.k)
                       for d in self.decisions]
        self._times: dict[tuple, float] = {}
        self._plain = next((i for i, d in enumerate(self.decisions) if d.is_plain), None)

    def expected_tokens(self, decision: Decision, acceptance: Mapping) -> float:
        """Expected committed tokens per row in one step of `decision` (1 for plain decoding)."""
        rates, prior = acceptance_rates(acceptance)
        pairs = () if decision.is_plain else tuple(pair_key(a, b) for a, b in zip(decision.chain, decision.chain[1:]))
        return chain_expected_tokens(pairs, decision.k, rates, self.prior_acceptance if prior is None else prior)

    def step_time(self, decision: Decision, batch: int, context: int) -> float:
        """Seconds of one step of `decision` for `batch` rows at mean context `context` (cached)."""
        key = (decision, batch, context)
        cached = self._times.get(key)
        if cached is not None:
            return cached
        forward_time = self.profile.forward_time
        if decision.is_plain:
            seconds = forward_time(TARGET, batch, 1, context)
        else:
            first, k = decision.chain[0], decision.k
            if self.profile.levels[first].kind == "model_free":
                seconds = forward_time(first, batch, k, context)
            else:
                seconds = k * forward_time(first, batch, 1, context)
            for i, level in enumerate(decision.chain[1:], start=1):
                seconds += forward_time(level, batch, k + i, context)
        if len(self._times) >= _MAX_CACHED_TIMES:
            self._times.clear()
        self._times[key] = seconds
        return seconds

    def _step_times(self, batch: int, context: int) -> list[float]:
        """step_time of every decision, cached as one list per (batch, context)."""
        key = (batch, context)
        times = self._times.get(key)
        if times is None:
            times = [self.step_time(d, batch, context) for d in self.decisions]
            self._times[key] = times
        return times

    def goodput(self, decision: Decision, batch: int, context: int, acceptance: Mapping) -> float:
        """Committed tokens per second across the batch."""
        return batch * self.expected_tokens(decision, acceptance) / self.step_time(decision, batch, context)

    def _scores(self, batch: int, context: float, acceptance: Mapping,
                request_ids: Sequence[str] | None = None) -> tuple[list[float], list[float], int]:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        rates, prior = acceptance_rates(acceptance)
        prior = self.prior_acceptance if prior is None else prior
        context = int(round(context / self.context_bucket)) * self.context_bucket
        own = acceptance.get("requests", {}) if request_ids and "pairs" in acceptance else {}
        # the mean over rows; rows with the same own estimates (most often none) are scored once
        groups = Counter(tuple(sorted((key, float(value["acceptance"])) for key, value in own.get(rid, {}).items()))
                         for rid in request_ids or ()) or Counter({(): 1})
        num_rows = sum(groups.values())
        tokens = [0.0] * len(self._plans)
        for key, count in groups.items():
            merged, weight = {**rates, **dict(key)}, count / num_rows
            for i, (pairs, k) in enumerate(self._plans):
                tokens[i] += weight * chain_expected_tokens(pairs, k, merged, prior)
        return tokens, self._step_times(batch, context), context

    def _estimate(self, i: int, batch: int, tokens: float, seconds: float) -> Estimate:
        per_token = seconds / tokens
        return Estimate(self.decisions[i], tokens, seconds, batch * tokens / seconds, per_token,
                        self.slo_tpot_s is None or per_token <= self.slo_tpot_s)

    def evaluate(self, batch: int, context: float, acceptance: Mapping) -> list[Estimate]:
        """An Estimate for every decision, in the order they were given."""
        tokens, times, _ = self._scores(batch, context, acceptance)
        return [self._estimate(i, batch, n, t) for i, (n, t) in enumerate(zip(tokens, times))]

    def best_estimate(self, batch: int, context: float, acceptance: Mapping,
                      request_ids: Sequence[str] | None = None) -> Estimate:
        """See `best`; `request_ids` (the running rows) score each row with its own acceptance
        from the snapshot's "requests" where it has one."""
        tokens, times, _ = self._scores(batch, context, acceptance, request_ids)
        per_token = [t / n for n, t in zip(tokens, times)]
        slo = self.slo_tpot_s
        candidates = [i for i, p in enumerate(per_token) if slo is None or p <= slo] or range(len(per_token))
        # highest goodput = lowest time per token at a fixed batch; the first of equals (simplest) wins
        best = min(candidates, key=per_token.__getitem__)
        plain = self._plain
        if plain is not None and plain in candidates and per_token[best] > per_token[plain] * (1 - self.min_gain):
            best = plain
        return self._estimate(best, batch, tokens[best], times[best])

    def best(self, batch: int, context: float, acceptance: Mapping,
             request_ids: Sequence[str] | None = None) -> Decision:
        """The decision with the highest goodput that meets the TPOT SLO (else the fastest per
        token), plain decoding unless that is faster by more than `min_gain`."""
        return self.best_estimate(batch, context, acceptance, request_ids).decision


def decision_grid(chains: Iterable[Iterable[str] | str], ks: Iterable[int] = (1, 2, 4, 8)) -> list[Decision]:
    """Plain decoding first, then every chain with every K (chains given as tuples or "a,b,target")."""
    ks = list(ks)
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"draft lengths must be integers >= 1, got {ks}")
    decisions = [Decision((TARGET,), 0)]
    for chain in chains:
        chain = Decision(chain if isinstance(chain, str) else tuple(chain)).chain
        if len(chain) > 1:
            decisions += [Decision(chain, k) for k in ks]
    return list(dict.fromkeys(decisions))
