"""The OpenAPI document is the contract: schemathesis, seeded and small, against the live server.

Every schema-valid request is accepted (positive data acceptance), every schema-breaking one
refused with a 4xx (negative data rejection), every response matches the document; and the
document itself speaks JSON Schema (bounds as `minimum` / `maximum`, token ids bounded by the
served vocabulary) with limits quoted exactly in error messages.
"""

from __future__ import annotations

import json
import os

import jsonschema_rs
import pytest
from serving.protocol import MAX_SEED
from tests.serving.conftest import live_server
from tests.serving.contract import run_contract

COMPLETIONS = "/v1/completions"


def test_schemathesis_finds_no_contract_failure(make_state):
    state = make_state(("ngram", "target"), 3, default_max_tokens=8, max_model_len=512)
    with live_server(state) as url:
        report = run_contract(url, max_examples=int(os.environ.get("CONTRACT_EXAMPLES", 30)), seed_value=0)
    assert report.cases["positive"] >= 60 and report.cases["negative"] >= 60, report.cases
    assert report.num_failures == 0 and report.responses_5xx == 0, report.examples
    assert state.engine_loop.num_in_flight == 0 and state.engine_loop.num_failed_steps == 0


def test_the_document_uses_json_schema_keywords_and_the_served_vocabulary(client):
    document = client.app.openapi()
    text = json.dumps(document)
    for keyword in ('"ge":', '"le":', '"gt":', '"lt":', "x-token-id"):
        assert keyword not in text
    prompt = document["components"]["schemas"]["CompletionRequest"]["properties"]["prompt"]["anyOf"]
    token_ids = next(option for option in prompt if option.get("items", {}).get("type") == "integer")
    assert token_ids["items"] == {"type": "integer", "minimum": 0, "maximum": client.app.state.serving.vocab_size - 1}
    response = client.post(COMPLETIONS, json={"prompt": [client.app.state.serving.vocab_size]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"


@pytest.mark.parametrize("body", [{"prompt": ""}, {"prompt": "hi", "stop": [""]}, {"prompt": "hi", "echo": True},
                                  {"prompt": "hi", "presence_penalty": 0.5}, {"prompt": "hi", "suffix": "x"},
                                  {"prompt": "hi", "stream_options": {"include_usage": True}},
                                  {"prompt": "hi", "best_of": 2}])
def test_what_the_server_refuses_the_document_does_not_allow(client, body):
    document = client.app.openapi()
    validator = jsonschema_rs.Draft202012Validator({"$ref": "#/components/schemas/CompletionRequest",
                                                    "components": document["components"]})
    assert validator.is_valid({"prompt": "hi", "best_of": 1, "echo": False, "stop": ["."]})
    assert client.post(COMPLETIONS, json=body).status_code == 400
    assert not validator.is_valid(body)


def test_limits_are_quoted_exactly(client):
    error = client.post(COMPLETIONS, json={"prompt": "hi", "seed": MAX_SEED + 1}).json()["error"]
    assert error["param"] == "seed" and error["message"].endswith(f"less than or equal to {MAX_SEED}")
    assert "18446744073709551615" in error["message"]
