"""logprobs on both endpoints, in OpenAI's two formats, streamed and not; bad values get a 400.

The values are the target's own (engine/logprobs.py): the server's speculative chain
(ngram>target) reports bit for bit what plain decoding of the target reports.
"""

from __future__ import annotations

import pytest

from engine import SamplingParams
from tests.serving.conftest import live_server
from tests.serving.response_schema import response_errors
from tests.serving.test_app import sse_events
from tests.serving.test_validation import assert_openai_error

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
PROMPT = "the cat sat on the mat. the cat sat on the"
MESSAGES = [{"role": "user", "content": PROMPT}]
GREEDY = {"max_tokens": 16, "temperature": 0, "ignore_eos": True}


def stream_choices(response) -> list[dict]:
    return [e["choices"][0] for e in sse_events(response.text) if isinstance(e, dict) and e.get("choices")]


def test_completion_logprobs_equal_plain_decoding_of_the_target(client, make_engine):
    response = client.post(COMPLETIONS, json={"prompt": PROMPT, "logprobs": 3, **GREEDY})
    assert not response_errors(client.app.openapi(), COMPLETIONS, "post", response), response.text
    choice = response.json()["choices"][0]
    logprobs = choice["logprobs"]
    reference = make_engine(("target",), 0).generate([PROMPT], SamplingParams(max_tokens=16, ignore_eos=True,
                                                                              logprobs=3))[0]
    assert logprobs["token_logprobs"] == [e.logprob for e in reference.logprobs]
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert logprobs["text_offset"] == [len("".join(logprobs["tokens"][:i])) for i in range(len(logprobs["tokens"]))]
    for token, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"]):
        assert top[token] == logprob and max(top.values()) == logprob and len(top) <= 4   # greedy: the argmax


def test_chat_logprobs_in_openai_format(client):
    response = client.post(CHAT, json={"messages": MESSAGES, "logprobs": True, "top_logprobs": 2, **GREEDY})
    assert not response_errors(client.app.openapi(), CHAT, "post", response), response.text
    body = response.json()
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"]
    assert "".join(e["token"] for e in content) == body["choices"][0]["message"]["content"]
    for entry in content:
        assert entry["bytes"] == list(entry["token"].encode())
        values = [t["logprob"] for t in entry["top_logprobs"]]
        assert len(values) == 2 and values == sorted(values, reverse=True)
        assert entry["top_logprobs"][0]["token"] == entry["token"] and values[0] == entry["logprob"]


def test_logprobs_without_top_logprobs_give_the_chosen_tokens_only(client):
    body = client.post(CHAT, json={"messages": MESSAGES, "logprobs": True, **GREEDY}).json()
    assert all(entry["top_logprobs"] == [] for entry in body["choices"][0]["logprobs"]["content"])
    assert client.post(CHAT, json={"messages": MESSAGES, **GREEDY}).json()["choices"][0]["logprobs"] is None


def test_streamed_chunks_carry_the_logprobs_of_their_tokens(client):
    full = client.post(CHAT, json={"messages": MESSAGES, "logprobs": True, "top_logprobs": 1, **GREEDY}).json()
    response = client.post(CHAT, json={"messages": MESSAGES, "logprobs": True, "top_logprobs": 1, "stream": True,
                                       **GREEDY})
    assert not response_errors(client.app.openapi(), CHAT, "post", response), response.text
    streamed = []
    for choice in stream_choices(response):
        entries = (choice["logprobs"] or {}).get("content") or []
        assert "".join(e["token"] for e in entries) == choice["delta"].get("content", "")
        streamed += entries
    assert streamed == full["choices"][0]["logprobs"]["content"]


def test_streamed_completion_offsets_run_on_across_chunks(client):
    full = client.post(COMPLETIONS, json={"prompt": PROMPT, "logprobs": 1, **GREEDY}).json()["choices"][0]["logprobs"]
    chunks = stream_choices(client.post(COMPLETIONS, json={"prompt": PROMPT, "logprobs": 1, "stream": True, **GREEDY}))
    joined = {key: [] for key in full}
    for choice in chunks:
        if choice["logprobs"] is not None:
            assert "".join(choice["logprobs"]["tokens"]) == choice["text"]
            for key in joined:
                joined[key] += choice["logprobs"][key]
    assert len(chunks) > 2 and joined == full


@pytest.mark.parametrize("path, extra, param", [
    (CHAT, {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    (CHAT, {"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    (CHAT, {"top_logprobs": 2}, "top_logprobs"),                    # OpenAI: only with logprobs: true
    (CHAT, {"logprobs": False, "top_logprobs": 0}, "top_logprobs"),
    (CHAT, {"logprobs": 1}, "logprobs"),                              # a boolean, not a number
    (COMPLETIONS, {"logprobs": 6}, "logprobs"),                       # the legacy endpoint's bound is 5
    (COMPLETIONS, {"logprobs": True}, "logprobs"),
    (COMPLETIONS, {"logprobs": 1.5}, "logprobs"),
])
def test_bad_logprobs_values_are_400_naming_the_field(client, path, extra, param):
    base = {"prompt": "hi"} if path == COMPLETIONS else {"messages": MESSAGES}
    error = assert_openai_error(client.post(path, json={**base, "max_tokens": 2, **extra}), 400, param)
    assert error["type"] == "invalid_request_error"


def test_the_openai_client_reads_top_logprobs(make_state):
    openai = pytest.importorskip("openai")
    with live_server(make_state()) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        response = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, temperature=0,
                                                  logprobs=True, top_logprobs=3)
    first = response.choices[0].logprobs.content[0]
    assert len(first.top_logprobs) == 3 and first.top_logprobs[0].token == first.token
    assert first.top_logprobs[0].logprob == first.logprob <= 0
