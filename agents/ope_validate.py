"""Validate off-policy evaluation in the simulator, where the true value is known:
`python -m agents.ope_validate`.

1. Log episodes with an exploring behaviour policy (epsilon-greedy around the cost model, or
   softmax over the learned policy's logits) through `agents.exploration.log_episodes`, in the
   decision-log format the server writes.
2. For each target policy, estimate its reward per decision with IPS, SNIPS, DR and FQE.
3. Run the target on-policy on fresh seeds of the same workload: the true reward per decision.
4. Report each estimate's relative error; writes bench/results/evaluate_ope.{json,md}.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


from agents.evaluate import mean_ci
from agents.exploration import EpsilonGreedy, SoftmaxExploration, log_episodes
from agents.ope import run_ope
from agents.ope_estimators import OPEConfig
from agents.policy_registry import DEFAULT_CHECKPOINT, check_policy_name, make_policy
from agents.rollout import run_episode
from agents.scenarios import WORKLOAD_NAMES, evaluation_workloads, sim_env_kwargs
from data.paths import REPO_ROOT
from router.decision_log import DecisionLogWriter, read_decision_log


@dataclass
class ValidateConfig:
    targets: tuple[str, ...] = field(default=("learned", "cost-model", "static:suffix>target@k4"), metadata={
        "help": "target policies (stateless registry names or checkpoint paths)"})
    behaviour: str = field(default="cost-model", metadata={"help": "base of the exploring logging policy"})
    exploration: str = field(default="epsilon", metadata={"help": "epsilon (epsilon-greedy) or softmax",
                                                          "choices": ["epsilon", "softmax"]})
    epsilon: float = field(default=0.3, metadata={"help": "epsilon of epsilon-greedy exploration"})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature (needs a learned behaviour)"})
    workload: str = field(default="spec_bench-mix", metadata={"help": "evaluation workload (agents.scenarios)"})
    log_episodes: int = field(default=12, metadata={"help": "episodes the behaviour policy logs"})
    true_episodes: int = field(default=10, metadata={"help": "on-policy episodes per target for the true value"})
    checkpoint: str = field(default=str(DEFAULT_CHECKPOINT), metadata={"help": "the learned policy"})
    gamma: float = field(default=0.9, metadata={"help": "FQE discount"})
    bootstrap: int = field(default=40, metadata={"help": "bootstrap resamples"})
    seed: int = field(default=0, metadata={"help": "seed of the logging run (truth uses other seeds)"})
    logs: str | None = field(default=None, metadata={"help": "keep the decision log here (default: a temp file)"})
    output_dir: str = field(default="bench/results", metadata={"help": "where evaluate_ope.{json,md} go",
                                                               "aliases": ["--out-dir"]})
    output_name: str = field(default="evaluate_ope", metadata={"help": "file name stem of the results",
                                                               "aliases": ["--name"]})
    profile: str | None = field(default=None, metadata={"help": "sim latency profile JSON (default: the env's)"})
    acceptance: str | None = field(default=None, metadata={"help": "sim acceptance models JSON (default: the env's)"})

    def __post_init__(self) -> None:
        for policy in (*self.targets, self.behaviour):
            check_policy_name(policy)
        if self.exploration not in ("epsilon", "softmax"):
            raise ValueError("exploration must be epsilon or softmax")
        if self.workload not in WORKLOAD_NAMES:
            raise ValueError(f"unknown workload {self.workload!r}; known: {', '.join(WORKLOAD_NAMES)}")
        if self.log_episodes < 2 or self.true_episodes < 2:
            raise ValueError("log_episodes and true_episodes must be >= 2")

    @property
    def env_kwargs(self) -> dict:
        return sim_env_kwargs(self.profile, self.acceptance)


def behaviour_policy(cfg: ValidateConfig, environment):
    base = make_policy(cfg.behaviour, environment, cfg.checkpoint)
    if cfg.exploration == "softmax":
        return SoftmaxExploration(base, cfg.temperature, seed=cfg.seed)
    return EpsilonGreedy(base, int(environment.action_space.n), cfg.epsilon, seed=cfg.seed)


def true_value(environment, policy, workload, episodes: int, seed_base: int) -> dict:
    """On-policy reward per decision (pooled over decisions) and its per-episode spread."""
    results = [run_episode(environment, policy, seed_base + i, {"workload": workload}) for i in range(episodes)]
    pooled = sum(r.total_reward for r in results) / sum(r.num_steps for r in results)
    return {"value": pooled, "per_episode": mean_ci([r.mean_reward for r in results])}


def validate(cfg: ValidateConfig) -> dict:
    import gymnasium

    import env  # noqa: F401
    environment = gymnasium.make("SpecRoute-v0", **cfg.env_kwargs)
    workload = evaluation_workloads(cfg.env_kwargs)[cfg.workload]
    start = time.perf_counter()
    logs = Path(cfg.logs) if cfg.logs else Path(tempfile.mkdtemp()) / "decisions.jsonl"
    logs.unlink(missing_ok=True)
    behaviour = behaviour_policy(cfg, environment)

    class _Workload(gymnasium.Wrapper):       # every logged episode draws from the evaluation workload
        def reset(self, *, seed=None, options=None):
            return self.env.reset(seed=seed, options={"workload": workload})

    with DecisionLogWriter(logs) as writer:
        num_rows = log_episodes(_Workload(environment), behaviour, writer, cfg.log_episodes, seed=cfg.seed,
                                obs_spec_version=environment.unwrapped.obs_spec.version)
    rows = read_decision_log(logs)
    config = OPEConfig(gamma=cfg.gamma, bootstrap=cfg.bootstrap, seed=cfg.seed)
    out = {"config": asdict(cfg), "behaviour": behaviour.name, "num_logged": num_rows, "targets": {}}
    for index, name in enumerate(cfg.targets):
        target = make_policy(name, environment, cfg.checkpoint)
        target = target.offline() if hasattr(target, "offline") else target    # what the log can replay
        report = run_ope(rows, target, int(environment.action_space.n), config)
        truth = true_value(environment, target, workload, cfg.true_episodes, seed_base=50_000 + 1000 * index)
        estimators = {}
        for estimator, estimate in report["estimates"].items():
            error = (estimate["value"] - truth["value"]) / abs(truth["value"])
            estimators[estimator] = {**estimate, "relative_error": error}
        out["targets"][name] = {"true_value": truth, "effective_sample_size": report["effective_sample_size"],
                                "estimators": estimators}
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["summary_markdown"] = summary_markdown(out)
    return out


def summary_markdown(out: dict) -> str:
    from cli.results import markdown_table
    cfg = out["config"]
    lines = [f"Behaviour policy `{out['behaviour']}` logged {out['num_logged']} decisions in "
             f"{cfg['log_episodes']} episodes of `{cfg['workload']}`; each target's true reward per decision "
             f"comes from {cfg['true_episodes']} on-policy episodes on other seeds. Estimates with 95% bootstrap "
             f"intervals (over episodes); error relative to the true value.", ""]
    rows = []
    for name, target in out["targets"].items():
        truth = target["true_value"]["value"]
        for estimator, e in target["estimators"].items():
            rows.append([name, f"{truth:.2f}", estimator, f"{e['value']:.2f}",
                         f"[{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}]", f"{e['relative_error']:+.1%}",
                         f"{target['effective_sample_size']:.0f}"])
    lines.append(markdown_table(["target", "true", "estimator", "estimate", "95% CI", "error", "ESS"], rows))
    return "\n".join(lines)


def main(cfg: ValidateConfig) -> Path:
    from cli.results import machine_info, write_results
    out = validate(cfg)
    out["machine"] = machine_info()
    out_dir = Path(cfg.output_dir)
    out_dir = out_dir if out_dir.is_absolute() else REPO_ROOT / out_dir
    markdown = "# Off-policy evaluation, validated in the simulator\n\nGenerated by `python -m agents.ope_validate` " \
               f"in {out['seconds']:.0f} s.\n\n" + out["summary_markdown"]
    _, md_path = write_results(cfg.output_name, json.loads(json.dumps(out, default=float)), markdown, out_dir)
    print(markdown)
    return md_path


if __name__ == "__main__":
    from cli.dataclass_args import parse_dataclass
    from cli.missing_data import exit_on_missing_data
    with exit_on_missing_data():
        main(parse_dataclass(ValidateConfig, description="Validate OPE estimators against on-policy truth in the sim."))
