"""Environment settings (`EnvConfig`), checked on construction; bad values raise `EnvConfigError`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium

from data.paths import REPO_ROOT
from engine.config import engine_field, num_threads_field
from engine.decision import Decision, as_decision
from engine.precision import PrecisionArgs
from env.workloads import WorkloadSpec, resolve_workload
from router.config import RouterConfig
from router.observation import ObservationSpec, observation_spec_for, pairs_of

BACKENDS = ("sim", "real")
DEFAULT_ACTIONS = ("plain", "ngram>target@2", "ngram>target@4", "ngram>target@8",
                   "suffix>target@2", "suffix>target@4", "suffix>target@8",
                   "int4>target@2", "int4>target@3", "int4>target@5", "ngram>int4>target@4",
                   "draft>target@2", "draft>target@4", "ngram>draft>target@4")
DEFAULT_DRAFT = "checkpoints/draft"


class EnvConfigError(gymnasium.error.Error, ValueError):
    """A bad environment argument (unknown workload, bad rate, unknown backend, ...)."""


def resolve_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _positive(name: str, value, integer: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise EnvConfigError(f"{name} must be {'an integer' if integer else 'a number'} > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise EnvConfigError(f"{name} must be {'an integer' if integer else 'a finite number'} > 0, got {value!r}")


@dataclass
class EnvConfig(PrecisionArgs):
    """Args:
        backend: "sim" (virtual clock, fitted latency and acceptance) or "real" (the engine, wall clock).
        workload: a preset name (env.WORKLOADS), a dict of WorkloadSpec fields, or a WorkloadSpec.
        actions: the (chain, K) list the Discrete action indexes: "plain", "ngram>target@4", Decisions.
        max_num_seqs / max_num_tokens / max_model_len: the engine's batching limits (both backends;
            max_num_seqs and max_model_len take EngineConfig's defaults).
        slo_tpot_s / slo_ttft_s: per-request SLO on mean time per output token and time to first token.
        slo_penalty: reward subtracted per finished request that missed either SLO.
        max_steps: the episode is truncated after this many steps.
        profile: latency profile JSON (sim), relative to the repository root unless absolute;
            the default is the embedded model's on the default forward path (float32-prepacked).
        acceptance: fitted acceptance models JSON (sim), written by `python -m env.calibrate`.
        model: the real backend's target: "default" (embedded SmolLM2) or a local path.
        draft: the real backend's trained draft checkpoint directory (loaded when it has a manifest);
            None for model-free drafters only.
        quantized_levels: the real backend's quantized copies of the target (a command's default:
            engine.config.COMMAND_DEFAULTS).
        randomize_latency / randomize_acceptance: domain randomisation of the sim, per episode:
            step times scaled by exp(U(-r, r)), each pair's acceptance odds by exp(U(-r, r)),
            so a policy trained on it has seen machines and drafters unlike the calibrated one.
        engine_factory: the real backend calls it to build its Engine instead (tests, tiny models).
        num_threads: torch threads for the real backend (0 keeps torch's default).
        real_clock: the real backend's clock: "wall", or "cpu" (this process's CPU time, with
            num_threads=1: idle-machine latency measured on a busy machine).
        max_queue / max_rate / max_latency_s / max_wait_s: upper ends of the observation's ranges.
    """

    backend: str = "sim"
    workload: str | dict | WorkloadSpec = "sharegpt"
    actions: tuple = DEFAULT_ACTIONS
    max_num_seqs: int = engine_field("max_num_seqs")
    max_num_tokens: int = engine_field("max_num_tokens")
    max_model_len: int = engine_field("max_model_len")
    slo_tpot_s: float = 0.25
    slo_ttft_s: float = 5.0
    slo_penalty: float = 20.0
    max_steps: int = 4096
    profile: str = "profiles/SmolLM2-135M-Instruct.float32-prepacked.json"   # the default forward path
    acceptance: str = "profiles/acceptance_SmolLM2-135M-Instruct.json"
    model: str = "default"
    draft: str | None = DEFAULT_DRAFT
    quantized_levels: str = engine_field("quantized_levels")
    randomize_latency: float = 0.0
    randomize_acceptance: float = 0.0
    engine_factory: Callable | None = None
    num_threads: int = num_threads_field()
    real_clock: str = "wall"
    max_queue: int = 256
    max_rate: float = 100.0
    max_latency_s: float = 30.0
    max_wait_s: float = 600.0
    decisions: tuple[Decision, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise EnvConfigError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        try:
            self.workload = resolve_workload(self.workload)
        except (ValueError, TypeError) as exc:
            raise EnvConfigError(str(exc)) from None
        if isinstance(self.actions, (str, Decision)) or not self.actions:
            raise EnvConfigError("actions must be a non-empty list of (chain, K) such as ['plain', 'ngram>target@4']")
        try:
            self.decisions = tuple(as_decision(a) for a in self.actions)
        except ValueError as exc:
            raise EnvConfigError(str(exc)) from None
        labels = [d.label for d in self.decisions]
        if len(set(labels)) != len(labels):
            raise EnvConfigError(f"actions repeat a (chain, K): {labels}")
        for name in ("max_num_seqs", "max_num_tokens", "max_model_len", "max_steps", "max_queue"):
            _positive(name, getattr(self, name), integer=True)
        for name in ("slo_tpot_s", "slo_ttft_s", "max_rate", "max_latency_s", "max_wait_s"):
            _positive(name, getattr(self, name))
        if isinstance(self.slo_penalty, bool) or not isinstance(self.slo_penalty, (int, float)) \
                or not math.isfinite(self.slo_penalty) or self.slo_penalty < 0:
            raise EnvConfigError(f"slo_penalty must be a finite number >= 0, got {self.slo_penalty!r}")
        for name in ("randomize_latency", "randomize_acceptance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3:
                raise EnvConfigError(f"{name} must be a number in [0, 3] (a log factor), got {value!r}")
        if self.max_num_tokens < self.max_model_len:
            raise EnvConfigError("max_num_tokens must be at least max_model_len")
        if self.workload.max_new_tokens >= self.max_model_len:
            raise EnvConfigError(f"the workload's max_new_tokens ({self.workload.max_new_tokens}) must be "
                                 f"below max_model_len ({self.max_model_len})")
        if self.real_clock not in ("wall", "cpu"):
            raise EnvConfigError(f"real_clock must be 'wall' or 'cpu', got {self.real_clock!r}")
        if self.engine_factory is not None and not callable(self.engine_factory):
            raise EnvConfigError("engine_factory must be callable (it returns an Engine)")

    @property
    def action_labels(self) -> list[str]:
        return [d.label for d in self.decisions]

    @property
    def pairs(self) -> list[str]:
        """Every (drafter > verifier) pair the actions use, in first-use order."""
        return pairs_of(self.decisions)

    def observation_spec(self) -> ObservationSpec:
        """The observation layout of these settings (the server builds the same from its own, `RouterConfig`)."""
        return observation_spec_for(self.decisions, RouterConfig(
            max_batch=self.max_num_seqs, max_model_len=self.max_model_len, slo_tpot_s=self.slo_tpot_s,
            slo_ttft_s=self.slo_ttft_s, max_queue=self.max_queue, max_rate=self.max_rate,
            max_latency_s=self.max_latency_s, max_wait_s=self.max_wait_s, slo_penalty=self.slo_penalty))
