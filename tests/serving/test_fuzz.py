"""Fuzzing the OpenAI routes from the app's own OpenAPI schema: no response is ever >= 500, and
every response (status, content type, body, each SSE event) is what the document says."""

from __future__ import annotations

import json
import os

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from serving.app import create_app
from tests.serving.schema_strategies import request_bodies, response_errors


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_fuzzed_bodies_never_get_a_server_error(make_state, path):
    state = make_state(("ngram", "target"), 3, default_max_tokens=8)
    with TestClient(create_app(state)) as client:
        openapi = client.app.openapi()
        strategy = request_bodies(openapi, path)

        @settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 120)), deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(body=strategy)
        def check(body):
            response = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
            assert response.status_code < 500, (body, response.text)
            assert not response_errors(openapi, path, "post", response), (body, response.text)
            if response.status_code >= 400:
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}
            elif isinstance(body, dict) and body.get("stream") is True:
                assert response.text.rstrip().endswith("data: [DONE]")
            else:
                assert response.json()["choices"]

        check()
        assert state.engine_loop.num_in_flight == 0 and state.engine_loop.num_failed_steps == 0
