"""The observation spec follows from an action list and a RouterConfig, the same in the env and the server."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.batch_view import RowView
from engine.decision import Decision
from env.config import EnvConfig
from router.config import RouterConfig
from router.load_stats import LoadStats
from router.observation import catch_up_levels_of, observation_spec_for, pairs_of, signal_drafters_of
from router.observation_builder import ObservationBuilder, catch_up_feature

ACTIONS = [Decision.parse(text) for text in ("plain", "ngram>target@4", "ngram>int4>target@4", "draft>target@2")]


def test_the_spec_lists_what_the_actions_use():
    assert pairs_of(ACTIONS) == ["ngram>target", "ngram>int4", "int4>target", "draft>target"]
    assert signal_drafters_of(ACTIONS) == ["ngram"]
    assert catch_up_levels_of(ACTIONS) == ["int4", "draft"]
    spec = observation_spec_for(ACTIONS, RouterConfig(max_batch=4, max_model_len=256, slo_tpot_s=0.1, slo_ttft_s=2.0))
    assert spec.listed("acceptance") == pairs_of(ACTIONS)
    assert spec.listed("last_action") == ["plain", "ngram>target@k4", "ngram>int4>target@k4", "draft>target@k2"]


def test_the_server_s_spec_is_the_environment_s():
    """A server with the env's limits and SLOs must see the layout and ranges the policy was trained on."""
    env = EnvConfig(actions=tuple(ACTIONS), max_num_seqs=4, max_model_len=256, max_num_tokens=1024, slo_tpot_s=0.1,
                    slo_ttft_s=2.0)
    served = observation_spec_for(ACTIONS, RouterConfig(max_batch=4, max_model_len=256, slo_tpot_s=0.1,
                                                        slo_ttft_s=2.0))
    assert served == env.observation_spec()


def test_a_bad_router_config_names_the_field():
    with pytest.raises(ValueError, match="max_batch must be a finite number > 0"):
        RouterConfig(max_batch=0, max_model_len=256, slo_tpot_s=0.1, slo_ttft_s=2.0)


def test_the_builder_reads_its_layout_from_the_spec():
    spec = observation_spec_for(ACTIONS, RouterConfig(max_batch=4, max_model_len=256, slo_tpot_s=0.1, slo_ttft_s=2.0))
    builder = ObservationBuilder(spec)
    rows = [RowView("a", "", 20, 0, 10, 0.0, signals=(("ngram", 3),))]
    obs = builder.build(rows, [], {"ngram>target": 0.5}, LoadStats(0.1, 2.0), now=0.0, last_action=1)
    assert obs.shape == (len(spec.names),) and obs.dtype == np.float32
    assert obs[spec.names.index("acceptance[ngram>target]")] == 0.5
    assert obs[spec.names.index("last_action[ngram>target@k4]")] == 1.0


def test_catch_up_sums_over_rows_and_ignores_rows_whose_cache_is_unknown():
    rows = [RowView("a", "", 101, 0, 11, 0.0, cached=(("int4", 0),)),          # 100 lacking, 11 to go
            RowView("b", "", 50, 10, 1000, 0.0, cached=(("int4", 49),)),       # up to date, 256 at most
            RowView("c", "", 500, 0, 10, 0.0)]                                 # no cached lengths
    assert catch_up_feature(rows, "int4") == pytest.approx(math.log1p(100 / (11 + 256)))
    assert catch_up_feature(rows, "draft") == 0.0
    assert catch_up_feature([], "int4") == 0.0
