"""Retry-After a retrying client can live by: refused clients are queued behind the promises
made before them, so at 5x oversubscription clients that sleep Retry-After and try up to 6
times all get in."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from serving.retry_after import RetryPromises
from tests.serving.conftest import SlowRouter, live_server

MAX_TRIES = 6


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class PlacesEveryTwoSeconds:
    """An estimator whose k-th place frees at 2k seconds."""

    def expected_wait_s(self, num_needed: int = 1, num_promised: int = 0) -> float:
        return 2.0 * (num_needed + num_promised)


def test_each_refusal_is_queued_behind_the_promises_before_it():
    clock = FakeClock()
    promises = RetryPromises(PlacesEveryTwoSeconds(), lapse_s=2.0, clock=clock)
    assert [promises.refuse(1) for _ in range(3)] == [2, 4, 6]
    clock.now += 2.0
    promises.observe_arrival()              # the first client is back: its promise is consumed
    assert promises.num_outstanding == 2
    clock.now += 10.0                       # nobody else came back: their promises lapse
    promises.observe_arrival()
    assert promises.num_outstanding == 0 and promises.refuse(1) == 2


def test_without_observations_retry_after_is_one_second():
    assert RetryPromises(None).refuse(3) == 1


def retrying_client(url: str, body: dict) -> tuple[int, list[int]]:
    """Send `body`, sleeping each 429's Retry-After, at most MAX_TRIES times: (final status, Retry-Afters)."""
    waits = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for _ in range(MAX_TRIES):
            response = client.post("/v1/completions", json=body)
            if response.status_code != 429:
                return response.status_code, waits
            waits.append(int(response.headers["Retry-After"]))
            time.sleep(waits[-1])
    return 429, waits


def test_no_retrying_client_gives_up_at_five_times_oversubscription(make_state):
    state = make_state(("target",), 0, max_num_seqs=2, max_queue=2)
    state.engine.set_router(SlowRouter(state.engine.router, 0.02))
    body = {"prompt": "hello", "max_tokens": 30, "temperature": 0, "ignore_eos": True}
    num_clients = 5 * state.config.max_in_flight
    with live_server(state) as url, ThreadPoolExecutor(num_clients) as pool:
        results = list(pool.map(lambda _: retrying_client(url, body), range(num_clients)))
    gave_up = [waits for status, waits in results if status == 429]
    assert not gave_up, gave_up
    assert all(status == 200 for status, _ in results)
    assert sum(bool(waits) for _, waits in results) >= num_clients - state.config.max_in_flight
    assert state.engine_loop.num_in_flight == 0
