"""No stalls: tokenising and templating a request runs off the event loop, so /health answers
as fast while maximum-size prompts are being tokenised and refused as when the server is idle."""

from __future__ import annotations

import json
import threading

import httpx
import numpy as np

from tests.serving.conftest import live_server

NUM_BIG_CLIENTS = 8
MAX_HEALTH_P99_OVER_IDLE = 10.0


def health_p99_s(client: httpx.Client, num_probes: int) -> float:
    latencies = []
    for _ in range(num_probes):
        response = client.get("/health")
        assert response.status_code == 200
        latencies.append(response.elapsed.total_seconds())
    return float(np.percentile(latencies, 99))


def max_size_body(max_body_bytes: int, path: str) -> bytes:
    """A body of (almost) `max_body_bytes`: one prompt far beyond the context."""
    envelope = {"prompt": ""} if path == "/v1/completions" else {"messages": [{"role": "user", "content": ""}]}
    filler = max_body_bytes - len(json.dumps(envelope)) - 16
    text = ("the cat sat on the mat. " * (filler // 24 + 1))[:filler]
    body = {"prompt": text} if path == "/v1/completions" else {"messages": [{"role": "user", "content": text}]}
    return json.dumps(body).encode()


def test_health_p99_under_big_prompts_stays_near_idle(make_state):
    state = make_state(("target",), 0)
    bodies = [max_size_body(state.config.max_body_bytes, path) for path in ("/v1/completions", "/v1/chat/completions")]
    stop = threading.Event()
    statuses: list[int] = []

    def send_big(index: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as big_client:
            while not stop.is_set():
                statuses.append(big_client.post(("/v1/completions", "/v1/chat/completions")[index % 2],
                                                content=bodies[index % 2],
                                                headers={"content-type": "application/json"}).status_code)

    with live_server(state) as url, httpx.Client(base_url=url, timeout=30) as client:
        idle = health_p99_s(client, 200)
        senders = [threading.Thread(target=send_big, args=(i,)) for i in range(NUM_BIG_CLIENTS)]
        for sender in senders:
            sender.start()
        try:
            loaded = health_p99_s(client, 200)
        finally:
            stop.set()
            for sender in senders:
                sender.join(120)
    print("NUMBERS", loaded, idle, len(statuses))
    assert len(statuses) >= NUM_BIG_CLIENTS and set(statuses) == {400}, set(statuses)
    assert loaded <= MAX_HEALTH_P99_OVER_IDLE * idle, (loaded, idle)
