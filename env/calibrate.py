"""`python -m env.calibrate`: fit the simulator on the real engine and report how close it gets.

1. Load the target (embedded SmolLM2 by default) and, if present, the trained draft.
2. Latency profile: load `--profile`, or measure it (also when `--refresh-profile`), with a
   tokens axis that reaches prefill widths.
3. Run the real engine on a small prompt sample per category with every chain of the action
   list (K cycling over `--fit-ks`), and fit from its steps: the acceptance models, how many
   tokens a prompt becomes, and the step time the profile does not explain
   (latency ~ scale x profile forwards + per-step + per-row overhead).
4. Write `profiles/acceptance_<model>.json`, then run 3 small workloads on both backends with
   the same action schedule and print the sim-vs-real error of tokens/s and mean TPOT, and the
   simulator's env steps/s and speed against real time.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cli.dataclass_args import parse_dataclass
from cli.startup import exit_on_startup_error
from engine.config import engine_field, num_threads_field
from engine.decision import Decision
from engine.precision import PrecisionArgs
from env.calibration_sample import collect, fit_prompt_lengths, sample_prompts
from env.config import DEFAULT_DRAFT, REPO_ROOT, SHIPPED_SIM_PROFILE, RealBackendConfig, SimBackendConfig, resolve_path
from env.prompt_sources import CATEGORIES
from env.sim_calibration import SimCalibration
from env.sim_fidelity import compare, sim_speed
from env.step_time_fit import StepSample, StepTimeFit, fit_profile, fit_scaled

# a verifier feeds up to K + depth tokens; prefill feeds the prompt (extrapolated linearly past 64,
# where a forward is compute-bound)
PROFILE_TOKENS = (1, 2, 3, 5, 9, 17, 64)
PROFILE_CONTEXTS = (0, 512)
# (name, workload, action schedule, requests per compare_requests): the last one queues every
# request at once, so the batch runs at concurrency >= 8 where the verifier is compute-bound
COMPARISON_WORKLOADS = (
    ("spec_bench", {"name": "spec_bench", "arrival": "poisson", "rate": 0.5},
     ("int4>target@3", "ngram>target@4", "plain"), 1),
    ("humaneval-bursty", {"name": "humaneval", "arrival": "gamma", "rate": 1.0, "cv": 3.0},
     ("suffix>target@4", "int4>target@2", "ngram>int4>target@4"), 1),
    ("azure_code", {"name": "azure_code", "time_scale": 0.1}, ("plain", "ngram>target@2"), 1),
    ("sharegpt-offline", {"name": "sharegpt", "arrival": "offline"}, ("plain", "int4>target@2", "suffix>target@4"), 2),
)


@dataclass
class CalibrateArgs(PrecisionArgs):
    """Fit the simulator (acceptance models, prompt lengths, step overhead) on the real engine."""

    model: str = field(default=RealBackendConfig.model, metadata={
        "help": "target: 'default' (embedded SmolLM2) or a local path"})
    draft: str = field(default=DEFAULT_DRAFT, metadata={"help": "trained draft checkpoint, used when it exists"})
    quantized_levels: str = engine_field("quantized_levels")
    profile: str = field(default=SHIPPED_SIM_PROFILE, metadata={
        "help": "latency profile JSON (default: the environment's, the default forward path's)"})
    refresh_profile: bool = field(default=False, metadata={"help": "measure the profile even when the file exists"})
    profile_budget_s: float = field(default=90.0, metadata={"help": "seconds for timing profile levels"})
    profile_source: str = field(default="measured", metadata={
        "help": "measured: keep the timed profile (timing what it lacks) and fit a scale and overheads on top; "
                "fitted: model levels' latency fitted on the engine's own calibration steps",
        "choices": ["measured", "fitted"]})

    output_json: str = field(default="", metadata={
        "help": "output JSON (default: profiles/acceptance_<model>.json)", "aliases": ["--out"]})
    fit_prompts: int = field(default=24, metadata={
        "help": "prompts per chain in the fitting sample (spread over the categories; other prompts for each chain)"})
    max_tokens: int = field(default=32, metadata={
        "help": "most tokens generated per prompt (fitting and comparison)", "aliases": ["--max-new-tokens"]})
    max_prompt_tokens: int = field(default=128, metadata={"help": "prompts are cut to their last N tokens"})
    fit_ks: list[int] = field(default_factory=lambda: [2, 4, 8], metadata={"help": "K values cycled while fitting"})
    compare_requests: int = field(default=8, metadata={"help": "requests per comparison workload"})
    real_repeats: int = field(default=2, metadata={"help": "real runs averaged per comparison workload"})
    sim_repeats: int = field(default=8, metadata={"help": "simulated runs averaged per comparison workload"})
    speed_seconds: float = field(default=5.0, metadata={"help": "wall seconds spent measuring the sim's speed"})
    max_num_seqs: int = engine_field("max_num_seqs")
    num_threads: int = num_threads_field(2, "torch threads (0 keeps torch's default; 2: as the default profile was "
                                            "measured)")
    clock: str = field(default="wall", metadata={
        "help": "wall (an idle machine, as the default profile was measured), or cpu: this process's CPU time "
                "with one thread (idle-machine latency on a busy machine)", "choices": ["wall", "cpu"]})
    seed: int = field(default=0, metadata={"help": "seed of prompt sampling and workload windows"})

    def __post_init__(self) -> None:
        for name in ("fit_prompts", "max_tokens", "max_prompt_tokens", "compare_requests", "real_repeats",
                     "sim_repeats", "max_num_seqs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.fit_ks or min(self.fit_ks) < 1:
            raise ValueError("fit_ks must be integers >= 1")
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be wall or cpu, got {self.clock!r}")
        if self.clock == "cpu" and self.num_threads != 1:
            raise ValueError("clock cpu needs num_threads 1")
        if self.profile_source not in ("fitted", "measured"):
            raise ValueError(f"profile_source must be fitted or measured, got {self.profile_source!r}")
        if self.profile_budget_s <= 0 or self.speed_seconds <= 0:
            raise ValueError("profile_budget_s and speed_seconds must be > 0")


# ---- main -------------------------------------------------------------------------------------
def base_profile(engine, path: Path, cfg: CalibrateArgs, model_name: str):
    """The profile the fitting starts from. "measured": the file at `path`, timing what it lacks
    (everything with --refresh-profile). "fitted": only model-free drafters are timed (cheap);
    model levels get a placeholder grid that `fit_profile` replaces."""
    from engine.profile import LatencyProfile, LevelProfile, measure_profile
    from engine.sampling import SamplingParams
    levels = list(engine.levels) + list(engine.drafters)
    existing = LatencyProfile.load(path) if path.exists() and not cfg.refresh_profile else None
    wanted = levels if cfg.profile_source == "measured" else list(engine.drafters)
    missing = [name for name in wanted if existing is None or name not in existing.levels]
    tick = time.perf_counter()
    profile = existing
    if missing:
        engine.generate(["warm up"], SamplingParams(max_tokens=2))     # first forwards allocate; keep them out
        measured = measure_profile(engine, levels=missing, tokens=PROFILE_TOKENS, contexts=PROFILE_CONTEXTS,
                                   budget_s=cfg.profile_budget_s, model=model_name, clock=cfg.clock)
        profile = measured if profile is None else profile.merged(measured)
        print(f"profile: timed {', '.join(missing)} in {time.perf_counter() - tick:.0f} s "
              f"({profile.meta.get('estimated_points')} points estimated)")
        if cfg.profile_source == "measured":
            profile.save(path)
            print(f"profile: wrote {path}")
    else:
        print(f"profile: {path} ({profile.meta.get('clock', 'wall')} clock, "
              f"{profile.meta.get('num_threads')} threads, measured {profile.meta.get('measured_at')})")
    placeholder = LevelProfile("model", (1,), (1,), (0,), [[[1.0]]])
    return LatencyProfile(model_name, {**{name: placeholder for name in engine.levels}, **profile.levels},
                          dict(profile.meta))


def main(cfg: CalibrateArgs) -> SimCalibration:
    started = time.perf_counter()
    import torch

    from engine import Engine, EngineConfig
    from engine.build import DraftSpec
    from engine.models import ModelLoadError
    from env.specroute_env import SpecRouteEnv

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    with exit_on_startup_error("python -m env.calibrate", ModelLoadError, OSError, ValueError):
        engine = Engine.from_pretrained(cfg.model, drafts=[DraftSpec("draft", resolve_path(cfg.draft), if_absent="skip")],
                                        config=EngineConfig(max_num_seqs=cfg.max_num_seqs,
                                                            quantized_levels=cfg.quantized_levels,
                                                            **cfg.precision_kwargs()))
    model_name, has_draft = engine.model_name, "draft" in engine.levels
    print(f"loaded {model_name}{' + draft' if has_draft else ''} in {time.perf_counter() - started:.1f} s; "
          f"{cfg.clock} clock, {torch.get_num_threads()} torch threads")

    profile_path = resolve_path(cfg.profile) if cfg.profile else REPO_ROOT / "profiles" / f"{model_name}.json"
    with exit_on_startup_error("python -m env.calibrate", OSError, ValueError):     # an unreadable --profile
        base = base_profile(engine, profile_path, cfg, model_name)

    rng = np.random.default_rng(cfg.seed)
    chains = [("ngram", "target"), ("suffix", "target")]
    chains += [c for fmt in engine.config.quantized_formats for c in ((fmt, "target"), ("ngram", fmt, "target"))]
    chains += [("draft", "target"), ("ngram", "draft", "target")] if has_draft else []
    calibration = SimCalibration(model_name, prompt_lengths=fit_prompt_lengths(engine))
    steps: list[StepSample] = []
    tick = time.perf_counter()
    prompts = sample_prompts(cfg.fit_prompts * len(chains) + cfg.fit_prompts // 2, rng)
    for i, chain in enumerate(chains):
        collect(engine, base, prompts[i * cfg.fit_prompts:(i + 1) * cfg.fit_prompts], chain, cfg.fit_ks,
                cfg.max_tokens, cfg.max_prompt_tokens, calibration.acceptance, steps, rng, cfg.clock)
    collect(engine, base, prompts[len(chains) * cfg.fit_prompts:], ("target",), [0], cfg.max_tokens,
            cfg.max_prompt_tokens, calibration.acceptance, steps, rng, cfg.clock)
    if cfg.profile_source == "fitted":
        profile, per_row, error = fit_profile(base, steps)
        profile.save(profile_path)
        times = StepTimeFit(1.0, 0.0, per_row)
        how = f"profile fitted on the steps, wrote {profile_path}"
    else:
        times, error = fit_scaled(base, steps)
        how = (f"step = {times.profile_scale:.3f} x measured profile (prefill past {times.prefill_tokens} tokens: "
               f"{times.prefill_scale:.3f} x) + {times.step_overhead_s * 1e3:.1f} ms")
    for name, value in dataclasses.asdict(times).items():
        setattr(calibration, name, value)
    print(f"fit: {len(prompts)} prompts on {len(chains)} chains and plain, {len(steps)} steps in {time.perf_counter() - tick:.0f} s; "
          f"{how} + {times.row_overhead_s * 1e3:.2f} ms/row; mean step-time error {100 * error:.1f}%")
    for pair in calibration.acceptance.pairs:
        by_category = ", ".join(f"{c} {calibration.acceptance.mean_acceptance(pair, c):.2f}"
                                for c in CATEGORIES
                                if any(k.partition("|")[0] == c for k in calibration.acceptance.pairs[pair]))
        print(f"  acceptance {pair}: {calibration.acceptance.mean_acceptance(pair):.2f} ({by_category})")
    out = resolve_path(cfg.output_json) if cfg.output_json else REPO_ROOT / "profiles" / f"acceptance_{model_name}.json"
    calibration.save(out)
    print(f"wrote {out}")

    print(f"\n{'workload':18s} {'backend':8s} {'tokens/s':>9s} {'TPOT ms':>8s} {'steps':>6s} {'wall s':>8s}")
    ratios = []
    runnable = set(engine.levels) | set(engine.drafters)
    for name, workload, labels, scale in COMPARISON_WORKLOADS:
        labels = tuple(label for label in labels if set(Decision.parse(label).chain) <= runnable)
        workload = {**workload, "num_requests": scale * cfg.compare_requests, "max_new_tokens": cfg.max_tokens,
                    "min_new_tokens": min(8, cfg.max_tokens), "max_prompt_tokens": cfg.max_prompt_tokens}
        actions = list(dict.fromkeys(["plain", *labels]))
        common = dict(workload=workload, actions=actions, max_num_seqs=cfg.max_num_seqs)
        real_env = SpecRouteEnv(backend="real", **common,
                                real=RealBackendConfig(engine_factory=lambda: engine, real_clock=cfg.clock))
        sim_env = SpecRouteEnv(backend="sim", sim=SimBackendConfig(profile=str(profile_path)), acceptance=str(out),
                               **common)
        schedule = [real_env.action_labels.index(Decision.parse(label).label) for label in labels]
        real, sim, spread = compare(real_env, sim_env, schedule, cfg.seed, cfg.sim_repeats, cfg.real_repeats)
        ratios.append(real["busy_s"] / max(sim["wall_s"], 1e-9))     # engine time vs simulating it
        for backend, metrics in (("real", real), ("sim", sim)):
            print(f"{name:18s} {backend:8s} {metrics['tokens_per_s']:9.2f} {metrics['tpot_s'] * 1e3:8.1f} "
                  f"{metrics['steps']:6.0f} {metrics['wall_s']:8.2f}")
        print(f"{name:18s} {'error':8s} {100 * (sim['tokens_per_s'] / real['tokens_per_s'] - 1):+8.1f}% "
              f"{100 * (sim['tpot_s'] / real['tpot_s'] - 1):+7.1f}%")
        if cfg.real_repeats > 1:
            print(f"{name:18s} {'real±':8s} {100 * spread['tokens_per_s']:8.1f}% {100 * spread['tpot_s']:7.1f}%"
                  f"   (spread between the {cfg.real_repeats} real runs)")
        sim_env.close()
    speed_actions = [Decision(), *(Decision(tuple(chain), k) for chain in chains for k in cfg.fit_ks)]
    speed = sim_speed(SpecRouteEnv(backend="sim", sim=SimBackendConfig(profile=str(profile_path)), acceptance=str(out),
                                   actions=speed_actions), cfg.speed_seconds)
    print(f"\nsim (sharegpt, random actions): {speed['steps_per_s']:.0f} env steps/s and {speed['speedup']:.0f}x "
          f"real time per wall second; {speed['steps_per_cpu_s']:.0f} steps/s and {speed['cpu_speedup']:.0f}x per "
          f"CPU second (idle machine); the comparison episodes ran {min(ratios):.0f}x to {max(ratios):.0f}x "
          f"faster than on the real engine")
    print(f"calibrate took {time.perf_counter() - started:.0f} s")
    return calibration


def parse_args(argv: list[str] | None = None) -> CalibrateArgs:
    return parse_dataclass(CalibrateArgs, argv, CalibrateArgs.__doc__)


if __name__ == "__main__":
    from cli.missing_data import exit_on_missing_data
    sys.stdout.reconfigure(line_buffering=True)      # progress lines show up as they happen
    with exit_on_missing_data():
        main(parse_args(sys.argv[1:]))
