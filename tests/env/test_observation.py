"""The observation's catch-up entries: what a model level's cache lacks per token it could speed
up, the same in the simulator and in the server's observer, shown for the batch the step runs."""

from __future__ import annotations

import math

import pytest

from engine.batch_view import RowView
from env import SpecRouteEnv
from env.observation import catch_up_feature


def test_a_level_s_catch_up_shows_a_new_prompt_until_that_level_has_fed_it(sim_kwargs):
    env = SpecRouteEnv(**{**sim_kwargs, "workload": {"name": "sharegpt", "num_requests": 1, "max_new_tokens": 32}},
                       actions=["plain", "int4>target@3", "draft>target@2"], max_num_seqs=1)
    names = env.obs_spec.names
    int4, draft, rows = names.index("catch_up[int4]"), names.index("catch_up[draft]"), names.index("running_batch")
    obs, _ = env.reset(seed=0)
    request = next(iter(env.unwrapped._episode.requests.values()))
    assert obs[rows] == 1                                          # admitted: the batch the step runs
    expected = math.log1p((request.num_tokens - 1) / 32)
    assert obs[int4] == pytest.approx(expected, rel=1e-5) and obs[draft] == pytest.approx(expected, rel=1e-5)
    obs, *_ = env.step(0)                                          # plain: the target prefills, nobody else
    assert obs[int4] == pytest.approx(math.log1p((request.num_tokens - 1) / 31), rel=1e-5)
    obs, *_ = env.step(1)                                          # int4 catches up and drafts
    assert obs[int4] == 0 and obs[draft] > 0


def test_catch_up_sums_over_rows_and_ignores_rows_whose_cache_is_unknown():
    rows = [RowView("a", "", 101, 0, 11, 0.0, cached=(("int4", 0),)),          # 100 lacking, 11 to go
            RowView("b", "", 50, 10, 1000, 0.0, cached=(("int4", 49),)),       # up to date, 256 at most
            RowView("c", "", 500, 0, 10, 0.0)]                                 # no cached lengths
    assert catch_up_feature(rows, "int4") == pytest.approx(math.log1p(100 / (11 + 256)))
    assert catch_up_feature(rows, "draft") == 0.0
    assert catch_up_feature([], "int4") == 0.0
