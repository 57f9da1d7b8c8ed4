"""/tokenize, /detokenize and /version as vLLM serves them."""

from __future__ import annotations

import pytest

from serving.tokenize_routes import package_version
from tests.serving.response_schema import response_errors

TEXT = "the cat sat on the mat"


def test_tokenize_then_detokenize_gives_the_text_back(client, tokenizer):
    body = client.post("/tokenize", json={"model": "tiny", "prompt": TEXT}).json()
    assert body["tokens"] == tokenizer.encode(TEXT, add_special_tokens=False)
    assert body["count"] == len(body["tokens"]) and body["max_model_len"] == 256
    assert client.post("/detokenize", json={"tokens": body["tokens"]}).json() == {"prompt": TEXT}


def test_tokenize_messages_counts_what_a_chat_request_sends(client, tokenizer):
    messages = [{"role": "user", "content": TEXT}]
    with_prompt = client.post("/tokenize", json={"messages": messages}).json()
    assert with_prompt["tokens"] == list(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                                       tokenize=True, return_dict=False))
    without = client.post("/tokenize", json={"messages": messages, "add_generation_prompt": False}).json()
    assert without["count"] < with_prompt["count"]


@pytest.mark.parametrize("path, body, param", [
    ("/tokenize", {}, None),
    ("/tokenize", {"prompt": TEXT, "messages": [{"role": "user", "content": "hi"}]}, None),
    ("/tokenize", {"prompt": 5}, "prompt"),
    ("/detokenize", {"tokens": []}, "tokens"),
    ("/detokenize", {"tokens": [-1]}, "tokens.0"),
    ("/detokenize", {"tokens": [10 ** 7]}, "tokens.0"),
])
def test_bad_input_is_a_400_with_the_openai_error_body(client, path, body, param):
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"] and error["param"] == param


def test_an_unknown_model_is_a_404(client):
    response = client.post("/tokenize", json={"model": "nope", "prompt": TEXT})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_version_is_the_package_version(client):
    assert client.get("/version").json() == {"version": package_version()}
    assert package_version() != "unknown"


def test_the_document_asks_for_exactly_one_of_prompt_and_messages(client):
    schema = client.app.openapi()["components"]["schemas"]["TokenizeRequest"]
    assert schema["oneOf"] == [{"required": ["prompt"]}, {"required": ["messages"]}]
    assert client.post("/tokenize", json={"messages": []}).status_code == 400


@pytest.mark.parametrize("method, path, body", [("post", "/tokenize", {"prompt": TEXT}),
                                                ("post", "/tokenize", {"messages": [{"role": "user", "content": "hi"}]}),
                                                ("post", "/tokenize", {}), ("post", "/detokenize", {"tokens": [3, 4]}),
                                                ("get", "/version", None)])
def test_responses_match_the_document(client, method, path, body):
    response = client.request(method.upper(), path, json=body)
    assert not response_errors(client.app.openapi(), path, method, response), response.text
