"""Build any router by name for a given environment (evaluation, OPE and the command lines).

    PATH                  a checkpoint directory (or its manifest.json): the learned policy
    learned               the shipped checkpoint, checkpoints/router
    cost-model            the analytical cost model over the env's profile
    cost-model-rows       the same, one decision per row (CostModel.best_rows)
    static:<label>        one (chain, K), e.g. static:ngram>target@k4; static:* expands to every action
    no-spec               plain decoding
    acceptance-ema        SmartSpec-like choice of K from the acceptance EMAs
    ucb                   UCB1 bandit over the actions
    oracle                hindsight oracle (sim only), oracle:<horizon> for a longer look-ahead
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agents.cost_model_policy import CostModelPolicy
from agents.policies import (AcceptanceEMAPolicy, HindsightOraclePolicy, NoSpeculationPolicy, StaticPolicy,
                             UCBPolicy)
from data.paths import REPO_ROOT
from router.checkpoint import MANIFEST_NAME
from router.config import canonical_policy_name
from router.learned_policy import LearnedPolicy

DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "router"
POLICY_NAMES = ("learned", "cost-model", "cost-model-rows", "static:*", "no-spec", "acceptance-ema", "ucb", "oracle")


def load_learned(path: str | Path, env) -> LearnedPolicy:
    """A checkpoint checked against the env's observation spec and action list."""
    inner = env.unwrapped
    return LearnedPolicy.load(path, obs_spec_version=inner.obs_spec.version, obs_names=inner.obs_spec.names,
                              actions=inner.decisions)


def is_checkpoint(spec: str) -> bool:
    path = Path(spec)
    return (path / MANIFEST_NAME).is_file() or (path.suffix == ".json" and path.is_file())


def expand(names: list[str], env) -> list[str]:
    """Replace static:* by one static:<label> per action of the env."""
    out = []
    for name in names:
        if name == "static:*":
            out += [f"static:{label}" for label in env.unwrapped.action_labels]
        else:
            out.append(name)
    return out


def verify_token_cost(env, context: int = 512) -> float:
    """SmartSpec's linear latency model from the env's profile: the relative extra time of verifying
    one more token per row, (t(B, K+1) / t(B, 1) - 1) / (B K), the median over a small grid."""
    from engine.profile import LatencyProfile
    from env.config import resolve_path
    profile = LatencyProfile.load(resolve_path(env.unwrapped.config.sim.profile))
    ratios = []
    for batch in (1, 4, 8, 16):
        base = profile.forward_time("target", batch, 1, context)
        for k in (2, 4, 8):
            ratios.append((profile.forward_time("target", batch, k + 1, context) / base - 1.0) / (batch * k))
    return max(float(np.median(ratios)), 0.0)


def check_policy_name(spec: str) -> None:
    """ValueError unless `spec` names a policy (module docstring): a command checks its names
    with this before it builds anything."""
    name = canonical_policy_name(spec)
    if name in POLICY_NAMES or name.startswith(("static:", "oracle:")) or is_checkpoint(name):
        return
    raise ValueError(f"unknown policy {spec!r}; use a checkpoint directory or one of {', '.join(POLICY_NAMES)}, "
                     "static:<action label>, oracle:<horizon>")


def make_policy(spec: str, env, checkpoint: str | Path = DEFAULT_CHECKPOINT, seed: int = 0):
    """The policy `spec` names (see the module docstring) for `env`; ValueError when unknown."""
    inner = env.unwrapped
    spec = canonical_policy_name(spec)
    if spec == "learned":
        return load_learned(checkpoint, env)
    if spec in ("cost-model", "cost-model-rows"):
        return CostModelPolicy.from_env(env, per_row=spec == "cost-model-rows")
    if spec.startswith("static:"):
        return StaticPolicy(inner.decisions, spec.removeprefix("static:"))
    if spec == "no-spec":
        return NoSpeculationPolicy(inner.decisions)
    if spec == "acceptance-ema":
        return AcceptanceEMAPolicy(inner.decisions, inner.obs_spec.names, token_cost=verify_token_cost(env),
                                   scale=inner.obs_spec.scale)
    if spec == "ucb":
        return UCBPolicy(len(inner.decisions), seed=seed)
    if spec == "oracle" or spec.startswith("oracle:"):
        horizon = int(spec.partition(":")[2] or 1)
        return HindsightOraclePolicy(env, horizon=horizon)
    if is_checkpoint(spec):
        return load_learned(spec, env)
    check_policy_name(spec)                  # raises: every name it knows returned above
    raise AssertionError(f"check_policy_name passed {spec!r} that make_policy does not build")
