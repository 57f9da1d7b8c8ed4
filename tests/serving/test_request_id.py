"""X-Request-Id: the client's id echoed, a fresh one otherwise, on every response (streams too)."""

from __future__ import annotations

import pytest

STREAM = {"prompt": "the cat sat", "max_tokens": 3, "stream": True}


@pytest.mark.parametrize("method, path, body", [("POST", "/v1/completions", {"prompt": "the cat", "max_tokens": 2}),
                                                ("POST", "/v1/completions", STREAM),
                                                ("POST", "/v1/completions", {"prompt": 5}),
                                                ("GET", "/health", None), ("GET", "/nowhere", None)])
def test_the_clients_id_is_echoed(client, method, path, body):
    response = client.request(method, path, json=body, headers={"X-Request-Id": "my-id-42"})
    assert response.headers["x-request-id"] == "my-id-42"


def test_an_id_is_made_when_none_or_an_unusable_one_is_sent(client):
    made = [client.post("/v1/completions", json=STREAM, headers=headers).headers["x-request-id"]
            for headers in ({}, {}, {"X-Request-Id": "x" * 500}, {"X-Request-Id": "two words"})]
    assert len(set(made)) == 4 and all(len(i) == 32 for i in made)


def test_the_id_reaches_the_log(client, caplog):
    with caplog.at_level("DEBUG", logger="serving.requests"):
        client.get("/health", headers={"X-Request-Id": "trace-me"})
    assert any("trace-me" in record.getMessage() and "/health" in record.getMessage() for record in caplog.records)
