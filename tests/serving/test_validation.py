"""Bad requests get a 400 (404, 413) with OpenAI's error body, never a 500 and never FastAPI's 422."""

from __future__ import annotations

import pytest

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def assert_openai_error(response, status: int, param: str | None = "__any__"):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if param != "__any__":
        assert error["param"] == param
    return error


def post_raw(client, path: str, body: str):
    return client.post(path, content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize("body", ["{bad json", '{"prompt": "x",}', "", "[1, 2", '"just a string"'])
def test_malformed_json_is_400(client, body):
    error = assert_openai_error(post_raw(client, COMPLETIONS, body), 400)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("field, value", [
    ("prompt", 5), ("prompt", None), ("prompt", {"text": "x"}), ("max_tokens", "16"), ("max_tokens", 1.5),
    ("max_tokens", True), ("temperature", "hot"), ("temperature", True), ("top_p", [0.5]), ("stream", "yes"),
    ("stop", 3), ("n", 0), ("seed", 2 ** 70), ("prompt", [-1]), ("prompt", [])])
def test_wrong_types_and_values_are_400_naming_the_field(client, field, value):
    body = {"prompt": "hello", "max_tokens": 4, field: value}
    error = assert_openai_error(client.post(COMPLETIONS, json=body), 400)
    assert error["param"] == field


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("field", ["temperature", "top_p", "presence_penalty"])
def test_nan_and_infinite_numbers_are_400(client, literal, field):
    error = assert_openai_error(post_raw(client, COMPLETIONS, f'{{"prompt": "hi", "{field}": {literal}}}'), 400)
    assert error["param"] == field


@pytest.mark.parametrize("max_tokens", [0, -5])
def test_non_positive_max_tokens_is_400(client, max_tokens):
    assert_openai_error(client.post(COMPLETIONS, json={"prompt": "hi", "max_tokens": max_tokens}), 400, "max_tokens")


def test_max_tokens_beyond_the_context_is_400(client):
    error = assert_openai_error(client.post(COMPLETIONS, json={"prompt": "hello", "max_tokens": 252}), 400, "max_tokens")
    assert "maximum context length is 256" in error["message"] and error["code"] == "context_length_exceeded"
    assert client.post(COMPLETIONS, json={"prompt": "hello", "max_tokens": 251, "temperature": 0}).status_code == 200


def test_prompt_longer_than_the_context_is_400(client):
    assert_openai_error(client.post(COMPLETIONS, json={"prompt": "a" * 300, "max_tokens": 1}), 400, "prompt")


def test_negative_temperature_is_400(client):
    assert_openai_error(client.post(COMPLETIONS, json={"prompt": "hi", "temperature": -0.1}), 400, "temperature")


@pytest.mark.parametrize("top_p", [0, -0.5, 1.0001, 2])
def test_top_p_outside_zero_one_is_400(client, top_p):
    assert_openai_error(client.post(COMPLETIONS, json={"prompt": "hi", "top_p": top_p}), 400, "top_p")


@pytest.mark.parametrize("messages", [[], None, "hi", [{"role": "user"}], [{"role": "wizard", "content": "x"}],
                                      [{"content": "x"}], [{"role": "user", "content": 5}]])
def test_bad_or_empty_messages_are_400(client, messages):
    error = assert_openai_error(client.post(CHAT, json={"messages": messages, "max_tokens": 2}), 400)
    assert error["param"] is not None and error["param"].startswith("messages")


def test_unknown_model_is_404(client):
    for path, body in [(COMPLETIONS, {"prompt": "hi"}), (CHAT, {"messages": [{"role": "user", "content": "hi"}]})]:
        error = assert_openai_error(client.post(path, json={"model": "gpt-9", **body}), 404, "model")
        assert error["code"] == "model_not_found"


def test_oversize_body_is_413_declared_or_chunked(client):
    big = b'{"prompt": "' + b"a" * (1 << 20) + b'"}'
    response = client.post(COMPLETIONS, content=big, headers={"content-type": "application/json"})
    assert_openai_error(response, 413)

    def chunks():
        for _ in range(40):
            yield b"a" * 32768

    response = client.post(COMPLETIONS, content=chunks(), headers={"content-type": "application/json"})
    assert_openai_error(response, 413)


@pytest.mark.parametrize("field, value", [("echo", True), ("logprobs", 2), ("presence_penalty", 0.5)])
def test_unsupported_features_are_refused_not_ignored(client, field, value):
    assert_openai_error(client.post(COMPLETIONS, json={"prompt": "hi", field: value}), 400, field)


def test_unknown_route_and_method_keep_the_error_shape(client):
    assert_openai_error(client.get("/v1/nothing"), 404)
    assert_openai_error(client.get(COMPLETIONS), 405)
