"""/health timed while clients send maximum-size prompts (the event-loop stall check of
tests/serving/test_event_loop.py and bench/reliability.py)."""

from __future__ import annotations

import json
import threading

import httpx

PATHS = ("/v1/completions", "/v1/chat/completions")


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
    envelope = {"prompt": ""} if path == PATHS[0] else {"messages": [{"role": "user", "content": ""}]}
    filler = max_body_bytes - len(json.dumps(envelope)) - 16
    text = ("the cat sat on the mat. " * (filler // 24 + 1))[:filler]
    body = {"prompt": text} if path == PATHS[0] else {"messages": [{"role": "user", "content": text}]}
    return json.dumps(body).encode()


def health_under_big_prompts(url: str, max_body_bytes: int, num_clients: int,
                             bodies_per_client: int) -> tuple[list[float], list[float], list[int]]:
    """(/health latencies idle, the same while `num_clients` clients each send `bodies_per_client`
    maximum-size prompts, alternating routes; the statuses those prompts got)."""
    bodies = [max_size_body(max_body_bytes, path) for path in PATHS]
    statuses: list[int] = []

    def send_big(index: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as big_client:
            for _ in range(bodies_per_client):
                statuses.append(big_client.post(PATHS[index % 2], content=bodies[index % 2],
                                                headers={"content-type": "application/json"}).status_code)

    with httpx.Client(base_url=url, timeout=120) as client:
        idle = health_latencies_s(client, lambda: False, 200)
        senders = [threading.Thread(target=send_big, args=(i,)) for i in range(num_clients)]
        for sender in senders:
            sender.start()
        loaded = health_latencies_s(client, lambda: any(s.is_alive() for s in senders), 20)
        for sender in senders:
            sender.join(600)
    return idle, loaded, statuses
