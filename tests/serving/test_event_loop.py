"""No stalls: tokenising and templating a request runs off the event loop, so /health answers
as fast while maximum-size prompts are being tokenised and refused as when the server is idle."""

from __future__ import annotations

import numpy as np

from tests.serving.big_prompts import health_under_big_prompts
from tests.serving.conftest import live_server

NUM_BIG_CLIENTS = 8
BIG_BODIES_PER_CLIENT = 2
MAX_HEALTH_P99_OVER_IDLE = 10.0         # measured 1.5x; 259x with tokenisation on the event loop


def test_health_p99_under_big_prompts_stays_near_idle(make_state):
    state = make_state(("target",), 0)
    with live_server(state) as url:
        idle, loaded, statuses = health_under_big_prompts(url, state.config.max_body_bytes, NUM_BIG_CLIENTS,
                                                          BIG_BODIES_PER_CLIENT)
    assert statuses == [400] * NUM_BIG_CLIENTS * BIG_BODIES_PER_CLIENT, statuses
    assert np.percentile(loaded, 99) <= MAX_HEALTH_P99_OVER_IDLE * np.percentile(idle, 99), (loaded, idle)
