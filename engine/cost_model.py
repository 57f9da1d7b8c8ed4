"""The analytical cost model: expected goodput of every (chain, K) from a profile and acceptance.

Expected tokens come from the expectation model (engine/expectation.py: f(a, K) level by level);
a decision's p_min threshold enters both as (c, lift) read off the confidence histograms
(engine/draft_stop.py).

Time of a step: engine/step_time.py. Catch-up of a level, amortised over the row's remaining
output: engine/catch_up_cost.py; `best` and `best_rows` charge a decision that of its levels.

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

Per row. `best_rows` lets rows take different decisions in one step (the engine runs them
together: `engine.spec_step.run_step`): from `best`'s decision for all, each row in turn takes
the decision that raises the batch's predicted goodput most, the step charged as the engine
runs a mixed batch (`mixed_step_time`). A plain row beside speculating ones saves no target
time but the drafting; what per-row choice buys is each request on the chain and K that suit
it. It keeps the batch's decision unless the assignment is predicted faster by more than
`min_row_gain`.

Empty proposals: engine/empty_steps.py (a model-free chain's step with no proposal is a plain one).

Acceptance comes as the trackers' snapshot ({"pairs": {"a>b": {"acceptance": ...}}, "prior": p})
or a flat {"a>b": acceptance}; a pair missing from it gets the snapshot's prior, else
`prior_acceptance`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.catch_up_cost import CATCH_UP_HORIZON, catch_up_rates
from engine.chain_table import ChainTable
from engine.decision import TARGET, Decision, decision_grid  # noqa: F401  (decision_grid: its old home)
from engine.draft_stop import decision_stop_rates
from engine.empty_steps import model_free_chains, with_empty_steps
from engine.expectation import acceptance_rates, chain_expected_tokens
from engine.profile import LatencyProfile, ProfileError
from engine.step_time_cache import StepTimeCache
from engine.trackers import chain_pair_keys


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
        context_knot: `scores` prices every decision at the multiples of this many tokens either
            side of the context and interpolates: the profile is linear in context between its
            grid points, and a batch whose context crosses a 16-token bucket every few steps no
            longer re-prices every decision on the decision's path (its cold misses were the
            router's p99).
        min_gain: `best` keeps plain decoding unless a decision's predicted time per token is
            lower by more than this fraction (see Margin above); 0 picks the plain argmax.
        min_row_gain: `best_rows` keeps one decision for the batch unless a per-row assignment
            is predicted to raise goodput by more than this fraction.
        catch_up_horizon: the most output tokens a level's catch-up is amortised over (a row's
            max_tokens is an upper bound on its reply, often a loose one).
    """

    def __init__(self, profile: LatencyProfile, decisions: Iterable[Decision], slo_tpot_s: float | None = None,
                 prior_acceptance: float = 0.5, context_bucket: int = 16, min_gain: float = 0.1,
                 min_row_gain: float = 0.03, catch_up_horizon: int = CATCH_UP_HORIZON, context_knot: int = 128):
        self.profile = profile
        self.decisions = list(dict.fromkeys(decisions))
        if not self.decisions:
            raise ValueError("the cost model needs at least one decision")
        if slo_tpot_s is not None and not slo_tpot_s > 0:
            raise ValueError(f"slo_tpot_s must be > 0 or None, got {slo_tpot_s}")
        if not 0 <= prior_acceptance <= 1:
            raise ValueError(f"prior_acceptance must be in [0, 1], got {prior_acceptance}")
        if context_bucket < 1 or context_knot < 1:
            raise ValueError(f"context_bucket and context_knot must be >= 1, got {context_bucket} and {context_knot}")
        if not 0 <= min_gain < 1 or not 0 <= min_row_gain < 1:
            raise ValueError(f"min_gain and min_row_gain must be in [0, 1), got {min_gain} and {min_row_gain}")
        if catch_up_horizon < 1:
            raise ValueError(f"catch_up_horizon must be >= 1, got {catch_up_horizon}")
        self.min_gain, self.min_row_gain = min_gain, min_row_gain
        self.catch_up_horizon = catch_up_horizon
        self.context_bucket, self.context_knot = context_bucket, context_knot
        missing = sorted({name for d in self.decisions for name in (d.chain if not d.is_plain else (TARGET,))
                          if name not in profile.levels})
        if missing:
            raise ProfileError(f"the profile of {profile.model} has no levels {missing}; "
                               f"it has {sorted(profile.levels)}")
        self.slo_tpot_s, self.prior_acceptance = slo_tpot_s, prior_acceptance
        # per decision, what evaluating it needs, worked out once: (pair keys, K)
        self._plans = [((), 0) if d.is_plain else (chain_pair_keys(d.chain), d.k) for d in self.decisions]
        self._table = ChainTable(self._plans)
        # per decision, the model levels below the target whose catch-up it would pay
        self._catch_up_levels = [() if d.is_plain else
                                 tuple(name for name in d.chain[:-1] if profile.levels[name].kind == "model")
                                 for d in self.decisions]
        self._model_free_chains = model_free_chains(self.decisions, profile)     # engine/empty_steps.py
        self._step_cache = StepTimeCache(profile, self.decisions, context_knot)
        self._plain = next((i for i, d in enumerate(self.decisions) if d.is_plain), None)

    def catch_up_rates(self, rows: Sequence) -> list[dict[str, float]]:
        """Per row, per model level below the target: its amortised catch-up (`catch_up_cost.catch_up_rates`)."""
        return catch_up_rates(self.profile, rows, self.catch_up_horizon)

    def _catch_up_s(self, i: int, tokens: float, rates: Mapping[str, float]) -> float:
        """Decision i's amortised catch-up seconds per step, for rows committing `tokens` each."""
        return tokens * sum(rates.get(name, 0.0) for name in self._catch_up_levels[i]) if rates else 0.0

    def expected_tokens(self, decision: Decision, acceptance: Mapping) -> float:
        """Expected committed tokens per row in one step of `decision` (1 for plain decoding)."""
        rates, _ = acceptance_rates(acceptance)
        pairs = () if decision.is_plain else chain_pair_keys(decision.chain)
        stop = decision_stop_rates([decision], acceptance)[0]
        return chain_expected_tokens(pairs, decision.k, rates, self._prior(acceptance), stop)

    def step_time(self, decision: Decision, batch: int, context: int, continue_odds: float = 1.0) -> float:
        """Seconds of one step of `decision` for `batch` rows at mean context `context` (cached);
        `continue_odds`: c of its p_min threshold (engine/draft_stop.py)."""
        return self._step_cache.uniform(decision, batch, context, continue_odds)

    def _step_times(self, batch: int, context: int, stops: Sequence[tuple[float, float]]) -> list[float]:
        """step_time of every decision, interpolated between `context_knot` multiples (thresholds' c to 0.01)."""
        return self._step_cache.every(batch, context, stops)

    def warm(self, max_batch: int, max_context: int, acceptance: Mapping | None = None) -> int:
        """Price every decision at every batch 1..max_batch and context knot up to max_context (the
        thresholds' c as `acceptance` gives them), so no step of a server pays a cold lookup on its
        decision's path; returns the (batch, knot) lists priced (16 x 17 x 34 decisions: ~0.5 s)."""
        return self._step_cache.warm(max_batch, max_context, decision_stop_rates(self.decisions, acceptance or {}))

    def goodput(self, decision: Decision, batch: int, context: int, acceptance: Mapping) -> float:
        """Committed tokens per second across the batch."""
        c = round(decision_stop_rates([decision], acceptance)[0][0], 2)
        return batch * self.expected_tokens(decision, acceptance) / self.step_time(decision, batch, context, c)

    def _row_groups(self, acceptance: Mapping, request_ids: Sequence[str] | None) -> tuple[list[tuple], list[int]]:
        """Rows with the same own estimates (most often none), scored once: (the groups' merged
        acceptance rates, each row's group index)."""
        rates, _ = acceptance_rates(acceptance)
        own = acceptance.get("requests", {}) if request_ids and "pairs" in acceptance else {}
        keys: dict[tuple, int] = {}
        rows = [keys.setdefault(tuple(sorted((key, float(value["acceptance"])) for key, value in
                                             own.get(rid, {}).items())), len(keys))
                for rid in request_ids or ()]
        return [{**rates, **dict(key)} for key in keys] or [rates], rows or [0]

    def _prior(self, acceptance: Mapping) -> float:
        """The acceptance of a pair the mapping does not mention: its prior, else ours."""
        _, prior = acceptance_rates(acceptance)
        return self.prior_acceptance if prior is None else prior

    def _bucket(self, context: float) -> int:
        """`context` rounded to a multiple of `context_bucket` (cached step times repeat)."""
        return round(context / self.context_bucket) * self.context_bucket

    def scores(self, batch: int, context: float, acceptance: Mapping, request_ids: Sequence[str] | None = None,
               catch_up: Sequence[Mapping[str, float]] | None = None) -> tuple[list[float], list[float]]:
        """Every decision's predicted (tokens per row, step seconds), in order: what `select`
        chooses from, for a caller that corrects them first (router/online_correction.py)."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        prior, stops = self._prior(acceptance), decision_stop_rates(self.decisions, acceptance)
        context = self._bucket(context)
        groups, rows = self._row_groups(acceptance, request_ids)
        weights = np.bincount(rows, minlength=len(groups)) / len(rows)                 # [G]
        tokens = (weights @ self._table.tokens(groups, prior, stops)).tolist()
        times = with_empty_steps(self._step_times(batch, context, stops), batch, self._plain,
                                 self._model_free_chains, acceptance)
        if catch_up:
            total: Counter = Counter()
            for row in catch_up:
                total.update(row)           # each level's rates summed over the rows
            times = [t + self._catch_up_s(i, n, total) for i, (n, t) in enumerate(zip(tokens, times))]
        return tokens, times

    def estimate(self, i: int, batch: int, tokens: float, seconds: float) -> Estimate:
        """Decision i's Estimate at `batch` from its expected tokens per row and step seconds."""
        per_token = seconds / tokens
        return Estimate(self.decisions[i], tokens, seconds, batch * tokens / seconds, per_token,
                        self.slo_tpot_s is None or per_token <= self.slo_tpot_s)

    def evaluate(self, batch: int, context: float, acceptance: Mapping) -> list[Estimate]:
        """An Estimate for every decision, in the order they were given."""
        tokens, times = self.scores(batch, context, acceptance)
        return [self.estimate(i, batch, n, t) for i, (n, t) in enumerate(zip(tokens, times))]

    def select(self, batch: int, tokens: Sequence[float], times: Sequence[float]) -> Estimate:
        """`best`'s rule applied to given figures (one per decision, in order)."""
        per_token = [t / n for n, t in zip(tokens, times)]
        slo = self.slo_tpot_s
        candidates = [i for i, p in enumerate(per_token) if slo is None or p <= slo] or range(len(per_token))
        # highest goodput = lowest time per token at a fixed batch; the first of equals (simplest) wins
        best = min(candidates, key=per_token.__getitem__)
        if (plain := self._plain) is not None and plain in candidates \
                and per_token[best] > per_token[plain] * (1 - self.min_gain):
            best = plain
        return self.estimate(best, batch, tokens[best], times[best])

    def best_estimate(self, batch: int, context: float, acceptance: Mapping,
                      request_ids: Sequence[str] | None = None,
                      catch_up: Sequence[Mapping[str, float]] | None = None) -> Estimate:
        """See `best`; `request_ids` (the running rows) score each row with its own acceptance
        from the snapshot's "requests" where it has one; `catch_up` (`catch_up_rates` of the
        rows) charges each decision the catch-up of the levels it would bring in."""
        return self.select(batch, *self.scores(batch, context, acceptance, request_ids, catch_up))

    def best(self, batch: int, context: float, acceptance: Mapping,
             request_ids: Sequence[str] | None = None,
             catch_up: Sequence[Mapping[str, float]] | None = None) -> Decision:
        """The decision with the highest goodput that meets the TPOT SLO (else the fastest per
        token), plain decoding unless that is faster by more than `min_gain`."""
        return self.best_estimate(batch, context, acceptance, request_ids, catch_up).decision

    def mixed_step_time(self, decisions: Sequence[Decision], context: int, continue_odds=None) -> float:
        """Seconds of one step whose row i runs `decisions[i]` (threshold continuation `continue_odds[i]`,
        default 1), as `run_step` groups a mixed batch (`engine.step_time.step_time`, cached)."""
        return self._step_cache.mixed(decisions, context, continue_odds)

    def best_rows(self, context: float, acceptance: Mapping, request_ids: Sequence[str],
                  start: Decision | None = None, passes: int = 2,
                  catch_up: Sequence[Mapping[str, float]] | None = None) -> list[Decision]:
        """One decision per row of the batch `request_ids` (see Per row above): `best`'s (or
        `start`, when the caller has it) for all, unless rows on their own decisions are
        predicted faster by more than `min_row_gain`; `catch_up` as in `best_estimate`, each
        row charged its own."""
        batch = len(request_ids)
        start = start or self.best_estimate(batch, context, acceptance, request_ids, catch_up).decision
        if batch == 1:
            return [start]
        prior, context = self._prior(acceptance), self._bucket(context)
        stops = decision_stop_rates(self.decisions, acceptance)
        odds = [round(c, 2) for c, _ in stops]

        def mixed(assigned: Sequence[int]) -> float:
            return self.mixed_step_time([self.decisions[i] for i in assigned], context, [odds[i] for i in assigned])
        groups, rows = self._row_groups(acceptance, request_ids)
        tokens = self._table.tokens(groups, prior, stops).tolist()                       # [group][decision]
        index = {d: i for i, d in enumerate(self.decisions)}
        assignment = [index[start]] * batch
        rates = list(catch_up) if catch_up else [{}] * batch
        # [row][decision]: the row's amortised catch-up seconds per step on that decision
        extra = [[self._catch_up_s(a, tokens[g][a], rates[r]) for a in range(len(self.decisions))]
                 for r, g in enumerate(rows)]
        total = sum(tokens[g][assignment[r]] for r, g in enumerate(rows))
        paid = sum(extra[r][assignment[r]] for r in range(batch))
        uniform = value = total / (mixed(assignment) + paid)
        for _ in range(passes):
            improved = False
            for r, g in enumerate(rows):
                current = assignment[r]
                for a in range(len(self.decisions)):
                    if a == current:
                        continue
                    assignment[r] = a
                    trial = (total - tokens[g][current] + tokens[g][a]) / (
                        mixed(assignment) + paid - extra[r][current] + extra[r][a])
                    if trial > value * (1 + 1e-9):
                        total, paid = total - tokens[g][current] + tokens[g][a], paid - extra[r][current] + extra[r][a]
                        value, current, improved = trial, a, True
                assignment[r] = current
            if not improved:
                break
        if value <= uniform * (1 + self.min_row_gain):
            return [start] * batch
        return [self.decisions[a] for a in assignment]

