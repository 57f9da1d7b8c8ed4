"""The observation's catch-up entries: what a model level's cache lacks per token it could speed
up, the same in the simulator and in the server's observer, shown for the batch the step runs."""

from __future__ import annotations

import math

import pytest

from env import SpecRouteEnv


def test_a_level_s_catch_up_shows_a_new_prompt_until_that_level_has_fed_it(sim_kwargs):
    env = SpecRouteEnv(**{**sim_kwargs, "workload": {"name": "sharegpt", "num_requests": 1, "max_new_tokens": 32}},
                       actions=["plain", "int4>target@3", "draft>target@2"], max_num_seqs=1)
    names = env.obs_spec.names
    int4, draft, rows = names.index("catch_up[int4]"), names.index("catch_up[draft]"), names.index("batch_occupancy")
    obs, _ = env.reset(seed=0)
    request = next(iter(env.unwrapped._episode.requests.values()))
    assert obs[rows] == 1                                          # admitted: the batch the step runs
    expected = math.log1p((request.num_tokens - 1) / 32)
    assert obs[int4] == pytest.approx(expected, rel=1e-5) and obs[draft] == pytest.approx(expected, rel=1e-5)
    obs, *_ = env.step(0)                                          # plain: the target prefills, nobody else
    assert obs[int4] == pytest.approx(math.log1p((request.num_tokens - 1) / 31), rel=1e-5)
    obs, *_ = env.step(1)                                          # int4 catches up and drafts
    assert obs[int4] == 0 and obs[draft] > 0
