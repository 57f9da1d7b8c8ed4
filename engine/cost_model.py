"""The analytical router: expected goodput of every (chain, K) from a profile and acceptance.

Tokens. A drafter proposing K tokens to a verifier that accepts each with probability a (until
the first rejection) gives the verifier's output: the accepted prefix plus one token of its own,
expected f(a, K) = (1 - a^(K+1)) / (1 - a) tokens (K + 1 as a -> 1; Leviathan et al., arXiv
2211.17192). A chain [L0, L1, ..., Ln = target] composes this level by level: the levels below
Li form one composite drafter whose proposal length M(i-1) is random, with L0's M(0) = K.
Li accepts j of M(i-1) tokens with P(j) = a^j (1 - a) for j < M(i-1), P(M(i-1)) = a^M(i-1),
where a is the "L(i-1)>Li" acceptance, and outputs M(i) = j + 1. We carry the whole
distribution of M(i) (support 1..K+1), so the expectation is exact under the model; a
2-level chain reduces to f(a, K). Expected committed tokens per row = E[M(n)]; plain = 1.

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

Rows. `CostModelRouter` scores a decision by the mean of every running row's expected tokens,
each from that request's own acceptance where the trackers have one (shadow proposals give
every request one for the model-free pairs), so one request that suffix drafting suits is seen
as such instead of being averaged into the pool; E[tokens] is convex in acceptance, so the
mean of the rows is not the tokens of the mean acceptance.

Acceptance comes as the trackers' snapshot ({"pairs": {"a>b": {"acceptance": ...}}, "prior": p})
or a flat {"a>b": acceptance}; a pair missing from it gets the snapshot's prior, else
`prior_acceptance`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from engine.batch_view import BatchView
from engine.decision import TARGET, Decision
from engine.levels import plan_catch_up
from engine.profile import LatencyProfile, ProfileError
from engine.trackers import pair_key

_MAX_CACHED_TIMES = 16384


def expected_output(acceptance: float, k: int) -> float:
    """Expected tokens out of a verifier given K proposals: (1 - a^(K+1)) / (1 - a)."""
    a = min(max(acceptance, 0.0), 1.0)
    if a > 1 - 1e-9:
        return k + 1.0
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def _verify_distribution(lengths: list[float], a: float) -> list[float]:
    """P(M_out = m) for m = 0..len, given P(M_in = m) at index m and per-token acceptance a:
    M_out = j + 1 with probability a^j ((1 - a) P(M_in > j) + P(M_in = j))."""
    powers = [1.0]
    for _ in range(len(lengths) - 1):
        powers.append(powers[-1] * a)
    out = [0.0] * (len(lengths) + 1)
    above = 0.0                                     # P(M_in > j)
    for j in range(len(lengths) - 1, -1, -1):
        out[j + 1] = powers[j] * ((1.0 - a) * above + lengths[j])
        above += lengths[j]
    return out


def acceptance_rates(acceptance: Mapping) -> tuple[dict[str, float], float | None]:
    """(pair -> acceptance, prior or None) from a trackers snapshot or a flat mapping."""
    if "pairs" in acceptance:
        rates = {key: float(value["acceptance"]) for key, value in acceptance["pairs"].items()}
        return rates, acceptance.get("prior")
    return {key: float(value) for key, value in acceptance.items()}, None


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
        return self._expected_tokens(pairs, decision.k, rates, self.prior_acceptance if prior is None else prior)

    @staticmethod
    def _expected_tokens(pairs: tuple[str, ...], k: int, rates: dict[str, float], prior: float) -> float:
        if not pairs:
            return 1.0
        if len(pairs) == 1:
            return expected_output(rates.get(pairs[0], prior), k)
        lengths = [0.0] * k + [1.0]                    # M(0) = K with certainty
        for key in pairs:
            lengths = _verify_distribution(lengths, min(max(rates.get(key, prior), 0.0), 1.0))
        return sum(m * p for m, p in enumerate(lengths))

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
                tokens[i] += weight * self._expected_tokens(pairs, k, merged, prior)
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


class CostModelRouter:
    """Engine router: each step, the cost model's best decision for the running batch, the same
    for every row.

    Reads the view's batch size, mean context in tokens, the rows' request ids and the trackers'
    snapshot; remembers the last Estimate for metrics.
    """

    def __init__(self, cost_model: CostModel):
        self.cost_model = cost_model
        self.last_estimate: Estimate | None = None

    def decide(self, view: BatchView) -> list[Decision]:
        if not view.rows:
            return []
        self.last_estimate = self.cost_model.best_estimate(view.batch_size, view.mean_context, view.acceptance,
                                                           view.request_ids)
        return [self.last_estimate.decision] * view.batch_size


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


def rows_forwards(profile: LatencyProfile, num_tokens: list[int], cached: list[dict[str, int]],
                  chain: tuple[str, ...], ks: list[int], results: list) -> list[tuple[str, int, int, int]]:
    """The forwards one *realized* step runs, as (level, batch, tokens per row, context) calls of
    `profile.forward_time` (the simulator's clock), where `CostModel.step_time` is the
    expectation before the step.

    Same per-level terms as `step_time`, but per row and as `run_step` and the levels really
    run them: forwards grouped by level (plain rows join the target's group), each group padded
    to its widest feed and longest context, and a level feeds what its cache lacks first
    (prefill of a new request, lazy catch-up of a level that sat out), long pending feeds in
    forwards of their own as `engine.levels.plan_catch_up` plans them.
    `num_tokens[i]`: row i's committed tokens before the step; `cached[i]`: level -> tokens its
    cache holds for the row; `ks[i]`: the row's K after capping (0 = plain); `results[i]`: its
    RowResult (`pairs[j].num_proposed` is what level j + 1 was fed).
    """
    groups: dict[str, list[tuple[int, int, int]]] = {}  # level -> [(pending, extra, cached)] per row
    drafting: list[tuple[int, int]] = []                # model first level: (committed tokens, k)
    model_free: list[int] = []                          # model-free first level: k per row
    first_is_model = profile.levels[chain[0]].kind == "model" if len(chain) > 1 else False
    for total, have_by_level, k, result in zip(num_tokens, cached, ks, results):
        if k > 0:
            if first_is_model:
                drafting.append((total, k))
                have = have_by_level.get(chain[0], 0)
                groups.setdefault(chain[0] + "#draft", []).append((total - have, 0, have))
            else:
                model_free.append(k)
            for pair, level in zip(result.pairs, chain[1:]):
                have = have_by_level.get(level, 0)
                groups.setdefault(level, []).append((total - have, pair.num_proposed, have))
        else:
            have = have_by_level.get(TARGET, 0)
            groups.setdefault(TARGET, []).append((total - have, 0, have))
    forwards = []
    for name, rows in groups.items():
        level = name.partition("#")[0]
        plan = plan_catch_up([p for p, _, _ in rows], [e for _, e, _ in rows])
        for forward in plan.forwards:
            forwards.append((level, len(forward), max(n for _, _, n in forward),
                             max(rows[i][2] + start for i, start, _ in forward)))
        caught = set(plan.rows)
        fed = [(1 if i in caught else p) + e for i, (p, e, _) in enumerate(rows)]
        ends = [have + p + e for p, e, have in rows]
        forwards.append((level, len(rows), max(fed), max(ends) - max(fed)))
    if model_free:
        forwards.append((chain[0], len(model_free), max(model_free), max(num_tokens)))
    for j in range(1, max((k for _, k in drafting), default=0)):     # then one token per row until each has k
        ends = [total + j for total, k in drafting if k > j]
        forwards.append((chain[0], len(ends), 1, max(ends) - 1))
    return forwards


def rows_step_time(profile: LatencyProfile, num_tokens: list[int], cached: list[dict[str, int]],
                   chain: tuple[str, ...], ks: list[int], results: list) -> float:
    """Seconds of the forwards of one realized step (see `rows_forwards`)."""
    forward_time = profile.forward_time
    return sum(forward_time(*call) for call in rows_forwards(profile, num_tokens, cached, chain, ks, results))
