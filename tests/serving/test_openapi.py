"""The OpenAPI document tells the truth: the statuses and content types the server sends, with
schemas every real response satisfies."""

from __future__ import annotations

import pytest

from tests.serving.response_schema import response_errors

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
PROMPT = "the cat sat on the mat. the cat sat on the"


def test_the_document_lists_the_statuses_sent_and_never_422(client):
    document = client.app.openapi()
    for path in (COMPLETIONS, CHAT):
        responses = document["paths"][path]["post"]["responses"]
        assert {"200", "400", "404", "413", "429", "503"} <= set(responses) and "422" not in responses
        assert responses["429"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
        content = responses["200"]["content"]
        assert set(content) == {"application/json", "text/event-stream"}
        assert content["application/json"]["schema"]["$ref"].endswith("Response")
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert set(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert document["components"]["schemas"]["CompletionResponse"]["properties"]["choices"]


@pytest.mark.parametrize("path, body", [
    (COMPLETIONS, {"prompt": PROMPT, "max_tokens": 6}),
    (COMPLETIONS, {"prompt": PROMPT, "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}),
    (CHAT, {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 6}),
    (CHAT, {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 6, "stream": True}),
    (COMPLETIONS, {"prompt": PROMPT, "logit_bias": {"1": 3}}),
    (CHAT, {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
])
def test_generation_responses_match_the_document(client, path, body):
    response = client.post(path, json=body)
    assert not response_errors(client.app.openapi(), path, "post", response), response.text


def test_oversize_and_draining_responses_match_the_document(client):
    document = client.app.openapi()
    big = client.post(COMPLETIONS, content=b'{"prompt": "' + b"a" * (1 << 20) + b'"}',
                      headers={"content-type": "application/json"})
    assert big.status_code == 413 and not response_errors(document, COMPLETIONS, "post", big)
    client.app.state.serving.is_draining = True
    refused = client.post(COMPLETIONS, json={"prompt": "hi"})
    assert refused.status_code == 503 and not response_errors(document, COMPLETIONS, "post", refused)
    ready = client.get("/ready")
    assert ready.status_code == 503 and not response_errors(document, "/ready", "get", ready)


@pytest.mark.parametrize("path", ["/v1/models", "/health", "/ready", "/metrics"])
def test_get_routes_match_the_document(client, path):
    response = client.get(path)
    assert not response_errors(client.app.openapi(), path, "get", response), response.text
