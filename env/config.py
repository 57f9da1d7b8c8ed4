"""Environment settings, checked on construction; bad values raise `EnvConfigError`.

`EnvConfig` holds what both backends need; `SimBackendConfig` and `RealBackendConfig` hold what
only the simulator or only the real engine reads. `EnvConfig.from_kwargs` takes SpecRoute-v0's
flat keywords (`profile=...`, `model=...`) onto them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import gymnasium

from data.paths import REPO_ROOT
from engine.config import engine_field, num_threads_field
from engine.decision import Decision, as_decision
from engine.precision import PrecisionArgs
from engine.profile.latency_profile import profile_file
from env.workloads import WorkloadSpec, resolve_workload
from router.config import RouterConfig
from router.observation import ObservationSpec, observation_spec_for, pairs_of

BACKENDS = ("sim", "real")
# drafts that stop inside the step below a top-1 probability (Decision.p_min)
STOP_ACTIONS = ("int4>target@k8p0.5", "int4>target@k8p0.8", "draft>target@k8p0.5", "draft>target@k8p0.8")
DEFAULT_ACTIONS = ("plain", "ngram>target@2", "ngram>target@4", "ngram>target@8",
                   "suffix>target@2", "suffix>target@4", "suffix>target@8",
                   "int4>target@2", "int4>target@3", "int4>target@5", "ngram>int4>target@4",
                   "draft>target@2", "draft>target@4", "ngram>draft>target@4") + STOP_ACTIONS
DEFAULT_DRAFT = "checkpoints/draft"
SIM_MODEL, SIM_PATH = "SmolLM2-135M-Instruct", "float32-prepacked"     # the embedded model, the default path
SHIPPED_SIM_PROFILE = profile_file(SIM_MODEL, SIM_PATH)
# the observation's ranges and the reward's penalty, declared once, by the router (the server's side)
ROUTER_DEFAULTS = {item.name: item.default for item in fields(RouterConfig) if item.default is not MISSING}


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


@lru_cache(maxsize=1)
def default_sim_profile() -> str:
    """The simulator's default latency profile, the embedded model's on the default path: this
    machine's curve (engine/profile/machine_curve.py, written when a server first starts here),
    else the shipped file, measured on another machine. Logs which (INFO), once per file: a
    command's stderr stays its own (one-line errors)."""
    from engine.profile import machine_profile_file
    curve = machine_profile_file(SIM_MODEL, SIM_PATH)
    chosen, origin = (str(curve), "this machine's calibrated curve") if curve.exists() else \
        (SHIPPED_SIM_PROFILE, "shipped, measured on another machine")
    _log_profile_once(chosen, origin)
    return chosen


@lru_cache(maxsize=None)
def _log_profile_once(chosen: str, origin: str) -> None:
    logging.getLogger("specroute.env").info("simulator latency profile: %s (%s)", chosen, origin)


@dataclass
class SimBackendConfig:
    """What only the simulator reads.

    Args:
        profile: latency profile JSON, relative to the repository root unless absolute; the
            default is the embedded model's on the default forward path (float32-prepacked):
            this machine's calibrated curve when a server has made one, else the shipped file.
        randomize_latency / randomize_acceptance: domain randomisation, per episode: step times
            scaled by exp(U(-r, r)), each pair's acceptance odds by exp(U(-r, r)), so a policy
            trained on it has seen machines and drafters unlike the calibrated one.
        randomize_curve: per episode, a machine's cost curve from `env.cost_curves.CurveEnvelope`
            (scale, how steeply a forward grows with tokens per row and with batch, each draft
            level's cost relative to the target), flat Intel-AMX-like to steep Zen-fp32-like.
    """

    profile: str = ""                    # "": default_sim_profile()
    randomize_latency: float = 0.0
    randomize_acceptance: float = 0.0
    randomize_curve: bool = False

    def __post_init__(self) -> None:
        if not self.profile:
            self.profile = default_sim_profile()
        if not isinstance(self.randomize_curve, bool):
            raise EnvConfigError(f"randomize_curve must be True or False, got {self.randomize_curve!r}")
        for name in ("randomize_latency", "randomize_acceptance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3:
                raise EnvConfigError(f"{name} must be a number in [0, 3] (a log factor), got {value!r}")


@dataclass
class RealBackendConfig(PrecisionArgs):
    """What only the real backend reads (and the forward path: dtype, kernel, weights, device, attention).

    Args:
        model: the target: "default" (embedded SmolLM2) or a local path.
        draft: the trained draft checkpoint directory (loaded when it has a manifest); None for
            model-free drafters only.
        quantized_levels: quantized copies of the target (a command's default: engine.config.COMMAND_DEFAULTS).
        engine_factory: called to build the Engine instead (tests, tiny models).
        num_threads: torch threads (0 keeps torch's default).
        real_clock: "wall", or "cpu" (this process's CPU time, with num_threads=1: idle-machine
            latency measured on a busy machine).
    """

    model: str = "default"
    draft: str | None = DEFAULT_DRAFT
    quantized_levels: str = engine_field("quantized_levels")
    engine_factory: Callable | None = None
    num_threads: int = num_threads_field()
    real_clock: str = "wall"

    def __post_init__(self) -> None:
        if self.real_clock not in ("wall", "cpu"):
            raise EnvConfigError(f"real_clock must be 'wall' or 'cpu', got {self.real_clock!r}")
        if self.engine_factory is not None and not callable(self.engine_factory):
            raise EnvConfigError("engine_factory must be callable (it returns an Engine)")


BACKEND_CONFIGS = {"sim": SimBackendConfig, "real": RealBackendConfig}


@dataclass
class EnvConfig:
    """Args:
        backend: "sim" (virtual clock, fitted latency and acceptance) or "real" (the engine, wall clock).
        workload: a preset name (env.WORKLOADS), a dict of WorkloadSpec fields, or a WorkloadSpec.
        actions: the (chain, K) list the Discrete action indexes: "plain", "ngram>target@4", Decisions.
        max_num_seqs / max_num_tokens / max_model_len: the engine's batching limits (max_num_seqs
            and max_model_len take EngineConfig's defaults).
        slo_tpot_s / slo_ttft_s: per-request SLO on mean time per output token and time to first token.
        slo_penalty: reward subtracted per finished request that missed either SLO.
        max_steps: the episode is truncated after this many steps.
        acceptance: fitted acceptance models JSON, written by `python -m env.calibrate`: the
            simulator samples from it, the real engine's trackers start from it.
        max_queue / max_rate / max_latency_s / max_wait_s: upper ends of the observation's ranges
            (`RouterConfig`'s defaults, as the server's).
        sim / real: the settings only that backend reads (both are checked, whichever backend runs).
    """

    backend: str = "sim"
    workload: str | dict | WorkloadSpec = "sharegpt"
    actions: tuple = DEFAULT_ACTIONS
    max_num_seqs: int = engine_field("max_num_seqs")
    max_num_tokens: int = engine_field("max_num_tokens")
    max_model_len: int = engine_field("max_model_len")
    slo_tpot_s: float = 0.25
    slo_ttft_s: float = 5.0
    slo_penalty: float = ROUTER_DEFAULTS["slo_penalty"]
    max_steps: int = 4096
    acceptance: str = "profiles/acceptance_SmolLM2-135M-Instruct.json"
    max_queue: int = ROUTER_DEFAULTS["max_queue"]
    max_rate: float = ROUTER_DEFAULTS["max_rate"]
    max_latency_s: float = ROUTER_DEFAULTS["max_latency_s"]
    max_wait_s: float = ROUTER_DEFAULTS["max_wait_s"]
    sim: SimBackendConfig = field(default_factory=SimBackendConfig)
    real: RealBackendConfig = field(default_factory=RealBackendConfig)
    decisions: tuple[Decision, ...] = field(init=False, repr=False)

    @classmethod
    def from_kwargs(cls, **kwargs) -> EnvConfig:
        """SpecRoute-v0's keywords: EnvConfig's fields, with the backends' given either nested
        (`sim=SimBackendConfig(...)`, `real=RealBackendConfig(...)`) or flat (`profile=...`, `model=...`)."""
        known = {item.name for item in fields(cls) if item.init}
        for key, nested in BACKEND_CONFIGS.items():
            names = {item.name for item in fields(nested) if item.init}
            known |= names
            flat = {name: kwargs.pop(name) for name in sorted(names & set(kwargs))}
            if flat and key in kwargs:
                raise EnvConfigError(f"pass {sorted(flat)} inside {key}=... or as keywords, not both")
            if flat:
                kwargs[key] = nested(**flat)
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise EnvConfigError(f"unknown SpecRoute-v0 arguments {unknown}; known: {sorted(known)}")
        return cls(**kwargs)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise EnvConfigError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        for key, nested in BACKEND_CONFIGS.items():
            if not isinstance(getattr(self, key), nested):
                raise EnvConfigError(f"{key} must be a {nested.__name__}, got {getattr(self, key)!r}")
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
        try:
            self.router_config()         # the SLOs, ranges and penalty, checked where they are declared
        except ValueError as exc:
            raise EnvConfigError(str(exc)) from None
        if self.max_num_tokens < self.max_model_len:
            raise EnvConfigError("max_num_tokens must be at least max_model_len")
        if self.workload.max_new_tokens >= self.max_model_len:
            raise EnvConfigError(f"the workload's max_new_tokens ({self.workload.max_new_tokens}) must be "
                                 f"below max_model_len ({self.max_model_len})")

    @property
    def action_labels(self) -> list[str]:
        return [d.label for d in self.decisions]

    @property
    def pairs(self) -> list[str]:
        """Every (drafter > verifier) pair the actions use, in first-use order."""
        return pairs_of(self.decisions)

    def router_config(self) -> RouterConfig:
        """The router settings of these limits and SLOs (the server builds its own from its flags)."""
        return RouterConfig(max_batch=self.max_num_seqs, max_model_len=self.max_model_len, slo_tpot_s=self.slo_tpot_s,
                            slo_ttft_s=self.slo_ttft_s, max_queue=self.max_queue, max_rate=self.max_rate,
                            max_latency_s=self.max_latency_s, max_wait_s=self.max_wait_s, slo_penalty=self.slo_penalty)

    def observation_spec(self) -> ObservationSpec:
        """The observation layout of these settings (the server's, from the same `RouterConfig`)."""
        return observation_spec_for(self.decisions, self.router_config())
