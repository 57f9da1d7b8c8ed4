"""The simulator's step executor: acceptance drawn from fitted models, latency from the profile.

`engine.core.EngineCore.step` does the scheduling, capping, commit, shadow drafting, rollback
bookkeeping and trackers for the simulator exactly as for the real engine; this executor only
replaces the speculative part (`engine.executor.StepExecutor`). For each row it draws how many
tokens the first level proposes and how many each verifier accepts from the per-category
acceptance models, and returns the same `RowResult`/`PairOutcome`s `run_step` returns, with
placeholder tokens (only their number matters). A model first level with a p_min threshold
(`Decision.p_min`) goes on drafting with probability c per token and its pair accepts with its
curve times lift, both from the calibration's confidence histogram (`AcceptanceModel.stop_rates`;
neutral without one). The shadow drafters (`SimDrafter`) propose
placeholder tokens that the committed placeholders accept as far as a drawn count and reject
after, so `engine.shadow_drafts.ShadowDrafts` scores them as it scores real proposals. Each
level's cache is a count (`sync_cached`, the engine's rollback on counts). The clock advances by
the profile's time of the forwards the engine would have run (`env.sim_clock.rows_forwards`),
scaled and plus the per-step overhead that `env.calibrate` fits.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import math

import numpy as np

from engine.config import EngineConfig
from engine.decision import TARGET, Decision
from engine.drafters import MODEL_FREE_DRAFTERS, ModelFreeDrafter
from engine.sequence import Request
from engine.spec_step import PairOutcome, RowResult
from engine.trackers import chain_pair_keys, pair_key
from env.acceptance_counts import signal_key
from env.sim_calibration import SimCalibration
from env.sim_clock import per_row_chains, rows_forwards

SIM_TOKEN_ID = 0                    # the simulator commits placeholder tokens; only their number matters
SIM_REJECTED_ID = SIM_TOKEN_ID + 1  # a shadow proposal's first token the verifier would reject


class SimDrafter(ModelFreeDrafter):
    """A model-free drafter's shadow proposals drawn from its acceptance model: `accepted`
    placeholders (which the committed placeholders repeat) then rejected ones."""

    def __init__(self, name: str, executor: SimExecutor):
        self.name = name
        self.pair = pair_key(name, TARGET)
        self.executor = executor

    def propose(self, request_id: str, context: Sequence[int], k: int) -> list[int]:
        executor = self.executor
        model = executor.calibration.acceptance
        key = signal_key(executor.categories[request_id], executor.signal_of(request_id, self.name))
        u = executor.rng.random(3)
        proposed = model.sample_proposed(self.name, key, k, u[0], u[1])
        if not proposed:
            return []
        accepted = model.sample_accepted(self.pair, key, proposed, u[2])
        return [SIM_TOKEN_ID] * accepted + [SIM_REJECTED_ID] * (proposed - accepted)


class SimExecutor:
    """Args:
        profile: latency of every level (`engine.profile.LatencyProfile`).
        calibration: acceptance models, prompt lengths and the step-time fit.
        config: the engine settings the clock charges catch-up with.
        seed: of the acceptance draws.
    """

    def __init__(self, profile, calibration: SimCalibration, config: EngineConfig, seed: int = 0):
        self.profile = profile
        self.calibration = calibration
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.time = 0.0                                  # the virtual clock, seconds
        self.cached: dict[str, dict[str, int]] = {}      # request id -> model level -> tokens in its cache
        self.categories: dict[str, str] = {}             # request id -> category, for the shadow drafters
        self.pending_signals: dict[str, dict[str, int | None]] = {}   # request id -> drafter -> next step's signal
        self.drafters: dict[str, ModelFreeDrafter] = {
            name: SimDrafter(name, self) for name in MODEL_FREE_DRAFTERS
            if calibration.acceptance.has_pair(pair_key(name, TARGET))}
        self._latency_s = 0.0

    @property
    def level_names(self) -> list[str]:
        return list(self.profile.levels)

    @property
    def model_free_names(self) -> Collection[str]:
        return {name for name, level in self.profile.levels.items() if level.kind == "model_free"}

    def now(self) -> float:
        return self.time

    def run(self, batch: list[Request], decisions: list[Decision], ks: list[int]) -> list[RowResult]:
        """Draw every row's outcome (each on its own decision's chain) and advance the clock by
        the step's modelled time."""
        for request in batch:
            self.categories[request.request_id] = request.category
        chains = [d.chain for d in decisions]
        signals = [self.signal_of(r.request_id, chain[0]) if chain[0] in MODEL_FREE_DRAFTERS else None
                   for r, chain in zip(batch, chains)]
        for request in batch:                # consumed: the rows' next steps show new ones
            self.pending_signals.pop(request.request_id, None)
        results = self.draw(batch, chains, ks, signals, [d.p_min for d in decisions])
        cached = [self.cached.setdefault(r.request_id, {}) for r in batch]
        self._latency_s = self.step_time([r.num_tokens for r in batch], cached, chains, ks, results)
        self.time += self._latency_s
        return results

    def step_time(self, num_tokens: list[int], cached: list[dict[str, int]], chains: Sequence[tuple[str, ...]],
                  ks: list[int], results: list[RowResult]) -> float:
        """The modelled seconds of one step whose rows ran `chains` with `results`."""
        forward_s = prefill_s = 0.0
        forward_time, split = self.profile.forward_time, self.calibration.prefill_tokens or 1 << 30
        for call in rows_forwards(self.profile, num_tokens, cached, chains, ks, results, self.config):
            if call[2] > split:
                prefill_s += forward_time(*call)
            else:
                forward_s += forward_time(*call)
        return self.calibration.step_time_s(forward_s, len(num_tokens), prefill_s)

    def signals(self, request: Request) -> dict[str, int]:
        """Each fitted drafter's signal for the row's next step: drawn once, then what that step's
        proposal is drawn given (`AcceptanceModel.sample_signal`)."""
        self.categories[request.request_id] = request.category
        out = {name: self.signal_of(request.request_id, name) for name in self.drafters}
        return {name: signal for name, signal in out.items() if signal is not None}

    def signal_of(self, request_id: str, drafter: str) -> int | None:
        mine = self.pending_signals.setdefault(request_id, {})
        if drafter not in mine:
            mine[drafter] = self.calibration.acceptance.sample_signal(drafter, self.categories[request_id],
                                                                      float(self.rng.random()))
        return mine[drafter]

    def draw(self, batch: list[Request], chains: tuple[str, ...] | Sequence[tuple[str, ...]], ks: list[int],
             signals: Sequence[int | None] | None = None, p_mins: Sequence[float] | None = None) -> list[RowResult]:
        """Every row's proposal and acceptances on its chain (one chain for all rows, or one per
        row), drawn from the acceptance models (given the first drafter's signal of each row,
        where it has one, and its decision's p_min)."""
        chains = per_row_chains(chains, len(batch))
        width = max(len(chain) for chain in chains) + 1 if chains else 1
        uniforms = self.rng.random(len(batch) * width).tolist()
        signals = signals or [None] * len(batch)
        p_mins = p_mins or [0.0] * len(batch)
        return [self.draw_row(r.category, chain, chain_pair_keys(chain), k, uniforms[i * width:(i + 1) * width],
                              signals[i], p_mins[i])
                for i, (r, chain, k) in enumerate(zip(batch, chains, ks))]

    def draw_row(self, category: str, chain: tuple[str, ...], pair_keys: tuple[str, ...], k: int,
                 uniforms: list[float], signal: int | None = None, p_min: float = 0.0) -> RowResult:
        """Draw what the chain proposes and accepts for one row (the shape `run_step` returns),
        from `len(chain) + 1` uniforms: the same uniforms give the same outcome."""
        if k == 0:
            return RowResult([SIM_TOKEN_ID])
        model = self.calibration.acceptance
        first = signal_key(category, signal)
        lift = 1.0
        if chain[0] in MODEL_FREE_DRAFTERS:
            num = model.sample_proposed(chain[0], first, k, uniforms[0], uniforms[1])
        else:
            continue_odds, lift = model.stop_rates(pair_keys[0], p_min)
            num = stopped_length(k, continue_odds, uniforms[0])
        pairs = []
        for i, key in enumerate(pair_keys):
            accepted = model.sample_accepted(key, first if i == 0 else category, num, uniforms[2 + i],
                                             lift if i == 0 else 1.0)
            pairs.append(PairOutcome(chain[i], chain[i + 1], num, accepted))
            num = accepted + 1
        return RowResult([SIM_TOKEN_ID] * num, pairs)

    def sync(self, request: Request, decision: Decision, k: int, result: RowResult, num_committed: int) -> None:
        sync_cached(self.cached[request.request_id], request.num_tokens, num_committed, decision.chain, k, result)

    def release(self, request: Request) -> None:
        self.cached.pop(request.request_id, None)
        self.categories.pop(request.request_id, None)
        self.pending_signals.pop(request.request_id, None)

    def step_latency(self, elapsed_s: float) -> float:
        return self._latency_s

    def cached_lengths(self, request: Request) -> dict[str, int]:
        have = self.cached.get(request.request_id, {})
        return {name: have.get(name, 0) for name, level in self.profile.levels.items() if level.kind == "model"}


def stopped_length(k: int, continue_odds: float, uniform: float) -> int:
    """Tokens a model level proposes of K when it goes on with probability c per token, from a
    uniform in [0, 1): P(L >= m) = c^m, inverted."""
    if continue_odds >= 1.0:
        return k
    if continue_odds <= 0.0:
        return 0
    return min(k, int(math.log1p(-uniform) / math.log(continue_odds)))


def sync_cached(levels: dict[str, int], total: int, num_committed: int, chain: tuple[str, ...], k: int,
                result: RowResult) -> None:
    """What each level's cache holds after the engine's rollback (`ModelLevel.sync`): the tokens
    before the step plus those of its fed proposal that were committed, never the last committed
    token. Level i's proposal survives into the commit as far as every level from i up accepted
    it: min(n_i, ..., n_last); a model drafter fed its first k - 1 drafts."""
    if k == 0:
        levels[TARGET] = total - 1
        return
    before = total - num_committed
    survived = num_committed - 1
    for i in range(len(chain) - 1, 0, -1):
        survived = min(survived, result.pairs[i - 1].num_accepted)
        levels[chain[i]] = before + survived
    if chain[0] not in MODEL_FREE_DRAFTERS:
        levels[chain[0]] = before + min(k - 1, survived)
