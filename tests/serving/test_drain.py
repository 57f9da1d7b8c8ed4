"""SIGTERM drains with the listener open: /ready answers 503 'draining' and new requests 503
while the in-flight request runs to the end; then the server exits on its own."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from tests.serving.conftest import SlowRouter, live_server_handle

PROMPT = "the cat sat on the mat. the cat sat on the"


def test_sigterm_keeps_health_checks_answering_while_in_flight_requests_finish(make_state):
    state = make_state(("ngram", "target"), 3, drain_timeout_s=30)
    state.engine.set_router(SlowRouter(state.engine.router, 0.02))
    body = {"prompt": PROMPT, "max_tokens": 80, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    seen: dict = {}
    with live_server_handle(state) as (url, server, thread):
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as response:
            lines = []
            for line in response.iter_lines():
                if not line:
                    continue
                lines.append(line)
                if len(lines) == 2:
                    server.handle_exit(signal.SIGTERM, None)
                    time.sleep(0.5)           # uvicorn alone would have closed its listener by now
                    assert state.engine.scheduler.running
                    with httpx.Client(base_url=url, timeout=5) as probe:     # a new connection: the listener is open
                        seen["ready"] = probe.get("/ready")
                        seen["health"] = probe.get("/health")
                        seen["generate"] = probe.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
        assert lines[-1] == "data: [DONE]" and '"completion_tokens": 80' in lines[-2]
        assert seen["ready"].status_code == 503 and seen["ready"].json()["status"] == "draining"
        assert seen["health"].status_code == 200
        assert seen["generate"].status_code == 503
        thread.join(10)
        assert not thread.is_alive(), "the server should exit once nothing is in flight"


def test_the_drain_ends_at_its_timeout_even_with_work_in_flight(make_state):
    state = make_state(("target",), 0, drain_timeout_s=0.5)
    state.engine.set_router(SlowRouter(state.engine.router, 0.05))
    body = {"prompt": PROMPT, "max_tokens": 200, "temperature": 0, "ignore_eos": True}
    responses = []
    with live_server_handle(state) as (url, server, thread):
        worker = threading.Thread(target=lambda: responses.append(
            httpx.post(f"{url}/v1/completions", json=body, timeout=30)))
        worker.start()
        deadline = time.monotonic() + 10
        while not state.engine.scheduler.running and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        server.handle_exit(signal.SIGTERM, None)
        thread.join(15)
        assert not thread.is_alive() and time.monotonic() - started < 8
        worker.join(15)
    assert responses[0].status_code == 200 and responses[0].json()["choices"][0]["finish_reason"] == "abort"
