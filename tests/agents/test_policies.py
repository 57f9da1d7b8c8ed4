"""Baseline routers: the protocol, and the choices each is meant to make."""

from __future__ import annotations

import numpy as np
import pytest

from agents.policies import AcceptanceEMAPolicy, NoSpeculationPolicy, StaticPolicy, UCBPolicy
from engine.decision import Decision
from router.policy import Policy, observe_reward, reset_policy

DECISIONS = [Decision(), Decision(("ngram", "target"), 2), Decision(("ngram", "target"), 8),
             Decision(("suffix", "target"), 4)]
OBS_NAMES = ["running_batch", "queue_length", "acceptance[ngram>target]", "acceptance[suffix>target]"]


def obs(batch=1.0, ngram=0.0, suffix=0.0):
    return np.array([batch, 0.0, ngram, suffix], dtype=np.float32)


def test_every_baseline_satisfies_the_protocol():
    for policy in (StaticPolicy(DECISIONS, "ngram>target@k2"), NoSpeculationPolicy(DECISIONS),
                   AcceptanceEMAPolicy(DECISIONS, OBS_NAMES), UCBPolicy(len(DECISIONS), seed=0)):
        assert isinstance(policy, Policy)
        reset_policy(policy)
        action = policy.act(obs())
        assert isinstance(action, int) and 0 <= action < len(DECISIONS)
        observe_reward(policy, 1.0)


def test_static_and_no_speculation_pick_their_action():
    assert StaticPolicy(DECISIONS, DECISIONS[3]).act(obs()) == 3
    assert StaticPolicy(DECISIONS, "ngram>target@2").act(obs()) == 1                 # either spelling of K
    assert StaticPolicy(DECISIONS, "ngram>target@k2").act(obs()) == 1
    assert NoSpeculationPolicy(DECISIONS).act(obs(ngram=0.9)) == 0
    with pytest.raises(ValueError, match="not in the action list"):
        StaticPolicy(DECISIONS, "draft>target@k4")
    with pytest.raises(ValueError, match="plain"):
        NoSpeculationPolicy(DECISIONS[1:])


def test_acceptance_ema_speculates_when_drafts_are_accepted_and_backs_off_under_load():
    policy = AcceptanceEMAPolicy(DECISIONS, OBS_NAMES, token_cost=0.02)
    assert policy.act(obs(batch=1, ngram=0.0, suffix=0.0)) == 0          # nothing accepted: plain
    assert policy.act(obs(batch=1, ngram=0.9, suffix=0.1)) == 2          # high acceptance: long ngram draft
    assert policy.act(obs(batch=1, ngram=0.1, suffix=0.8)) == 3          # the pair that is accepted
    assert policy.act(obs(batch=16, ngram=0.3, suffix=0.1)) == 0         # large batch, low acceptance: plain


def test_ucb_tries_every_action_then_settles_on_the_best():
    rng = np.random.default_rng(0)
    means = np.array([1.0, 2.0, 5.0, 3.0])
    policy = UCBPolicy(len(means), seed=0)
    chosen = []
    for _ in range(600):
        action = policy.act(obs())
        chosen.append(action)
        policy.observe(means[action] + rng.normal(0.0, 0.5))
    assert set(chosen[:4]) == {0, 1, 2, 3}
    assert np.mean(np.array(chosen[-200:]) == 2) > 0.9
    policy.reset()
    assert policy.counts.sum() == 0
