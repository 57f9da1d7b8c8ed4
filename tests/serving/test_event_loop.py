"""No stalls: tokenising and templating a request runs off the event loop, so /health answers
as fast while maximum-size prompts are being tokenised and refused as when the server is idle."""

from __future__ import annotations

import json
import threading

import httpx
import numpy as np

from tests.serving.conftest import live_server

NUM_BIG_CLIENTS = 8
BIG_BODIES_PER_CLIENT = 2
MAX_HEALTH_P99_OVER_IDLE = 10.0


def health_latencies_s(client: httpx.Client, keep_going, min_probes: int) -> list[float]:
    """/health latencies, probed back to back while `keep_going()` or until `min_probes`."""
    latencies = []
    while keep_going() or len(latencies) < min_probes:
        response = client.get("/health")
        assert response.status_code == 200
        latencies.append(response.elapsed.total_seconds())
    return latencies


def max_size_body(max_body_bytes: int, path: str) -> bytes:
    """A body of (almost) `max_body_bytes`: one prompt far beyond the context."""
    envelope = {"prompt": ""} if path == "/v1/completions" else {"messages": [{"role": "user", "content": ""}]}
    filler = max_body_bytes - len(json.dumps(envelope)) - 16
    text = ("the cat sat on the mat. " * (filler // 24 + 1))[:filler]
    body = {"prompt": text} if path == "/v1/completions" else {"messages": [{"role": "user", "content": text}]}
    return json.dumps(body).encode()


def test_health_p99_under_big_prompts_stays_near_idle(make_state):
    state = make_state(("target",), 0)
    paths = ("/v1/completions", "/v1/chat/completions")
    bodies = [max_size_body(state.config.max_body_bytes, path) for path in paths]
    statuses: list[int] = []

    def send_big(index: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as big_client:
            for _ in range(BIG_BODIES_PER_CLIENT):
                statuses.append(big_client.post(paths[index % 2], content=bodies[index % 2],
                                                headers={"content-type": "application/json"}).status_code)

    with live_server(state) as url, httpx.Client(base_url=url, timeout=120) as client:
        idle = np.percentile(health_latencies_s(client, lambda: False, 200), 99)
        senders = [threading.Thread(target=send_big, args=(i,)) for i in range(NUM_BIG_CLIENTS)]
        for sender in senders:
            sender.start()
        loaded = np.percentile(health_latencies_s(client, lambda: any(s.is_alive() for s in senders), 20), 99)
        for sender in senders:
            sender.join(120)
    assert statuses == [400] * NUM_BIG_CLIENTS * BIG_BODIES_PER_CLIENT, statuses
    assert loaded <= MAX_HEALTH_P99_OVER_IDLE * idle, (loaded, idle)
