"""The router's runtime: everything a policy needs to decide an engine step, in training and serving.

    config.py               RouterConfig: the limits and SLOs the observation is scaled by, the reward's penalty
    observation.py          ObservationSpec (versioned names and ranges) and the spec of an action list
    observation_builder.py  ObservationBuilder: the observation vector from a batch view and LoadStats
    load_stats.py           LoadStats: arrivals, step latency, TTFT/TPOT against the SLO, the step's reward
    policy.py               the Policy protocol, `act(obs) -> action index`
    checkpoint.py           the policy checkpoint format (safetensors + JSON manifest) and its typed errors
    learned_policy.py       LearnedPolicy: the exported network, run in numpy
    cost_router.py          CostModelRouter: the cost model as the engine's router (and the fallback)
    decision_log.py         the decision log row, its JSONL writer and reader (off-policy evaluation)

Imports run downward only (tests/test_layout.py): `router` imports `engine` (and `data`, `cli`, numpy, torch, safetensors, the
standard library); `env`, `agents` and `serving` import `router`; nothing here imports them or
`bench`. A decision is spelled as `engine.decision.Decision` parses and prints it.
"""

from router.checkpoint import (CheckpointCorrupt, CheckpointError, CheckpointHashMismatch, CheckpointMissing,
                               CheckpointNaN, CheckpointSpecMismatch, Manifest, read_manifest)
from router.config import RouterConfig
from router.cost_router import CostModelRouter
from router.decision_log import DecisionLogRow, DecisionLogWriter, read_decision_log
from router.learned_policy import LearnedPolicy
from router.load_stats import LoadStats, StepOutcome
from router.observation import OBS_SPEC_VERSION, ObservationSpec, observation_spec_for
from router.observation_builder import ObservationBuilder
from router.policy import Policy

__all__ = ["CheckpointCorrupt", "CheckpointError", "CheckpointHashMismatch", "CheckpointMissing", "CheckpointNaN",
           "CheckpointSpecMismatch", "CostModelRouter", "DecisionLogRow", "DecisionLogWriter", "LearnedPolicy",
           "LoadStats", "Manifest", "OBS_SPEC_VERSION", "ObservationBuilder", "ObservationSpec", "Policy",
           "RouterConfig", "StepOutcome", "observation_spec_for", "read_decision_log", "read_manifest"]
