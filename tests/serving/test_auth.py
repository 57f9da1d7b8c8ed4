"""`--api-key`: 401 with OpenAI's error body without the key or with a wrong one, 200 with it;
the probes stay open, /metrics too unless `--api-key-metrics`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.auth import api_key_from_env

KEY = "sk-test-123"
COMPLETION = {"prompt": "the cat sat", "max_tokens": 2}


@pytest.fixture
def authed(make_state):
    def build(**config) -> TestClient:
        return TestClient(create_app(make_state(api_key=KEY, **config)))
    return build


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}])
def test_a_missing_or_wrong_key_gets_401_with_the_openai_error_body(authed, headers):
    with authed() as client:
        for method, path, body in (("POST", "/v1/completions", COMPLETION), ("GET", "/v1/models", None),
                                   ("POST", "/tokenize", {"prompt": "hi"}), ("GET", "/version", None)):
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
            error = response.json()["error"]
            assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
            assert error["param"] is None and error["message"]


def test_the_right_key_is_served_and_the_probes_stay_open(authed):
    with authed() as client:
        auth = {"Authorization": f"Bearer {KEY}"}
        assert client.post("/v1/completions", json=COMPLETION, headers=auth).status_code == 200
        assert client.get("/v1/models", headers=auth).status_code == 200
        for path in ("/health", "/ready", "/metrics"):
            assert client.get(path).status_code == 200, path


def test_api_key_metrics_protects_metrics(authed):
    with authed(api_key_metrics=True) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.get("/health").status_code == 200


def test_without_a_key_nothing_is_asked(client):
    assert client.post("/v1/completions", json=COMPLETION).status_code == 200


def test_the_key_comes_from_the_flag_else_the_environment(monkeypatch):
    monkeypatch.setenv("SPECROUTE_API_KEY", "from-env")
    assert api_key_from_env("") == "from-env" and api_key_from_env("flag") == "flag"
    monkeypatch.delenv("SPECROUTE_API_KEY")
    assert api_key_from_env("") == ""


def test_the_key_is_not_in_the_config_repr(make_state):
    assert KEY not in repr(make_state(api_key=KEY).config)


def test_the_openapi_document_lists_the_401_and_the_bearer_scheme(authed):
    with authed() as client:
        document = client.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert document["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert "401" in document["paths"]["/v1/completions"]["post"]["responses"]
    assert "401" not in document["paths"]["/health"]["get"]["responses"]
    assert "401" not in document["paths"]["/metrics"]["get"]["responses"]
