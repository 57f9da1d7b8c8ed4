"""The OpenAI routes in-process: outputs, the SSE stream format, usage, models, health, metrics."""

from __future__ import annotations

import json

from engine import SamplingParams

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
PROMPT = "the cat sat on the mat. the cat sat on the"


def sse_events(text: str) -> list:
    """Parse an SSE body into JSON payloads; the final `[DONE]` is kept as the string."""
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            payload = block[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_greedy_completion_equals_plain_decoding_of_the_target(client, make_engine):
    body = client.post(COMPLETIONS, json={"model": "tiny", "prompt": PROMPT, "max_tokens": 24, "temperature": 0,
                                          "ignore_eos": True}).json()
    reference = make_engine(("target",), 0).generate([PROMPT], SamplingParams(max_tokens=24, ignore_eos=True))[0]
    assert body["object"] == "text_completion" and body["model"] == "tiny"
    assert body["choices"][0]["text"] == reference.text
    assert body["choices"][0]["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 24 and usage["total_tokens"] == usage["prompt_tokens"] + 24
    assert usage["num_draft_tokens"] > 0 and 0 <= usage["num_accepted_tokens"] <= usage["num_draft_tokens"]


def test_chat_stream_is_openai_chunks_ending_with_done(client):
    request = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}],
               "max_tokens": 20, "temperature": 0, "ignore_eos": True}
    full = client.post(CHAT, json=request).json()
    assert full["object"] == "chat.completion" and full["choices"][0]["message"]["role"] == "assistant"
    response = client.post(CHAT, json={**request, "stream": True, "stream_options": {"include_usage": True}})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks, usage = events[:-2], events[-2]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == full["choices"][0]["message"]["content"]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 20


def test_streamed_completion_never_shows_the_stop_string(client):
    request = {"prompt": PROMPT, "max_tokens": 40, "temperature": 0, "ignore_eos": True}
    text = client.post(COMPLETIONS, json=request).json()["choices"][0]["text"]
    stop = text[10:12]          # a string the greedy output is known to contain
    full = client.post(COMPLETIONS, json={**request, "stop": [stop]}).json()["choices"][0]
    assert full["finish_reason"] == "stop" and full["text"] == text[: text.index(stop)]
    events = sse_events(client.post(COMPLETIONS, json={**request, "stop": stop, "stream": True}).text)
    assert events[-1] == "[DONE]"
    streamed = "".join(e["choices"][0]["text"] for e in events[:-1])
    assert streamed == full["text"] and stop not in streamed
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_several_prompts_and_n_give_one_choice_each(client):
    body = client.post(COMPLETIONS, json={"prompt": ["abc", "hello there"], "n": 2, "max_tokens": 5,
                                          "temperature": 0.8, "seed": 7}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["usage"]["prompt_tokens"] == len("abc") + len("hello there")     # once per prompt, not per choice
    assert body["usage"]["completion_tokens"] == 20
    again = client.post(COMPLETIONS, json={"prompt": ["abc", "hello there"], "n": 2, "max_tokens": 5,
                                           "temperature": 0.8, "seed": 7}).json()
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in body["choices"]]   # seeded


def test_token_id_prompts_are_accepted(client, tokenizer):
    ids = tokenizer.encode("hello", add_special_tokens=False)
    by_ids = client.post(COMPLETIONS, json={"prompt": ids, "max_tokens": 6, "temperature": 0}).json()
    by_text = client.post(COMPLETIONS, json={"prompt": "hello", "max_tokens": 6, "temperature": 0}).json()
    assert by_ids["choices"][0]["text"] == by_text["choices"][0]["text"]


def test_models_health_ready(client):
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny"]
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["router"]["source"] == "fallback"


def test_metrics_carry_vllm_spec_decode_names_and_routing(client):
    client.post(COMPLETIONS, json={"prompt": PROMPT, "max_tokens": 12, "temperature": 0})
    text = client.get("/metrics").text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values['vllm:spec_decode_num_drafts_total{model_name="tiny"}'] > 0
    assert values['vllm:spec_decode_num_draft_tokens_total{model_name="tiny"}'] >= \
        values['vllm:spec_decode_num_accepted_tokens_total{model_name="tiny"}']
    assert values['vllm:request_success_total{finished_reason="length",model_name="tiny"}'] == 1
    decisions = [v for k, v in values.items() if k.startswith("specroute:router_decisions_total")
                 and 'source="fallback"' in k and 'chain="ngram>target"' in k and 'k="3"' in k]
    assert decisions and decisions[0] > 0
    assert values['vllm:generation_tokens_total{model_name="tiny"}'] == 12
    # occupancy comes from the snapshot the engine thread published after the request's last step
    assert values['vllm:num_requests_running{model_name="tiny"}'] == 0
    assert values['vllm:num_requests_waiting{model_name="tiny"}'] == 0
    assert values['specroute:kv_cache_free_slots{level="target",model_name="tiny"}'] > 0
