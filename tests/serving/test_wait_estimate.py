"""Retry-After is the queue's expected wait: the queue replayed on the batch's slots at the observed
service time, and under real overload it is within 2x of the time a place actually took to free."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest

from engine import SamplingParams
from engine.sequence import Request
from serving.wait_estimate import WaitEstimator
from tests.serving.conftest import SlowRouter, live_server
from tests.serving.test_live_server import wait_until


def make_dummy_engine(running: list[tuple[int, int]], waiting: list[int], latency_s: float, committed: int):
    """An engine-shaped object: running (max_tokens, generated) rows, waiting max_tokens, one step."""
    def request(max_tokens: int, generated: int = 0) -> Request:
        return Request("r", [1], SamplingParams(max_tokens=max_tokens), output_token_ids=[0] * generated)
    scheduler = SimpleNamespace(running=[request(m, g) for m, g in running], waiting=[request(m) for m in waiting])
    step = SimpleNamespace(batch_size=len(running), num_committed=committed, latency_s=latency_s)
    return SimpleNamespace(scheduler=scheduler, last_step=step)


def test_expected_wait_replays_the_queue_on_the_batch_slots():
    estimator = WaitEstimator(max_batch=2, smoothing=1.0)
    assert estimator.expected_wait_s(1) is None                      # nothing observed yet
    # two rows, one token each per 0.1 s step: 0.1 s per token per row
    estimator.observe_step(make_dummy_engine([(50, 40), (50, 20)], [10, 10], latency_s=0.1, committed=2), [])
    assert estimator.expected_wait_s(1) == pytest.approx(1.0)        # 10 tokens left
    assert estimator.expected_wait_s(2) == pytest.approx(2.0)        # the first waiting one, started at 1.0
    assert estimator.expected_wait_s(3) == pytest.approx(3.0)        # the other row's 30 tokens
    assert estimator.expected_wait_s(9) == pytest.approx(3.0)        # only four are in the engine


def test_retry_after_is_within_twice_the_real_wait_under_overload(make_state):
    state = make_state(("target",), 0, max_num_seqs=1, max_queue=1)
    state.engine.set_router(SlowRouter(state.engine.router, 0.03))
    long_request = {"prompt": "hello", "max_tokens": 100, "temperature": 0, "ignore_eos": True}
    with live_server(state) as url, httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(2) as pool:
        held = [pool.submit(client.post, "/v1/completions", json=long_request) for _ in range(2)]
        assert wait_until(lambda: state.engine_loop.num_in_flight == 2 and len(state.engine.scheduler.running) == 1
                          and len(state.engine.scheduler.running[0].output_token_ids) > 10)
        refused = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
        refused_at = time.monotonic()
        assert refused.status_code == 429
        assert wait_until(lambda: state.engine_loop.num_in_flight < 2, timeout_s=30)
        waited = time.monotonic() - refused_at
        retry_after = int(refused.headers["Retry-After"])
        assert 0.5 <= retry_after / waited <= 2.0, (retry_after, waited)
        assert all(f.result().status_code == 200 for f in held)


def test_a_job_lasts_the_observed_service_time_within_its_token_bound():
    clock = [0.0]
    estimator = WaitEstimator(max_batch=1, smoothing=1.0, clock=lambda: clock[0])
    first, second = (Request(rid, [1], SamplingParams(max_tokens=100)) for rid in ("a", "b"))
    step = SimpleNamespace(batch_size=1, num_committed=1, latency_s=0.1)          # 0.1 s per token
    estimator.observe_step(SimpleNamespace(scheduler=SimpleNamespace(running=[first], waiting=[second]),
                                           last_step=step), [])
    assert estimator.expected_wait_s(2) == pytest.approx(20.0)        # no request finished yet: token bounds
    clock[0] = 2.9                                                    # "a" ends early (EOS), 3 s after it began
    estimator.observe_step(SimpleNamespace(scheduler=SimpleNamespace(running=[second], waiting=[]), last_step=step),
                           [SimpleNamespace(request_id="a", finished=True, output_token_ids=[0] * 60)])
    assert estimator.seconds_per_request == pytest.approx(3.0)
    assert estimator.expected_wait_s(1) == pytest.approx(2.9)         # "b" has run 0.1 s of its expected 3
    assert estimator.expected_wait_s(1, num_promised=1) == pytest.approx(5.9)     # then a promised client's 3 s
    assert estimator.seconds_per_request_token == pytest.approx(0.05)          # 3 s for its 60 tokens
