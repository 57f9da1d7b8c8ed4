"""The app behind real uvicorn on loopback: disconnects free KV, overload gets 429, the loop survives."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from engine import SamplingParams
from tests.serving.conftest import SlowRouter, live_server

PROMPT = "the cat sat on the mat. the cat sat on the"


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def all_kv_free(state) -> bool:
    engine = state.engine
    return (state.engine_loop.num_in_flight == 0 and not engine.scheduler.requests
            and all(level.cache.num_free_slots == level.cache.num_slots for level in engine.levels.values()))


def request_ended(state, reason: str) -> float:
    text = state.metrics.render().decode()
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total") and f'finished_reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_streaming_client_disconnect_aborts_and_frees_kv_at_every_level(make_state):
    state = make_state(("draft", "target"), 2)
    state.engine.set_router(SlowRouter(state.engine.router, 0.02))
    with live_server(state) as url, httpx.Client(base_url=url, timeout=30) as client:
        body = {"prompt": PROMPT, "max_tokens": 200, "temperature": 0, "ignore_eos": True, "stream": True}
        with client.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            received = 0
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    received += 1
                    if received == 3:
                        assert state.engine.scheduler.running, "the request should be running"
                        assert any(l.cache.num_free_slots < l.cache.num_slots for l in state.engine.levels.values())
                        break
        assert wait_until(lambda: all_kv_free(state))
        assert request_ended(state, "abort") == 1
        assert state.engine.levels["draft"].cache.num_free_slots == state.engine.levels["draft"].cache.num_slots


def test_non_streaming_client_disconnect_aborts_and_frees_kv(make_state):
    state = make_state(("ngram", "target"), 3)
    state.engine.set_router(SlowRouter(state.engine.router, 0.02))
    with live_server(state) as url:
        port = int(url.rsplit(":", 1)[1])
        payload = json.dumps({"prompt": PROMPT, "max_tokens": 200, "temperature": 0, "ignore_eos": True}).encode()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            assert wait_until(lambda: bool(state.engine.scheduler.running))
        assert wait_until(lambda: all_kv_free(state))
        assert request_ended(state, "abort") == 1


def test_full_queue_answers_429_with_retry_after_and_recovers(make_state):
    state = make_state(("ngram", "target"), 3, max_num_seqs=1, max_queue=1)
    state.engine.set_router(SlowRouter(state.engine.router, 0.02))
    long_request = {"prompt": PROMPT, "max_tokens": 60, "temperature": 0, "ignore_eos": True}
    with live_server(state) as url, httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(2) as pool:
        held = [pool.submit(client.post, "/v1/completions", json=long_request) for _ in range(2)]
        assert wait_until(lambda: state.engine_loop.num_in_flight == 2)
        refused = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "queue_full"
        assert all(f.result().status_code == 200 for f in held)
        assert client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2}).status_code == 200


def test_concurrent_identical_greedy_prompts_give_identical_outputs(make_state, make_engine):
    state = make_state(("ngram", "target"), 3, max_num_seqs=4)
    body = {"prompt": PROMPT, "max_tokens": 30, "temperature": 0, "ignore_eos": True}
    reference = make_engine(("target",), 0).generate([PROMPT], SamplingParams(max_tokens=30, ignore_eos=True))[0]
    with live_server(state) as url, httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: client.post("/v1/completions", json=body), range(6)))
    texts = {r.json()["choices"][0]["text"] for r in responses}
    assert texts == {reference.text}


def test_one_failing_request_never_stops_the_loop(make_state, make_engine, tokenizer):
    state = make_state(("ngram", "target"), 3, max_num_seqs=4)
    poison = tokenizer.convert_tokens_to_ids("z")
    drafter = state.engine.drafters["ngram"]
    propose = drafter.propose

    def poisoned_propose(request_id, token_ids, k):
        if poison in token_ids:
            raise RuntimeError("poisoned prompt")
        return propose(request_id, token_ids, k)

    drafter.propose = poisoned_propose
    state.engine.set_router(SlowRouter(state.engine.router, 0.005))
    good = {"prompt": PROMPT, "max_tokens": 30, "temperature": 0, "ignore_eos": True}
    bad = {"prompt": "zzz " + PROMPT, "max_tokens": 30, "temperature": 0, "ignore_eos": True}
    reference = make_engine(("target",), 0).generate([PROMPT], SamplingParams(max_tokens=30, ignore_eos=True))[0]
    with live_server(state) as url, httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client.post, "/v1/completions", json=b) for b in (good, bad, good)]
        streamed = client.post("/v1/completions", json={**bad, "stream": True})
        results = [f.result() for f in futures]
        after = client.post("/v1/completions", json=good)
        assert state.engine_loop.is_alive and client.get("/health").status_code == 200
    assert results[1].status_code == 500 and "poisoned" in results[1].json()["error"]["message"]
    for response in (results[0], results[2], after):
        assert response.status_code == 200 and response.json()["choices"][0]["text"] == reference.text
    events = [line for line in streamed.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and "poisoned" in events[-2]
    assert all_kv_free(state)
    assert request_ended(state, "error") == 2
