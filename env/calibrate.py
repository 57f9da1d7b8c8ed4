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

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from env.acceptance_model import AcceptanceModel
from env.config import REPO_ROOT, parse_action, resolve_path
from env.prompt_sources import CATEGORIES, SPEC_BENCH_TASKS, Prompt, azure_code_prompt, azure_code_trace, load_prompts
from env.sim_calibration import PromptLength, SimCalibration

COMPARISON_WORKLOADS = (
    ("spec_bench", {"name": "spec_bench", "arrival": "poisson", "rate": 0.5}, ("ngram>target@4", "plain")),
    ("humaneval-bursty", {"name": "humaneval", "arrival": "gamma", "rate": 1.0, "cv": 3.0},
     ("suffix>target@4", "suffix>target@2", "ngram>target@8")),
    ("azure_code", {"name": "azure_code", "time_scale": 0.1}, ("plain", "ngram>target@2")),
)


@dataclass
class CalibrateArgs:
    """Fit the simulator (acceptance models, prompt lengths, step overhead) on the real engine."""

    model: str = field(default="default", metadata={"help": "target: 'default' (embedded SmolLM2) or a local path"})
    draft: str = field(default="checkpoints/draft", metadata={"help": "trained draft checkpoint, used when it exists"})
    profile: str = field(default="", metadata={"help": "latency profile JSON (default: profiles/<model>.json)"})
    refresh_profile: bool = field(default=False, metadata={"help": "measure the profile even when the file exists"})
    profile_budget_s: float = field(default=120.0, metadata={"help": "seconds for measuring the profile"})
    out: str = field(default="", metadata={"help": "output JSON (default: profiles/acceptance_<model>.json)"})
    prompts_per_category: int = field(default=3, metadata={"help": "prompts per category in the fitting sample"})
    max_new_tokens: int = field(default=40, metadata={"help": "tokens generated per prompt (fitting and comparison)"})
    max_prompt_tokens: int = field(default=256, metadata={"help": "prompts are cut to their last N tokens"})
    fit_ks: list[int] = field(default_factory=lambda: [2, 4, 8], metadata={"help": "K values cycled while fitting"})
    compare_requests: int = field(default=8, metadata={"help": "requests per comparison workload"})
    sim_repeats: int = field(default=8, metadata={"help": "simulated runs averaged per comparison workload"})
    speed_seconds: float = field(default=5.0, metadata={"help": "wall seconds spent measuring the sim's speed"})
    max_batch: int = field(default=16, metadata={"help": "engine max_batch"})
    num_threads: int = field(default=2, metadata={"help": "torch threads (0 keeps torch's default)"})
    seed: int = field(default=0, metadata={"help": "seed of prompt sampling and workload windows"})

    def __post_init__(self) -> None:
        for name in ("prompts_per_category", "max_new_tokens", "max_prompt_tokens", "compare_requests",
                     "sim_repeats", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.fit_ks or min(self.fit_ks) < 1:
            raise ValueError("fit_ks must be integers >= 1")
        if self.profile_budget_s <= 0 or self.speed_seconds <= 0:
            raise ValueError("profile_budget_s and speed_seconds must be > 0")


# ---- the fitting sample -------------------------------------------------------------------------
def sample_prompts(per_category: int, rng: np.random.Generator) -> list[Prompt]:
    """`per_category` prompts of every category (Azure code prompts sized by trace rows)."""
    prompts: list[Prompt] = []
    for task in SPEC_BENCH_TASKS:
        bank = load_prompts(f"spec_bench:{task}")
        prompts += [bank[int(i)] for i in rng.choice(len(bank), per_category, replace=False)]
    for source in ("humaneval", "sharegpt"):
        bank = load_prompts(source)
        prompts += [bank[int(i)] for i in rng.choice(len(bank), per_category, replace=False)]
    trace = azure_code_trace()
    for i in rng.choice(len(trace), per_category, replace=False):
        row = trace[int(i)]
        prompts.append(azure_code_prompt(int(i), row.context_tokens, row.generated_tokens))
    return prompts


def fit_prompt_lengths(engine) -> dict[str, PromptLength]:
    """tokens = template + chars / chars_per_token per category, over every prompt of the data."""
    banks = {task: load_prompts(f"spec_bench:{task}") for task in SPEC_BENCH_TASKS}
    banks.update(humaneval=load_prompts("humaneval"), sharegpt=load_prompts("sharegpt"))
    banks["azure_code"] = tuple(azure_code_prompt(i, 512, 1) for i in range(8))
    lengths = {}
    tokenizer = engine.tokenizer
    for category, bank in banks.items():
        chars = sum(len(p.text) for p in bank)
        raw = sum(len(tokenizer.encode(p.text, add_special_tokens=False)) for p in bank)
        template = 0.0
        chat = [p for p in bank if p.is_chat and len(p.text) < 1000][:20]
        if chat:
            template = float(np.mean([len(engine.encode_prompt([{"role": "user", "content": p.text}]))
                                      - len(engine.encode_prompt(p.text)) for p in chat]))
        lengths[category] = PromptLength(chars_per_token=chars / raw, template_tokens=max(template, 0.0))
    return lengths


class CyclingRouter:
    """The chain with K cycling over `ks`, one K per step (acceptance is seen at every K)."""

    def __init__(self, chain: tuple[str, ...], ks: list[int]):
        from engine.decision import Decision
        self.decisions = [Decision(chain, k) for k in ks]
        self.num_steps = 0

    def decide(self, engine):
        decision = self.decisions[self.num_steps % len(self.decisions)]
        self.num_steps += 1
        return decision


def collect(engine, profile, prompts: list[Prompt], chain: tuple[str, ...], ks: list[int], max_new_tokens: int,
            max_prompt_tokens: int, acceptance: AcceptanceModel, steps: list[tuple[float, int, float]]) -> None:
    """Run `prompts` to completion on `chain`; add every row's outcome to `acceptance` and every
    step's (profile forward seconds, rows, measured seconds) to `steps`."""
    from engine.drafters import MODEL_FREE_DRAFTERS
    from engine.sampling import SamplingParams
    from env.real_backend import encode_prompt
    from env.sim_backend import step_seconds
    router = CyclingRouter(chain, ks)
    engine.router = router
    room = engine.config.max_model_len - max_new_tokens - 1
    for prompt in prompts:
        ids = encode_prompt(engine, prompt, min(max_prompt_tokens, room), room)
        engine.add_request(ids, SamplingParams(max_tokens=max_new_tokens, ignore_eos=True), category=prompt.category)
    while engine.has_unfinished:
        batch = engine.scheduler.admit()
        decision = router.decisions[router.num_steps % len(router.decisions)]
        num_tokens = [r.num_tokens for r in batch]
        cached = [{name: level.committed_length(r) for name, level in engine.levels.items()} for r in batch]
        ks_used = [engine._draft_length(r, decision) for r in batch]
        categories = [r.category for r in batch]
        engine.step()
        record = engine.last_step
        if record.batch_size != len(batch):
            raise RuntimeError("the engine admitted requests between the snapshot and the step")
        steps.append((step_seconds(profile, num_tokens, cached, decision.chain, ks_used, record.results),
                      record.batch_size, record.latency_s))
        for category, k, result in zip(categories, ks_used, record.results):
            if k == 0:
                continue
            if decision.chain[0] in MODEL_FREE_DRAFTERS:
                acceptance.observe_proposal(decision.chain[0], category, k, result.num_proposed)
            for pair in result.pairs:
                acceptance.observe_pair(f"{pair.drafter}>{pair.verifier}", category, pair.num_proposed, pair.num_accepted)


def fit_step_time(steps: list[tuple[float, int, float]]) -> tuple[float, float, float]:
    """(scale, per-step s, per-row s) >= 0 minimising the relative error of
    measured ~ scale x profile + per-step + per-row x rows."""
    from scipy.optimize import nnls
    predicted, rows, measured = (np.array(column, dtype=float) for column in zip(*steps))
    weight = 1.0 / measured
    design = np.stack([predicted, np.ones_like(predicted), rows], axis=1) * weight[:, None]
    coef, _ = nnls(design, measured * weight)
    return float(coef[0]), float(coef[1]), float(coef[2])


# ---- sim vs real ----------------------------------------------------------------------------------
def episode_metrics(env, schedule: list[int]) -> dict:
    """Run one episode with the action schedule (cycled); tokens/s over busy time, mean TPOT."""
    busy = 0.0
    steps = 0
    start = time.perf_counter()
    while True:
        _, _, terminated, truncated, info = env.step(schedule[steps % len(schedule)])
        busy += info["latency_s"]
        steps += 1
        if terminated or truncated:
            break
    wall = time.perf_counter() - start
    requests = env.unwrapped._episode.requests.values()
    tpots = [(r.finish_time - r.first_token_time) / (len(r.output_token_ids) - 1)
             for r in requests if len(r.output_token_ids) > 1]
    committed = sum(len(r.output_token_ids) for r in requests)
    return {"tokens_per_s": committed / busy, "tpot_s": float(np.mean(tpots)), "steps": steps,
            "busy_s": busy, "wall_s": wall}


def compare(real_env, sim_env, schedule: list[int], seed: int, repeats: int) -> tuple[dict, dict]:
    """The same window (seed) on both backends; the sim averaged over `repeats` acceptance draws."""
    real_env.reset(seed=seed)
    real = episode_metrics(real_env, schedule)
    sims = []
    for j in range(repeats):
        sim_env.reset(seed=seed)
        sim_env.unwrapped.backend.reseed(10_000 + j)
        sims.append(episode_metrics(sim_env, schedule))
    sim = {key: float(np.mean([s[key] for s in sims])) for key in sims[0]}
    return real, sim


def sim_speed(sim_env, seconds: float) -> tuple[float, float]:
    """(env steps per wall second, simulated busy seconds per wall second) under random actions."""
    rng = np.random.default_rng(0)
    steps, busy, episode = 0, 0.0, 0
    start = time.perf_counter()
    sim_env.reset(seed=episode)
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, info = sim_env.step(int(rng.integers(sim_env.action_space.n)))
        steps += 1
        busy += info["latency_s"]
        if terminated or truncated:
            episode += 1
            sim_env.reset(seed=episode)
    wall = time.perf_counter() - start
    return steps / wall, busy / wall


# ---- main -------------------------------------------------------------------------------------
def main(cfg: CalibrateArgs) -> SimCalibration:
    started = time.perf_counter()
    import torch
    from engine import Engine, EngineConfig
    from engine.models import load_model
    from engine.profile import LatencyProfile, measure_profile
    from env.specroute_env import SpecRouteEnv

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    target = load_model(cfg.model)
    drafts = {}
    draft_path = resolve_path(cfg.draft)
    if (draft_path / "manifest.json").exists():
        from engine.draft_model import load_draft
        drafts["draft"] = load_draft(draft_path, target)
    engine = Engine(target.model, target.tokenizer, EngineConfig(max_batch=cfg.max_batch, num_threads=cfg.num_threads),
                    drafts=drafts)
    print(f"loaded {target.name}{' + draft' if drafts else ''} in {time.perf_counter() - started:.1f} s")

    profile_path = resolve_path(cfg.profile) if cfg.profile else REPO_ROOT / "profiles" / f"{target.name}.json"
    if profile_path.exists() and not cfg.refresh_profile:
        profile = LatencyProfile.load(profile_path)
        missing = [name for name in list(engine.levels) + list(engine.drafters) if name not in profile.levels]
        if missing:
            profile = profile.merged(measure_profile(engine, levels=missing, budget_s=cfg.profile_budget_s,
                                                     tokens=(1, 2, 3, 5, 9, 17, 64, 256), model=target.name))
            profile.save(profile_path)
        print(f"profile: loaded {profile_path}")
    else:
        tick = time.perf_counter()
        profile = measure_profile(engine, tokens=(1, 2, 3, 5, 9, 17, 64, 256), contexts=(0, 256, 1024),
                                  budget_s=cfg.profile_budget_s, model=target.name)
        profile.save(profile_path)
        print(f"profile: measured in {time.perf_counter() - tick:.0f} s "
              f"({profile.meta.get('estimated_points')} points estimated), wrote {profile_path}")

    rng = np.random.default_rng(cfg.seed)
    chains = [("ngram", "target"), ("suffix", "target")] + ([("draft", "target"), ("ngram", "draft", "target")]
                                                            if drafts else [])
    calibration = SimCalibration(target.name, prompt_lengths=fit_prompt_lengths(engine))
    steps: list[tuple[float, int, float]] = []
    tick = time.perf_counter()
    prompts = sample_prompts(cfg.prompts_per_category, rng)
    for chain in chains:
        collect(engine, profile, prompts, chain, cfg.fit_ks, cfg.max_new_tokens, cfg.max_prompt_tokens,
                calibration.acceptance, steps)
    collect(engine, profile, prompts[:: max(1, len(prompts) // 8)], ("target",), [0], cfg.max_new_tokens,
            cfg.max_prompt_tokens, calibration.acceptance, steps)
    scale, per_step, per_row = fit_step_time(steps)
    calibration.profile_scale, calibration.step_overhead_s, calibration.row_overhead_s = scale, per_step, per_row
    print(f"fit: {len(prompts)} prompts x {len(chains)} chains, {len(steps)} steps in {time.perf_counter() - tick:.0f} s; "
          f"step time = {scale:.3f} x profile + {per_step * 1e3:.1f} ms + {per_row * 1e3:.2f} ms/row")
    for pair in calibration.acceptance.pairs:
        by_category = ", ".join(f"{c} {calibration.acceptance.mean_acceptance(pair, c):.2f}"
                                for c in CATEGORIES if c in calibration.acceptance.pairs[pair])
        print(f"  acceptance {pair}: {calibration.acceptance.mean_acceptance(pair):.2f} ({by_category})")
    out = resolve_path(cfg.out) if cfg.out else REPO_ROOT / "profiles" / f"acceptance_{target.name}.json"
    calibration.save(out)
    print(f"wrote {out}")

    print(f"\n{'workload':18s} {'backend':8s} {'tokens/s':>9s} {'TPOT ms':>8s} {'steps':>6s} {'wall s':>8s}")
    ratios = []
    for name, workload, labels in COMPARISON_WORKLOADS:
        workload = {**workload, "num_requests": cfg.compare_requests, "max_new_tokens": cfg.max_new_tokens,
                    "min_new_tokens": min(8, cfg.max_new_tokens), "max_prompt_tokens": cfg.max_prompt_tokens}
        actions = list(dict.fromkeys(["plain", *labels]))
        common = dict(workload=workload, actions=actions, max_batch=cfg.max_batch)
        real_env = SpecRouteEnv(backend="real", engine_factory=lambda: engine, **common)
        sim_env = SpecRouteEnv(backend="sim", profile=str(profile_path), acceptance=str(out), **common)
        schedule = [real_env.action_labels.index(parse_action(label).label) for label in labels]
        real, sim = compare(real_env, sim_env, schedule, cfg.seed, cfg.sim_repeats)
        ratios.append(real["wall_s"] / max(sim["wall_s"], 1e-9))
        for backend, metrics in (("real", real), ("sim", sim)):
            print(f"{name:18s} {backend:8s} {metrics['tokens_per_s']:9.2f} {metrics['tpot_s'] * 1e3:8.1f} "
                  f"{metrics['steps']:6.0f} {metrics['wall_s']:8.2f}")
        print(f"{name:18s} {'error':8s} {100 * (sim['tokens_per_s'] / real['tokens_per_s'] - 1):+8.1f}% "
              f"{100 * (sim['tpot_s'] / real['tpot_s'] - 1):+7.1f}%")
        sim_env.close()
    steps_per_s, speedup = sim_speed(SpecRouteEnv(backend="sim", profile=str(profile_path), acceptance=str(out)),
                                     cfg.speed_seconds)
    print(f"\nsim: {steps_per_s:.0f} env steps/s, {speedup:.0f}x real time under random actions "
          f"(same episodes as real: {min(ratios):.0f}x to {max(ratios):.0f}x faster)")
    print(f"calibrate took {time.perf_counter() - started:.0f} s")
    return calibration


def parse_args(argv: list[str] | None = None) -> CalibrateArgs:
    parser = argparse.ArgumentParser(description=CalibrateArgs.__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(CalibrateArgs):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
        elif isinstance(default, list):
            parser.add_argument(flag, type=int, nargs="+", default=default, help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=type(default), default=default, help=f.metadata["help"])
    namespace = parser.parse_args(argv)
    try:
        return CalibrateArgs(**vars(namespace))
    except ValueError as error:
        parser.error(str(error))
        raise


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
