"""The real backend: the engine itself on wall-clock time, routed by the environment's action.

Time is `time.monotonic()` shifted by the idle periods the episode skipped (when nothing is
queued or running nobody waits, so skipping them changes no latency). On a machine shared with
other busy processes, `real_clock="cpu"` uses this process's own CPU time instead (with one
torch thread, close to the wall time on an idle machine, as `python -m engine.profile --clock
cpu` measures the shipped profile): step latencies and the first-token and finish times of the
step's requests are then stamped from that clock.
"""

from __future__ import annotations

import time

import torch

from engine.config import EngineConfig
from engine.engine import Engine
from engine.sampling import SamplingParams
from engine.sequence import Request
from env.backend import EngineBackend
from env.config import EnvConfig, EnvConfigError, resolve_path
from env.prompt_sources import Prompt
from env.sim_calibration import SimCalibration
from env.workloads import WorkloadRequest

DRAFT_NAME = "draft"


def build_engine(config: EnvConfig) -> Engine:
    """The target (embedded SmolLM2 or a local path) and, if given, the trained draft."""
    real = config.real
    if real.engine_factory is not None:
        engine = real.engine_factory()
        if not isinstance(engine, Engine):
            raise EnvConfigError(f"engine_factory returned {type(engine).__name__}, not an Engine")
        return engine
    from engine.build import DraftSpec
    if real.num_threads:          # the environment loads and runs its own engine in this process
        torch.set_num_threads(real.num_threads)
    drafts = [] if real.draft is None else [DraftSpec(DRAFT_NAME, resolve_path(real.draft), if_absent="skip")]
    engine_config = EngineConfig(max_num_seqs=config.max_num_seqs, max_num_tokens=config.max_num_tokens,
                                 max_model_len=config.max_model_len,
                                 quantized_levels=real.quantized_levels,
                                 **real.precision_kwargs(release_model_weights=True))
    return Engine.from_pretrained(real.model, drafts=drafts, config=engine_config)


def encode_prompt(engine: Engine, prompt: Prompt, keep: int, room: int) -> list[int]:
    """Token ids of a workload prompt: its text cut to its last `keep` tokens, then rendered with
    the chat template when it is a chat prompt, then cut to `room` tokens (the engine's context
    minus the output)."""
    text = prompt.text
    content = engine.tokenizer.encode(text, add_special_tokens=False)
    if len(content) > keep:
        text = engine.tokenizer.decode(content[-keep:], skip_special_tokens=True) or text[-keep:]
    ids = engine.encode_prompt([{"role": "user", "content": text}] if prompt.is_chat else text)
    return ids[-room:]


class RealBackend(EngineBackend):
    def __init__(self, config: EnvConfig):
        self.engine = build_engine(config)
        self.max_model_len = self.engine.config.max_model_len
        self.max_prompt_tokens = config.workload.max_prompt_tokens
        for decision in config.decisions:
            try:
                self.engine.validate_decision(decision)
            except ValueError as exc:
                raise EnvConfigError(f"action {decision.label}: {exc}") from None
        acceptance_path = resolve_path(config.acceptance)
        if config.real.engine_factory is None and acceptance_path.exists():
            # trackers start from the fitted acceptance, as the simulator's and the server's do
            fitted = SimCalibration.load(acceptance_path).acceptance
            self.engine.set_acceptance_priors(fitted.per_token_acceptance(), fitted.confidence_histograms())
        if self.engine.profile is None and config.real.engine_factory is None and resolve_path(config.sim.profile).exists():
            # the observation's costs are relative to a profile: the shipped one of this forward path
            from engine.profile import LatencyProfile
            self.engine.set_profile(LatencyProfile.load(resolve_path(config.sim.profile)))
        self.is_cpu_clock = config.real.real_clock == "cpu"
        if self.is_cpu_clock and torch.get_num_threads() != 1:
            raise EnvConfigError("real_clock='cpu' needs one torch thread (num_threads=1): the CPU time of "
                                 "several threads is not latency")
        self.timer = time.process_time if self.is_cpu_clock else time.monotonic
        self.engine.use_clock(self.timer)       # stamps step latencies, first-token and finish times
        self.origin = self.timer()

    def reset(self, seed: int) -> None:
        """Abort what the last episode left, forget acceptance and drafter history, restart the clock.
        (`seed` is unused: the real engine decodes greedily and its latencies are the machine's.)"""
        for request_id in list(self.engine.scheduler.requests):
            self.engine.abort(request_id)
        self.engine.trackers.reset()
        self.engine.forget_drafter_history()     # its history would leak one episode into the next
        self.origin = self.timer()

    def now(self) -> float:
        return self.timer() - self.origin

    def skip_to(self, t: float) -> None:
        self.origin -= max(0.0, t - self.now())

    def add(self, item: WorkloadRequest, request_id: str) -> Request:
        room = self.max_model_len - item.max_new_tokens - 1
        ids = encode_prompt(self.engine, item.prompt, min(self.max_prompt_tokens, room), room)
        params = SamplingParams(max_tokens=item.max_new_tokens, ignore_eos=True)
        self.engine.add_request(ids, params, request_id=request_id, category=item.prompt.category,
                                arrival_time=self.origin + item.arrival_s)
        return self.engine.scheduler.requests[request_id]

    def close(self) -> None:
        for request_id in list(self.engine.scheduler.requests):
            self.engine.abort(request_id)
