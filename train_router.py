"""Train the learned router in the simulator: `python -m train_router`.

PPO (stable-baselines3) by default, DQN with `--algo dqn`. Observations are normalised with
VecNormalize; the trained network is exported to `<out>/policy.safetensors` + `manifest.json`
(the only thing serving reads) together with an evaluation summary against the cost model and
plain decoding. The SB3 zip and SB3's VecNormalize pickle beside it (observation and reward
statistics), for `--resume` and for `PPO.load` users (agents.sb3_checkpoint), go to
`<out>/sb3_resume.zip` + `<out>/vecnormalize.pkl` when the zip is small, else under `runs/`.
TensorBoard logs and the progress bar need the `train` extra (`pip install -e '.[train]'`).
`python -m train_router --from-log PATH [--policy DIR]` instead fine-tunes the deployed policy on
the server's decision log, gated by off-policy evaluation (agents.log_finetune).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from agents.policy_registry import check_policy_name
from data.paths import REPO_ROOT
from engine.config import num_threads_field

ALGOS = ("ppo", "dqn")


@dataclass
class TrainConfig:
    algo: str = field(default="ppo", metadata={"help": "ppo or dqn", "choices": ALGOS})
    timesteps: int = field(default=500_000, metadata={"help": "environment steps to train for"})
    workload: str = field(default="mix", metadata={
        "help": "'mix' (every evaluation workload, loads scaled x0.67-1.5) or an env workload preset name"})
    seed: int = field(default=0, metadata={"help": "seed of the model and the environments"})
    n_envs: int = field(default=4, metadata={"help": "parallel environments"})
    subproc: bool = field(default=False, metadata={
        "help": "step the environments in subprocesses (SubprocVecEnv) when n_envs > 1; in-process (DummyVecEnv) "
                "is faster on 2 shared cores: the sim step is ~0.5 ms, less than the inter-process round trip"})
    output_dir: str = field(default="checkpoints/router", metadata={"help": "where the exported policy goes",
                                                                    "aliases": ["--out"]})
    runs_dir: str = field(default="runs/router", metadata={
        "help": "where a large SB3 resume zip (and its vecnormalize.pkl) goes"})
    resume: str | None = field(default=None, metadata={
        "help": "SB3 zip to continue training from; the vecnormalize.pkl beside it restores the statistics"})
    progress_bar: bool = field(default=True, metadata={"help": "show a progress bar (needs tqdm and rich)"})
    tensorboard: str | None = field(default=None, metadata={
        "help": "TensorBoard log directory (needs tensorboard: pip install -e '.[train]')"})
    learning_rate: float = field(default=1e-4, metadata={"help": "optimiser learning rate"})
    gamma: float = field(default=0.8, metadata={"help": "discount factor (a decision mostly moves its own step)"})
    n_steps: int = field(default=512, metadata={"help": "PPO: steps per env per rollout"})
    batch_size: int = field(default=256, metadata={"help": "minibatch size"})
    n_epochs: int = field(default=5, metadata={"help": "PPO: epochs per rollout"})
    ent_coef: float = field(default=0.0, metadata={"help": "PPO: entropy bonus"})
    net_arch: tuple[int, ...] = field(default=(64, 64), metadata={"help": "hidden layer sizes"})
    warm_start: str | None = field(default="cost-model", metadata={
        "help": "PPO only: imitate this baseline (agents.policy_registry name) before RL; none to start from random"})
    warm_start_steps: int = field(default=16_384, metadata={"help": "environment steps the warm-start teacher drives"})
    warm_start_epsilon: float = field(default=0.2, metadata={"help": "random-action rate while the teacher drives"})
    normalize: bool = field(default=True, metadata={"help": "normalise observations and rewards (VecNormalize)"})
    select_best: bool = field(default=True, metadata={
        "help": "keep the snapshot that scores best on validation episodes (else the last iterate)"})
    select_metric: str = field(default="reward", metadata={
        "help": "what validation judges snapshots by: 'reward' per decision or 'goodput' (what agents.evaluate judges)",
        "choices": ["reward", "goodput"]})
    eval_every: int = field(default=20_000, metadata={"help": "steps between validation evaluations"})
    validation_requests: int = field(default=24, metadata={"help": "requests per validation episode"})
    eval_episodes: int = field(default=2, metadata={"help": "episodes per evaluation workload in the summary (0: none)"})
    max_resume_bytes: int = field(default=1_000_000, metadata={"help": "largest resume zip kept next to the policy"})
    profile: str | None = field(default=None, metadata={"help": "sim latency profile JSON (default: the env's)"})
    acceptance: str | None = field(default=None, metadata={"help": "sim acceptance models JSON (default: the env's)"})
    randomize_latency: float = field(default=0.3, metadata={
        "help": "domain randomisation of the training sims: step times x exp(U(-r, r)) per episode"})
    randomize_acceptance: float = field(default=0.7, metadata={
        "help": "domain randomisation: each pair's acceptance odds x exp(U(-r, r)) per episode"})
    randomize_curve: bool = field(default=True, metadata={
        "help": "domain randomisation: each episode a machine's cost curve, flat (Intel AMX) to steep (Zen 3 fp32)"})
    num_threads: int = num_threads_field(1, "torch threads for the network (a 64x64 MLP only loses from more "
                                            "on a shared CPU)")

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        for name in ("timesteps", "n_envs", "n_steps", "batch_size", "n_epochs", "num_threads", "eval_every",
                     "validation_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        if self.warm_start is not None and self.warm_start.lower() == "none":
            self.warm_start = None
        if self.warm_start is not None:
            check_policy_name(self.warm_start)
        if self.warm_start is not None and (self.warm_start_steps < 1 or not 0 <= self.warm_start_epsilon <= 1):
            raise ValueError("warm_start_steps must be >= 1 and warm_start_epsilon in [0, 1]")
        if self.select_metric not in ("reward", "goodput"):
            raise ValueError(f"select_metric must be 'reward' or 'goodput', got {self.select_metric!r}")
        if self.learning_rate <= 0 or self.eval_episodes < 0:
            raise ValueError("learning_rate must be > 0 and eval_episodes >= 0")
        if not self.net_arch or any(n < 1 for n in self.net_arch):
            raise ValueError(f"net_arch must list positive layer sizes, got {self.net_arch}")
        if self.workload != "mix":
            from env.workloads import resolve_workload
            resolve_workload(self.workload)          # unknown preset -> ValueError now, not in a subprocess

    @property
    def env_kwargs(self) -> dict:
        from agents.scenarios import sim_env_kwargs
        kwargs = sim_env_kwargs(self.profile, self.acceptance)
        if self.workload != "mix":
            from agents.scenarios import NUM_REQUESTS
            kwargs["workload"] = {"name": self.workload, "num_requests": NUM_REQUESTS}
        return kwargs


def make_env(cfg: TrainConfig, rank: int, workloads: list | None = None):
    """A thunk building one training env; `workloads`: the mixture ('mix' only)."""
    def build():
        import gymnasium
        from stable_baselines3.common.monitor import Monitor

        import env  # noqa: F401  (registers SpecRoute-v0)
        from agents.scenarios import WorkloadMixture
        inner = gymnasium.make("SpecRoute-v0", **cfg.env_kwargs, randomize_latency=cfg.randomize_latency,
                               randomize_acceptance=cfg.randomize_acceptance, randomize_curve=cfg.randomize_curve)
        if cfg.workload == "mix":
            inner = WorkloadMixture(inner, workloads)
        inner.reset(seed=cfg.seed * 1000 + rank)
        return Monitor(inner)
    return build


class ObservationRange(BaseCallback):
    """Per-feature min / max of the raw (unnormalised) observations seen in training."""

    def __init__(self, vec_normalize=None):
        super().__init__()
        self.vec_normalize = vec_normalize
        self.low: np.ndarray | None = None
        self.high: np.ndarray | None = None

    def _on_step(self) -> bool:
        raw = self.vec_normalize.get_original_obs() if self.vec_normalize is not None else self.locals["new_obs"]
        raw = np.asarray(raw, dtype=np.float64)
        low, high = raw.min(axis=0), raw.max(axis=0)
        self.low = low if self.low is None else np.minimum(self.low, low)
        self.high = high if self.high is None else np.maximum(self.high, high)
        return True


def has_progress_bar() -> bool:
    """SB3's progress bar needs tqdm and rich (the `train` extra); without them, train without it."""
    from stable_baselines3.common import callbacks
    if callbacks.tqdm is None:
        print("no progress bar: it needs tqdm and rich (pip install -e '.[train]')")
    return callbacks.tqdm is not None


def build_model(cfg: TrainConfig, venv):
    from stable_baselines3 import DQN, PPO
    tensorboard = None
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError as exc:
            raise SystemExit("--tensorboard needs the tensorboard package: pip install -e '.[train]'") from exc
        tensorboard = cfg.tensorboard
    policy_kwargs = {"net_arch": list(cfg.net_arch)}
    if cfg.resume:
        cls = PPO if cfg.algo == "ppo" else DQN
        return cls.load(cfg.resume, env=venv, device="cpu", tensorboard_log=tensorboard)
    if cfg.algo == "ppo":
        return PPO("MlpPolicy", venv, learning_rate=cfg.learning_rate, n_steps=cfg.n_steps,
                   batch_size=cfg.batch_size, n_epochs=cfg.n_epochs, gamma=cfg.gamma, ent_coef=cfg.ent_coef,
                   policy_kwargs=policy_kwargs, seed=cfg.seed, device="cpu", tensorboard_log=tensorboard)
    return DQN("MlpPolicy", venv, learning_rate=cfg.learning_rate, buffer_size=min(100_000, cfg.timesteps),
               learning_starts=min(1000, cfg.timesteps // 10), batch_size=cfg.batch_size, gamma=cfg.gamma,
               train_freq=4, target_update_interval=1000, exploration_fraction=0.3, exploration_final_eps=0.05,
               policy_kwargs=policy_kwargs, seed=cfg.seed, device="cpu", tensorboard_log=tensorboard)


def make_selection(cfg: TrainConfig, vec_normalize):
    """The best-snapshot callback over short episodes of every evaluation workload."""
    import gymnasium

    import env  # noqa: F401
    from agents.policy_registry import make_policy
    from agents.scenarios import evaluation_workloads
    from agents.snapshot_selection import SnapshotSelection
    kwargs = {k: v for k, v in cfg.env_kwargs.items() if k != "workload"}
    eval_env = gymnasium.make("SpecRoute-v0", **kwargs)
    workloads = evaluation_workloads(kwargs, cfg.validation_requests)
    return SnapshotSelection(eval_env, workloads, make_policy("cost-model", eval_env), vec_normalize,
                             eval_every=cfg.eval_every, verbose=1, metric=cfg.select_metric)


def run_warm_start(cfg: TrainConfig, model, venv):
    """Imitate the teacher baseline in the training envs before PPO (see agents.warm_start)."""
    import gymnasium

    import env  # noqa: F401
    from agents.policy_registry import make_policy
    from agents.warm_start import warm_start
    envs = getattr(venv.unwrapped, "envs", None)          # in-process envs: each teacher reads its own env
    if envs is not None:
        teachers = [make_policy(cfg.warm_start, e) for e in envs]
    else:                                                  # subprocess envs: what the observation says
        probe = gymnasium.make("SpecRoute-v0", **{k: v for k, v in cfg.env_kwargs.items() if k != "workload"})
        teacher = make_policy(cfg.warm_start, probe)
        teachers = [teacher.offline() if hasattr(teacher, "offline") else teacher] * venv.num_envs
        probe.close()
    return warm_start(model, venv, teachers, cfg.warm_start_steps, cfg.gamma,
                      epsilon=cfg.warm_start_epsilon, batch_size=cfg.batch_size, seed=cfg.seed)


def main(cfg: TrainConfig) -> Path:
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

    from agents.export import pack_policy, write_policy
    from agents.sb3_checkpoint import restore_vec_normalize, save_sb3_checkpoint
    from agents.training_summary import summarize_policy
    from router.learned_policy import LearnedPolicy

    import torch
    torch.set_num_threads(cfg.num_threads)
    start = time.perf_counter()
    mixture = None
    if cfg.workload == "mix":
        from agents.scenarios import evaluation_workloads
        mixture = list(evaluation_workloads(cfg.env_kwargs).values())
    thunks = [make_env(cfg, rank, mixture) for rank in range(cfg.n_envs)]
    venv = SubprocVecEnv(thunks, start_method="fork") if cfg.n_envs > 1 and cfg.subproc else DummyVecEnv(thunks)
    vec_normalize = None
    if cfg.normalize and cfg.resume:
        venv = vec_normalize = restore_vec_normalize(cfg.resume, venv, cfg.gamma)
    elif cfg.normalize:
        venv = vec_normalize = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=cfg.gamma)
    venv.seed(cfg.seed)
    model = build_model(cfg, venv)
    observed = ObservationRange(vec_normalize)
    selection = make_selection(cfg, vec_normalize) if cfg.select_best else None
    warm = None
    if cfg.warm_start and cfg.algo == "ppo" and not cfg.resume:
        warm = run_warm_start(cfg, model, venv)
        observed.low, observed.high = warm.obs_low, warm.obs_high
        print(f"warm start from {cfg.warm_start}: {warm.num_steps} steps, imitation accuracy "
              f"{warm.imitation_accuracy:.3f}, critic explained variance {warm.value_explained_variance:.3f}")
    callbacks = CallbackList([observed] + ([selection] if selection is not None else []))
    model.learn(total_timesteps=cfg.timesteps, callback=callbacks, reset_num_timesteps=not cfg.resume,
                progress_bar=cfg.progress_bar and has_progress_bar())
    selected = selection.restore_best() if selection is not None else None
    if selected is not None:
        print(f"kept the snapshot at {selected['best_timesteps']} steps: validation {selected['metric']} "
              f"{selected['best_score']:.3f} x {selected['reference']}")
    train_seconds = time.perf_counter() - start

    out = Path(cfg.output_dir)
    out = out if out.is_absolute() else REPO_ROOT / out
    probe = venv.get_attr("unwrapped", [0])[0]
    space = probe.observation_space
    low = observed.low if observed.low is not None else space.low
    high = observed.high if observed.high is not None else space.high
    training = {**asdict(cfg), "net_arch": list(cfg.net_arch), "train_seconds": round(train_seconds, 1),
                "selection": selected,
                "warm_start_result": None if warm is None else {
                    "num_steps": warm.num_steps, "imitation_accuracy": warm.imitation_accuracy,
                    "value_explained_variance": warm.value_explained_variance},
                "num_timesteps": int(model.num_timesteps),
                "env": {"id": "SpecRoute-v0", **cfg.env_kwargs, "slo_tpot_s": probe.config.slo_tpot_s,
                        "slo_ttft_s": probe.config.slo_ttft_s, "slo_penalty": probe.config.slo_penalty}}
    packed = pack_policy(model, obs_spec_version=probe.obs_spec.version, obs_names=probe.obs_spec.names,
                         actions=probe.decisions, obs_min=low, obs_max=high, vec_normalize=vec_normalize,
                         training=json.loads(json.dumps(training, default=str)))
    venv.close()

    runs = Path(cfg.runs_dir)
    zip_path = save_sb3_checkpoint(model, vec_normalize, out, runs if runs.is_absolute() else REPO_ROOT / runs,
                                   cfg.max_resume_bytes)
    summary = summarize_policy(LearnedPolicy(packed.manifest, packed.tensors), cfg.env_kwargs, cfg.eval_episodes)
    packed.manifest.evaluation = summary
    manifest = write_policy(out, packed)
    print(f"trained {cfg.algo} for {model.num_timesteps} steps in {train_seconds:.0f} s; "
          f"policy: {out / 'manifest.json'} (sha256 {manifest.sha256[:12]}), resume: {zip_path}")
    for name, rows in summary.get("workloads", {}).items():
        print(f"  {name:20s} " + "  ".join(f"{label}: goodput {row['goodput']:.1f} reward {row['mean_reward']:.1f}"
                                           for label, row in rows.items()) + f"  fallback {rows['learned']['fallback_share']:.1%}")
    return out


if __name__ == "__main__":
    from cli.dataclass_args import parse_dataclass
    from cli.missing_data import exit_on_missing_data
    if any(arg.split("=")[0] == "--from-log" for arg in sys.argv[1:]):
        from agents.log_finetune import FineTuneConfig, main as fine_tune
        sys.exit(fine_tune(parse_dataclass(FineTuneConfig, description="Fine-tune the deployed router on its decision log.")))
    with exit_on_missing_data():
        main(parse_dataclass(TrainConfig, description="Train the learned router (PPO or DQN) in the simulator."))
