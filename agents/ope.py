"""Off-policy evaluation of a router from decision logs: `python -m agents.ope LOGS.jsonl --policy PATH`.

Reads rows in the `router.decision_log` format (written by the server or by
`agents.exploration.log_episodes`), computes the target policy's action probabilities at every
logged observation and next observation, and prints IPS, SNIPS, doubly robust and FQE estimates
of its reward per decision with 95% bootstrap intervals (see `agents.ope_estimators`).

`--policy` is a checkpoint directory, or a stateless baseline name from `agents.policy_registry`
(cost-model, static:<label>, no-spec, acceptance-ema), which needs the environment for its spec.
Rows logged with propensity 1 by a deterministic policy give no information about other actions:
the estimators then only see the actions the logger took, which the report flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agents.ope_estimators import LoggedSteps, OPEConfig, effective_sample_size, evaluate_off_policy
from router.decision_log import read_decision_log

STATEFUL = ("ucb", "oracle")


@dataclass
class OPECliConfig:
    logs: str = field(default="", metadata={"help": "decision log (JSONL)"})
    policy: str = field(default="checkpoints/router", metadata={
        "help": "target policy: a checkpoint directory or a baseline name (cost-model, static:<label>, ...)"})
    gamma: float = field(default=0.9, metadata={"help": "FQE discount"})
    ridge: float = field(default=1.0, metadata={"help": "ridge penalty of the reward / Q regressions"})
    bootstrap: int = field(default=200, metadata={"help": "bootstrap resamples (over episodes)"})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})
    output_json: str | None = field(default=None, metadata={"help": "also write the estimates to this JSON file",
                                                            "aliases": ["--out"]})
    profile: str | None = field(default=None, metadata={"help": "sim profile for baseline policies (default: the env's)"})
    acceptance: str | None = field(default=None, metadata={"help": "sim acceptance models for baseline policies"})

    def __post_init__(self) -> None:
        if not self.logs:
            raise ValueError("give the decision log to evaluate")
        if any(self.policy == name or self.policy.startswith(name + ":") for name in STATEFUL):
            raise ValueError(f"{self.policy!r} depends on its history or the simulator: it cannot be evaluated offline")
        OPEConfig(gamma=self.gamma, ridge=self.ridge, bootstrap=self.bootstrap, seed=self.seed)


def action_probabilities(policy, obs: np.ndarray, num_actions: int) -> np.ndarray:
    """[n, A] probabilities of a policy at each observation: its own action_probs, else one-hot
    act(), of its `offline()` form where it has one (a policy that reads the live engine)."""
    policy = policy.offline() if hasattr(policy, "offline") else policy
    if hasattr(policy, "action_probs"):
        probs = np.asarray(policy.action_probs(obs), dtype=np.float64)
        if probs.ndim == 2:
            return probs
        return np.stack([np.asarray(policy.action_probs(o), dtype=np.float64) for o in obs])
    probs = np.zeros((len(obs), num_actions))
    probs[np.arange(len(obs)), [int(policy.act(o)) for o in obs]] = 1.0
    return probs


def load_target(cfg: OPECliConfig):
    """(policy, number of actions, obs spec version or None)."""
    from agents.policy_registry import is_checkpoint, make_policy
    if is_checkpoint(cfg.policy):
        from router.learned_policy import LearnedPolicy
        policy = LearnedPolicy.load(cfg.policy)
        return policy, policy.num_actions, policy.manifest.obs_spec_version
    import gymnasium

    import env  # noqa: F401
    kwargs = {"backend": "sim", **({"profile": cfg.profile} if cfg.profile else {}),
              **({"acceptance": cfg.acceptance} if cfg.acceptance else {})}
    environment = gymnasium.make("SpecRoute-v0", **kwargs)
    return make_policy(cfg.policy, environment), int(environment.action_space.n), environment.unwrapped.obs_spec.version


def run_ope(rows, policy, num_actions: int, config: OPEConfig) -> dict:
    """Estimates (JSON-ready) of `policy` from decision-log rows."""
    data = LoggedSteps.from_rows(rows)
    if data.actions.max() >= num_actions:
        raise ValueError(f"the logs hold action {data.actions.max()}, the policy has {num_actions} actions")
    pi = action_probabilities(policy, data.obs, num_actions)
    pi_next = action_probabilities(policy, data.next_obs, num_actions)
    estimates = evaluate_off_policy(data, pi, pi_next, config)
    return {"num_steps": len(data), "num_episodes": int(len(np.unique(data.episodes))),
            "logged_mean_reward": float(data.rewards.mean()),
            "effective_sample_size": effective_sample_size(data, pi),
            "deterministic_logger": bool((data.propensities == 1.0).all()),
            "estimates": {name: e.to_json() for name, e in estimates.items()}}


def main(cfg: OPECliConfig) -> dict:
    rows = read_decision_log(cfg.logs)
    if not rows:
        raise SystemExit(f"{cfg.logs} holds no decisions")
    policy, num_actions, spec_version = load_target(cfg)
    versions = {r.obs_spec_version for r in rows if r.obs_spec_version}
    if spec_version and versions and versions != {spec_version}:
        raise SystemExit(f"the logs use observation spec {sorted(versions)}, the policy {spec_version!r}")
    config = OPEConfig(gamma=cfg.gamma, ridge=cfg.ridge, bootstrap=cfg.bootstrap, seed=cfg.seed)
    report = {"logs": cfg.logs, "policy": cfg.policy, **run_ope(rows, policy, num_actions, config)}
    print(f"{report['num_steps']} decisions in {report['num_episodes']} episodes; logged mean reward "
          f"{report['logged_mean_reward']:.2f}; effective sample size {report['effective_sample_size']:.0f}")
    if report["deterministic_logger"]:
        print("warning: every propensity is 1 (a deterministic logger): only the logged actions are covered")
    for name, estimate in report["estimates"].items():
        low, high = estimate["ci95"]
        print(f"  {name:6s} {estimate['value']:10.3f}   95% CI [{low:.3f}, {high:.3f}]")
    if cfg.output_json:
        Path(cfg.output_json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    from cli.dataclass_args import parse_dataclass
    main(parse_dataclass(OPECliConfig, description="Off-policy evaluation of a router from decision logs.",
                         positional=("logs",)))
