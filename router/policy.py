"""The policy protocol: what the environment loop, the evaluator and the server call.

A policy maps an observation (`router.observation`) to an index into the Discrete action
list; `reset()` at the start of an episode and `observe(reward)` after each step are optional.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """`act(obs) -> action index`; `name` labels it in reports and decision logs."""

    name: str

    def act(self, obs: np.ndarray) -> int: ...


def reset_policy(policy) -> None:
    """Call `policy.reset()` when it has one (the start of an episode)."""
    getattr(policy, "reset", lambda: None)()


def observe_reward(policy, reward: float) -> None:
    """Call `policy.observe(reward)` when it has one (after each step)."""
    getattr(policy, "observe", lambda r: None)(reward)
