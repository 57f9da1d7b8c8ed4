"""Training-side routers for SpecRoute: every baseline policy, exploration, evaluation, offline policy
evaluation and policy export. The runtime they share with serving (the Policy protocol, the learned
policy and its checkpoint format, decision logs, the cost-model router) lives in `router`.
Training lives in `train_router`, evaluation in `agents.evaluate`, OPE in `agents.ope` /
`agents.ope_validate`.

Imports data, cli, engine, router and env; never serving or bench (tests/test_layout.py).
"""

from agents.cost_model_policy import CostModelPolicy
from agents.exploration import EpsilonGreedy, SoftmaxExploration, log_episodes
from agents.ope_estimators import LoggedSteps, OPEConfig, evaluate_off_policy
from agents.policies import AcceptanceEMAPolicy, HindsightOraclePolicy, NoSpeculationPolicy, StaticPolicy, UCBPolicy
from agents.policy_registry import make_policy

__all__ = ["AcceptanceEMAPolicy", "CostModelPolicy", "EpsilonGreedy", "HindsightOraclePolicy", "LoggedSteps",
           "NoSpeculationPolicy", "OPEConfig", "SoftmaxExploration", "StaticPolicy", "UCBPolicy",
           "evaluate_off_policy", "log_episodes", "make_policy"]
