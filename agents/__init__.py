"""Routers for SpecRoute: the Policy protocol, every baseline, the learned policy and its checkpoint
format, decision logs, and off-policy evaluation. Training lives in `train_router`, evaluation in
`agents.evaluate`, OPE in `agents.ope` / `agents.ope_validate`."""

from agents.checkpoint import (CheckpointCorrupt, CheckpointError, CheckpointHashMismatch, CheckpointMissing,
                               CheckpointNaN, CheckpointSpecMismatch, Manifest, read_manifest)
from agents.cost_model_policy import CostModelPolicy
from agents.decision_log import DecisionLogRow, DecisionLogWriter, read_decision_log
from agents.exploration import EpsilonGreedy, SoftmaxExploration, log_episodes
from agents.learned_policy import LearnedPolicy
from agents.ope_estimators import LoggedSteps, OPEConfig, evaluate_off_policy
from agents.policies import (AcceptanceEMAPolicy, HindsightOraclePolicy, NoSpeculationPolicy, Policy, StaticPolicy,
                             UCBPolicy)
from agents.policy_registry import make_policy

__all__ = ["AcceptanceEMAPolicy", "CheckpointCorrupt", "CheckpointError", "CheckpointHashMismatch",
           "CheckpointMissing", "CheckpointNaN", "CheckpointSpecMismatch", "CostModelPolicy", "DecisionLogRow",
           "DecisionLogWriter", "EpsilonGreedy", "HindsightOraclePolicy", "LearnedPolicy", "LoggedSteps", "Manifest",
           "NoSpeculationPolicy", "OPEConfig", "Policy", "SoftmaxExploration", "StaticPolicy", "UCBPolicy",
           "evaluate_off_policy", "log_episodes", "make_policy", "read_decision_log", "read_manifest"]
