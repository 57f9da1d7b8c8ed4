"""The simulator backend: the engine's own step (`engine.core.EngineCore`) on a virtual clock.

`SimEngine` is an `EngineCore` whose executor is `env.sim_executor.SimExecutor`: acceptance
drawn from the fitted per-category models, latency from the profile. Scheduling, K capping,
commit, shadow drafting, rollback bookkeeping and the trackers are the real engine's code.
`SimBackend` is the environment's view of it: requests from the workload, the virtual clock.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from engine.config import EngineConfig
from engine.core import EngineCore
from engine.decision import TARGET
from engine.sampling import SamplingParams
from engine.scheduler import Scheduler
from engine.sequence import Request
from env.backend import EngineBackend
from env.config import EnvConfig, EnvConfigError, resolve_path
from env.cost_curves import CurveEnvelope, warp_profile
from env.sim_calibration import SimCalibration
from env.sim_executor import SIM_TOKEN_ID, SimExecutor
from env.workloads import WorkloadRequest


class SimEngine(EngineCore):
    """The engine's step over a `SimExecutor`; no model, no tokenizer."""

    def __init__(self, config: EngineConfig, profile, calibration: SimCalibration, seed: int = 0,
                 priors: dict[str, float] | None = None):
        executor = SimExecutor(profile, calibration, config, seed)
        super().__init__(config, executor, Scheduler(config, set(), None))
        self.set_profile(profile)
        # seeded with the fitted acceptance, as the server's trackers are (serving.launch), also
        # when this episode's drafters are randomised away from it
        self.set_acceptance_priors(priors if priors is not None else calibration.acceptance.per_token_acceptance(),
                                   calibration.acceptance.confidence_histograms())
        self.use_clock(executor.now)

    def add(self, request: Request) -> None:
        self.scheduler.add(request)

    def reseed(self, seed: int) -> None:
        """New acceptance draws from here on."""
        self.executor.rng = np.random.default_rng(seed)

    def skip_to(self, t: float) -> None:
        """Move the virtual clock forward to `t` (idle time)."""
        self.executor.time = max(self.executor.time, t)


class SimBackend(EngineBackend):
    """The environment's view of a `SimEngine`: requests from the workload, a virtual clock."""

    def __init__(self, config: EnvConfig):
        from engine.profile import LatencyProfile
        try:
            self.profile = LatencyProfile.load(resolve_path(config.sim.profile))
            self.calibration = SimCalibration.load(resolve_path(config.acceptance))
        except (FileNotFoundError, ValueError) as exc:
            raise EnvConfigError(str(exc)) from None
        levels = sorted({name for d in config.decisions for name in d.chain} | {TARGET})
        missing = [name for name in levels if name not in self.profile.levels]
        if missing:
            raise EnvConfigError(f"the latency profile {config.sim.profile} has no levels {missing}; "
                                 f"it has {sorted(self.profile.levels)}")
        for pair in config.pairs:
            if not self.calibration.acceptance.has_pair(pair):
                raise EnvConfigError(f"the acceptance models in {config.acceptance} have no data for {pair!r}; "
                                     "run `python -m env.calibrate` with that drafter")
        self.engine_config = EngineConfig(max_num_seqs=config.max_num_seqs, max_num_tokens=config.max_num_tokens,
                                          max_model_len=config.max_model_len)
        self.max_prompt_tokens = config.workload.max_prompt_tokens
        self.randomize_latency = config.sim.randomize_latency
        self.randomize_acceptance = config.sim.randomize_acceptance
        self.curve_envelope = CurveEnvelope() if config.sim.randomize_curve else None
        self.priors = self.calibration.acceptance.per_token_acceptance()
        self.episode_calibration = self.calibration
        self.episode_profile = self.profile
        self.engine = SimEngine(self.engine_config, self.profile, self.calibration)

    def reset(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.episode_calibration = self.randomized(rng)
        self.episode_profile = self.profile
        if self.curve_envelope is not None:     # drawn after the scalars: a seed's other draws stay as they were
            curve = self.curve_envelope.draw(np.random.default_rng([seed, 1]), self.profile.levels)
            self.episode_profile = warp_profile(self.profile, curve)
        self.engine = SimEngine(self.engine_config, self.episode_profile, self.episode_calibration, seed, self.priors)

    def randomized(self, rng: np.random.Generator) -> SimCalibration:
        """This episode's simulator (domain randomisation, `SimBackendConfig.randomize_*`): the step
        time scaled by one factor, each pair's acceptance odds by its own; the fit itself when
        both ranges are 0."""
        if not self.randomize_latency and not self.randomize_acceptance:
            return self.calibration
        scale = float(np.exp(rng.uniform(-self.randomize_latency, self.randomize_latency)))
        pairs = sorted(self.calibration.acceptance.pairs)
        factors = np.exp(rng.uniform(-self.randomize_acceptance, self.randomize_acceptance, len(pairs)))
        cal = self.calibration
        return dataclasses.replace(
            cal, acceptance=cal.acceptance.perturbed(dict(zip(pairs, factors.tolist()))),
            profile_scale=cal.profile_scale * scale, prefill_scale=cal.prefill_scale * scale,
            step_overhead_s=cal.step_overhead_s * scale, row_overhead_s=cal.row_overhead_s * scale)

    def reseed(self, seed: int) -> None:
        """New acceptance draws from here on, same requests (repeated runs of one window)."""
        self.engine.reseed(seed)

    def now(self) -> float:
        return self.engine.clock()

    def skip_to(self, t: float) -> None:
        self.engine.skip_to(t)

    def add(self, item: WorkloadRequest, request_id: str) -> Request:
        room = self.engine_config.max_model_len - item.max_new_tokens - 1
        num_prompt = min(self.calibration.prompt_tokens(item.prompt, min(self.max_prompt_tokens, room)), room)
        params = SamplingParams(max_tokens=item.max_new_tokens, ignore_eos=True, seed=0)
        request = Request(request_id, [SIM_TOKEN_ID] * num_prompt, params, arrival_time=item.arrival_s,
                          category=item.prompt.category)
        request.generator = None        # nothing is sampled with torch here; keeps cloning cheap
        self.engine.add(request)
        return request

    # ---- cloning for look-ahead baselines ----------------------------------------------------
    def shared_objects(self) -> list:
        """Immutable during an episode: shared by clones instead of copied."""
        return [self.profile, self.episode_profile, self.calibration, self.episode_calibration, self.engine_config]

    def state(self) -> SimEngine:
        return self.engine

    def load_state(self, state: SimEngine) -> None:
        self.engine = state

    def close(self) -> None:
        pass
