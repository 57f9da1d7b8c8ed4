"""Fine-tune the deployed router on the server's own decision log: `python -m train_router --from-log PATH`.

The log (`router.decision_log`, what `--decision-log` makes the server write) holds real steps of
this machine: observation, action, its propensity, reward, next observation. The log is split in
time: the earlier `1 - holdout` of it fits the candidate, the later part judges it. Fitting is
advantage-weighted regression from the deployed network's weights: maximise
mean(w log pi(a|s)) over logged steps, w = min(exp(A / (temperature x std A)), max_weight), with
A = r - b(s) (b a ridge fit of the reward on the observation), minus `anchor` x
KL(pi_deployed(.|s) || pi(.|s)), so the candidate moves toward logged actions that paid more than
usual and stays near the deployed policy elsewhere.

The gate (`agents.ope_gate`): off-policy evaluation on the held-out part, candidate vs deployed,
paired bootstrap. The candidate replaces `<policy>` (the previous checkpoint moves to
`<policy>/previous/`) only when the lower end of the 95% interval of candidate - deployed is
>= 0; otherwise it is written to `<policy>/candidate/` and the deployed one stays. One verdict
line is printed. Exit code 0 either way; 2 when the log or the policy cannot be used.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agents.ope_estimators import LoggedSteps
from agents.ope_gate import GATE_ESTIMATORS, GateVerdict, compare_policies
from router.checkpoint import CheckpointError
from router.learned_policy import LearnedPolicy

MIN_ROWS = 20                   # per part: fewer decisions cannot fit nor judge anything


@dataclass
class FineTuneConfig:
    from_log: str = field(default="", metadata={"help": "the server's decision log (JSONL, --decision-log)"})
    policy: str = field(default="checkpoints/router", metadata={"help": "the deployed checkpoint directory"})
    holdout: float = field(default=0.3, metadata={"help": "the latest share of the log kept out of fitting, for OPE"})
    estimator: str = field(default="dr", metadata={"help": "OPE estimator of the gate", "choices": GATE_ESTIMATORS})
    epochs: int = field(default=300, metadata={"help": "full-batch optimiser steps"})
    learning_rate: float = field(default=1e-2, metadata={"help": "Adam learning rate"})
    temperature: float = field(default=1.0, metadata={"help": "AWR temperature, x the advantages' std"})
    max_weight: float = field(default=20.0, metadata={"help": "largest AWR weight of one step"})
    anchor: float = field(default=0.1, metadata={"help": "weight of KL(deployed || candidate)"})
    bootstrap: int = field(default=200, metadata={"help": "bootstrap resamples of the gate"})
    block_steps: int = field(default=64, metadata={"help": "bootstrap block length when the log has few episodes"})
    seed: int = field(default=0, metadata={"help": "seed of the fit and the bootstrap"})

    def __post_init__(self) -> None:
        if not self.from_log:
            raise ValueError("give the decision log: --from-log PATH")
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {self.holdout}")
        if self.estimator not in GATE_ESTIMATORS:
            raise ValueError(f"estimator must be one of {GATE_ESTIMATORS}, got {self.estimator!r}")
        if min(self.epochs, self.bootstrap, self.block_steps) < 1 or self.learning_rate <= 0 or self.temperature <= 0 \
                or self.max_weight < 1 or self.anchor < 0:
            raise ValueError("epochs, bootstrap, block_steps >= 1; learning_rate, temperature > 0; max_weight >= 1; "
                             "anchor >= 0")


class LogError(ValueError):
    """The decision log cannot fine-tune this policy (unreadable, empty, another spec, too short)."""


def read_log(path: str, policy: LearnedPolicy, holdout: float) -> tuple[LoggedSteps, LoggedSteps]:
    """(fit part, held-out part) of the log, checked against the policy's observation and actions."""
    from router.decision_log import read_decision_log
    try:
        rows = read_decision_log(path)
    except (FileNotFoundError, ValueError) as exc:
        raise LogError(str(exc)) from None
    manifest = policy.manifest
    for number, row in enumerate(rows, 1):
        if row.obs_spec_version is not None and row.obs_spec_version != manifest.obs_spec_version:
            raise LogError(f"{path}: decision {number} was logged with observation spec {row.obs_spec_version!r}, "
                           f"the policy reads {manifest.obs_spec_version!r}")
        if len(row.obs) != manifest.obs_dim:
            raise LogError(f"{path}: decision {number} has {len(row.obs)} features, the policy reads {manifest.obs_dim}")
        if row.action >= policy.num_actions:
            raise LogError(f"{path}: decision {number} took action {row.action}, the policy has {policy.num_actions}")
    split = int(round(len(rows) * (1.0 - holdout)))
    if min(split, len(rows) - split) < MIN_ROWS:
        raise LogError(f"{path}: {len(rows)} decisions; fitting and judging need {MIN_ROWS} each "
                       f"(holdout {holdout:g})")
    return LoggedSteps.from_rows(rows[:split]), LoggedSteps.from_rows(rows[split:])


def greedy_probs(policy: LearnedPolicy, obs: np.ndarray) -> np.ndarray:
    return np.asarray(policy.action_probs(obs.astype(np.float32)), dtype=np.float64)       # [n, A]


def main(cfg: FineTuneConfig) -> int:
    """Fine-tune, judge, replace or keep; the exit code (0, or 2 on bad input)."""
    from agents.export import write_policy
    from agents.log_policy_fit import fit_candidate
    policy_dir = Path(cfg.policy)
    try:
        deployed = LearnedPolicy.load(policy_dir)
        fit, held_out = read_log(cfg.from_log, deployed, cfg.holdout)
    except (CheckpointError, LogError) as exc:
        print(f"error: {exc}")
        return 2
    packed = fit_candidate(deployed, fit, cfg)
    candidate = LearnedPolicy(packed.manifest, packed.tensors)
    verdict: GateVerdict = compare_policies(
        held_out, (greedy_probs(candidate, held_out.obs), greedy_probs(candidate, held_out.next_obs)),
        (greedy_probs(deployed, held_out.obs), greedy_probs(deployed, held_out.next_obs)),
        cfg.estimator, cfg.bootstrap, cfg.seed, cfg.block_steps)
    packed.manifest.training = {**deployed.manifest.training, "fine_tuned": {
        "from_log": str(cfg.from_log), "from_sha256": deployed.manifest.sha256, "fit_steps": len(fit),
        "gate": verdict.to_json()}}
    if (held_out.propensities == 1.0).all():
        print("warning: every logged propensity is 1 (a deterministic logger): only the deployed policy's own "
              "actions are covered, so the candidate is judged where it agrees with them")
    if verdict.is_no_worse:
        previous = policy_dir / "previous"
        shutil.rmtree(previous, ignore_errors=True)
        previous.mkdir()
        for name in (deployed.manifest.weights_file, "manifest.json"):
            shutil.copy2(policy_dir / name, previous / name)
        write_policy(policy_dir, packed)
        outcome = f"no worse: replaced {policy_dir} (the previous policy is in {previous})"
    else:
        write_policy(policy_dir / "candidate", packed)
        outcome = f"not shown no worse: kept {policy_dir}; candidate written to {policy_dir / 'candidate'}"
    print(f"{verdict.line()}; {outcome}")
    return 0
