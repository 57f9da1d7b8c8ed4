"""The simulator: the engine's scheduler and trackers on a virtual clock, with no model.

Only "run a step" differs from the real engine. For each running row the simulator draws how
many tokens the first level proposes and how many each verifier accepts from the fitted
per-category acceptance models, builds the same `RowResult`/`PairOutcome`s the engine's
`run_step` returns, commits placeholder tokens through the same `Scheduler.commit` (so
max_tokens and context limits act identically) and feeds the same `StepRecord` to the same
acceptance trackers, including the shadow proposals of the model-free drafters a row did not
run (engine/shadow_drafts.py; here drawn from the same models, and reported once as many tokens
are committed as the engine needs to settle them). The clock advances by the profile's time of
the forwards the engine would have run (`env.sim_clock.rows_forwards`: grouped by level and
padded as the engine's ragged batches are, including prefill and the lazy catch-up of levels
that sat out), scaled and plus the per-step overhead that `env.calibrate` fits.
"""

from __future__ import annotations

import numpy as np

from engine.config import EngineConfig
from engine.decision import TARGET, Decision, capped_draft_length
from engine.drafters import MODEL_FREE_DRAFTERS
from engine.engine import StepRecord
from engine.sampling import SamplingParams
from engine.scheduler import Scheduler
from engine.sequence import Request
from engine.spec_step import PairOutcome, RowResult
from engine.trackers import AcceptanceTrackers, pair_key
from env.config import EnvConfig, EnvConfigError, resolve_path
from env.sim_calibration import SimCalibration
from env.sim_clock import rows_forwards
from env.workloads import WorkloadRequest

SIM_TOKEN_ID = 0        # the simulator commits placeholder tokens; only their number matters


class SimEngine:
    """Engine-shaped (scheduler, trackers, add, step, last_step) with simulated steps."""

    def __init__(self, config: EngineConfig, profile, calibration: SimCalibration, seed: int = 0):
        self.config = config
        self.profile = profile
        self.calibration = calibration
        self.scheduler = Scheduler(config, set(), None)
        # seeded with the fitted acceptance, as the server's trackers are (serving.launch)
        self.trackers = AcceptanceTrackers(priors=calibration.acceptance.per_token_acceptance())
        self.rng = np.random.default_rng(seed)
        self.clock = 0.0
        self.last_step = StepRecord()
        self.cached: dict[str, dict[str, int]] = {}      # request id -> model level -> tokens in its cache
        # (request id, drafter) -> [tokens still to commit before it settles, proposed, accepted]
        self.shadow: dict[tuple[str, str], list[int]] = {}

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished

    def add(self, request: Request) -> None:
        self.scheduler.add(request)
        self.cached[request.request_id] = {}

    def draft_length(self, request: Request, decision: Decision) -> int:
        """K capped by the row's remaining budget and the context: the engine's own rule."""
        return capped_draft_length(request, decision, self.config.max_model_len)

    # ---- one simulated step ----------------------------------------------------------------
    def _row_result(self, category: str, chain: tuple[str, ...], pair_keys: tuple[str, ...], k: int,
                    uniforms: list[float]) -> RowResult:
        """Draw what the chain proposes and accepts for one row (the shape `run_step` returns)."""
        if k == 0:
            return RowResult([SIM_TOKEN_ID])
        model = self.calibration.acceptance
        num = model.sample_proposed(chain[0], category, k, uniforms[0], uniforms[1]) \
            if chain[0] in MODEL_FREE_DRAFTERS else k
        pairs = []
        for i, key in enumerate(pair_keys):
            accepted = model.sample_accepted(key, category, num, uniforms[2 + i])
            pairs.append(PairOutcome(chain[i], chain[i + 1], num, accepted))
            num = accepted + 1
        return RowResult([SIM_TOKEN_ID] * num, pairs)

    def _shadow_pairs(self, request: Request, chain: tuple[str, ...], appended: int) -> list[PairOutcome]:
        """engine/shadow_drafts.py on the acceptance models: a proposal of `shadow_draft_length`
        tokens starts after each step whose chain (`()` for plain) did not run the drafter; it
        settles when the accepted prefix plus the first rejected token are committed."""
        length = self.config.shadow_draft_length
        model = self.calibration.acceptance
        outcomes: list[PairOutcome] = []
        for name in MODEL_FREE_DRAFTERS:
            pair = pair_key(name, TARGET)
            key = (request.request_id, name)
            if not length or name in chain or not model.has_pair(pair):
                self.shadow.pop(key, None)
                continue
            pending = self.shadow.get(key)
            if pending is not None:
                pending[0] -= appended
                if pending[0] > 0 and not request.is_finished:
                    continue
                del self.shadow[key]
                needed, proposed, accepted = pending
                if needed > 0:                      # the request ended first: what it saw matched
                    proposed = accepted = min(accepted + 1, proposed) - needed
                if proposed > 0:
                    outcomes.append(PairOutcome(name, TARGET, proposed, accepted))
            if not request.is_finished:
                u = self.rng.random(3)
                proposed = model.sample_proposed(name, request.category, length, u[0], u[1])
                if proposed:
                    accepted = model.sample_accepted(pair, request.category, proposed, u[2])
                    self.shadow[key] = [min(accepted + 1, proposed), proposed, accepted]
                else:
                    outcomes.append(PairOutcome(name, TARGET, 0, 0))
        return outcomes

    def step(self, decision: Decision) -> list[tuple[Request, int]]:
        """One step; returns each row's request with the number of tokens it committed."""
        batch = self.scheduler.admit()
        if not batch:
            self.last_step = StepRecord()
            return []
        chain = decision.chain
        pair_keys = tuple(pair_key(a, b) for a, b in zip(chain, chain[1:]))
        width = len(chain) + 1
        uniforms = self.rng.random(len(batch) * width).tolist()
        ks = [self.draft_length(r, decision) for r in batch]
        results = [self._row_result(r.category, chain, pair_keys, k, uniforms[i * width:(i + 1) * width])
                   for i, (r, k) in enumerate(zip(batch, ks))]
        cached = [self.cached[r.request_id] for r in batch]
        forward_s = prefill_s = 0.0
        forward_time, split = self.profile.forward_time, self.calibration.prefill_tokens or 1 << 30
        for call in rows_forwards(self.profile, [r.num_tokens for r in batch], cached, chain, ks, results):
            if call[2] > split:
                prefill_s += forward_time(*call)
            else:
                forward_s += forward_time(*call)
        latency = self.calibration.step_time_s(forward_s, len(batch), prefill_s)
        self.clock += latency
        rows: list[tuple[Request, int]] = []
        num_committed = 0
        for request, k, result, levels in zip(batch, ks, results, cached):
            appended = len(self.scheduler.commit(request, result.tokens, self.clock))
            num_committed += appended
            request.stats.observe_step(result.num_proposed, min(result.num_accepted, appended))
            result.shadow_pairs = self._shadow_pairs(request, chain if k > 0 else (), appended)
            sync_cached(levels, request.num_tokens, appended, chain, k, result)
            rows.append((request, appended))
        self.last_step = StepRecord([decision] * len(batch), results, [r.request_id for r in batch],
                                    num_committed, latency, len(batch))
        self.trackers.observe_step(self.last_step)
        for request in batch:
            if request.is_finished:
                self.scheduler.pop_finished(request)
                self.trackers.forget_request(request.request_id)
                del self.cached[request.request_id]
        return rows


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


class SimBackend:
    """The environment's view of a `SimEngine`: requests from the workload, a virtual clock."""

    def __init__(self, config: EnvConfig):
        from engine.profile import LatencyProfile
        try:
            self.profile = LatencyProfile.load(resolve_path(config.profile))
            self.calibration = SimCalibration.load(resolve_path(config.acceptance))
        except (FileNotFoundError, ValueError) as exc:
            raise EnvConfigError(str(exc)) from None
        levels = sorted({name for d in config.decisions for name in d.chain} | {TARGET})
        missing = [name for name in levels if name not in self.profile.levels]
        if missing:
            raise EnvConfigError(f"the latency profile {config.profile} has no levels {missing}; "
                                 f"it has {sorted(self.profile.levels)}")
        for pair in config.pairs:
            if not self.calibration.acceptance.has_pair(pair):
                raise EnvConfigError(f"the acceptance models in {config.acceptance} have no data for {pair!r}; "
                                     "run `python -m env.calibrate` with that drafter")
        self.engine_config = EngineConfig(max_batch=config.max_batch, max_num_tokens=config.max_num_tokens,
                                          max_model_len=config.max_model_len)
        self.max_prompt_tokens = config.workload.max_prompt_tokens
        self.engine = SimEngine(self.engine_config, self.profile, self.calibration)

    @property
    def scheduler(self) -> Scheduler:
        return self.engine.scheduler

    @property
    def has_unfinished(self) -> bool:
        return self.engine.has_unfinished

    def reset(self, seed: int) -> None:
        self.engine = SimEngine(self.engine_config, self.profile, self.calibration, seed)

    def reseed(self, seed: int) -> None:
        """New acceptance draws from here on, same requests (repeated runs of one window)."""
        self.engine.rng = np.random.default_rng(seed)

    def now(self) -> float:
        return self.engine.clock

    def skip_to(self, t: float) -> None:
        self.engine.clock = max(self.engine.clock, t)

    def add(self, item: WorkloadRequest, request_id: str) -> Request:
        room = self.engine_config.max_model_len - item.max_new_tokens - 1
        num_prompt = min(self.calibration.prompt_tokens(item.prompt, min(self.max_prompt_tokens, room)), room)
        params = SamplingParams(max_tokens=item.max_new_tokens, ignore_eos=True, seed=0)
        request = Request(request_id, [SIM_TOKEN_ID] * num_prompt, params, arrival_time=item.arrival_s,
                          category=item.prompt.category)
        request.generator = None        # nothing is sampled with torch here; keeps cloning cheap
        self.engine.add(request)
        return request

    def step(self, decision: Decision) -> tuple[list[tuple[Request, int]], float]:
        rows = self.engine.step(decision)
        return rows, self.engine.last_step.latency_s

    def acceptance(self, pairs: list[str]) -> dict[str, float]:
        trackers = self.engine.trackers
        return {pair: trackers.acceptance(pair) for pair in pairs}

    # ---- cloning for look-ahead baselines ----------------------------------------------------
    def shared_objects(self) -> list:
        """Immutable during an episode: shared by clones instead of copied."""
        return [self.profile, self.calibration, self.engine_config]

    def state(self) -> SimEngine:
        return self.engine

    def load_state(self, state: SimEngine) -> None:
        self.engine = state

    def close(self) -> None:
        pass
