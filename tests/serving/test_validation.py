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
    assert error["param"].split(".")[0] == field       # 'prompt.0' for the first bad token id
    assert "more error" not in error["message"] and "function-" not in error["message"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("field", ["temperature", "top_p", "presence_penalty"])
def test_nan_and_infinite_numbers_are_400(client, literal, field):
    error = assert_openai_error(post_raw(client, COMPLETIONS, f'{{"prompt": "hi", "{field}": {literal}}}'), 400)
    assert error["param"] == field


@pytest.mark.parametrize("max_tokens", [0, -5])
def test_non_positive_max_tokens_is_400(client, max_tokens):
    assert_openai_error(client.post(COMPLETIONS, json={"prompt": "hi", "max_tokens": max_tokens}), 400, "max_tokens")


def test_max_tokens_beyond_the_context_stops_where_the_context_fills(client):
    """max_tokens is an upper bound the document allows without a maximum: the server honours it
    by generating until the context is full (finish_reason 'length'), never refuses it."""
    response = client.post(COMPLETIONS, json={"prompt": "hello", "max_tokens": 10 ** 6, "temperature": 0,
                                              "ignore_eos": True})
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["total_tokens"] == 256 and response.json()["choices"][0]["finish_reason"] == "length"


def test_a_prompt_that_fills_the_context_is_400(client):
    assert_openai_error(client.post(COMPLETIONS, json={"prompt": [5] * 256, "max_tokens": 1}), 400, "prompt")


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


@pytest.mark.parametrize("field, value", [("echo", True), ("presence_penalty", 0.5)])
def test_unsupported_features_are_refused_not_ignored(client, field, value):
    assert_openai_error(client.post(COMPLETIONS, json={"prompt": "hi", field: value}), 400, field)


def test_unknown_route_and_method_keep_the_error_shape(client):
    assert_openai_error(client.get("/v1/nothing"), 404)
    assert_openai_error(client.get(COMPLETIONS), 405)


SURROGATE = "\\ud800"       # a JSON escape Python's json decodes to a lone surrogate


@pytest.mark.parametrize("path, body, param", [
    (CHAT, f'{{"model": "{SURROGATE}", "messages": [{{"role": "user", "content": "hi"}}], "max_tokens": 4}}', "model"),
    (COMPLETIONS, f'{{"prompt": "a{SURROGATE}b", "max_tokens": 4}}', "prompt"),
    (COMPLETIONS, f'{{"prompt": ["ok", "{SURROGATE}"], "max_tokens": 4}}', "prompt.1"),
    (COMPLETIONS, f'{{"prompt": "hi", "stop": ["{SURROGATE}"], "max_tokens": 4}}', "stop.0"),
    (COMPLETIONS, f'{{"prompt": "hi", "user": "{SURROGATE}", "max_tokens": 4}}', "user"),
    (CHAT, f'{{"messages": [{{"role": "user", "content": "{SURROGATE}"}}], "max_tokens": 4}}', "messages.0.content"),
    (CHAT, f'{{"messages": [{{"role": "user", "content": [{{"type": "text", "text": "{SURROGATE}"}}]}}]}}',
     "messages.0.content.0.text")])
def test_lone_surrogates_are_a_400_naming_the_field_never_a_500(client, path, body, param):
    error = assert_openai_error(post_raw(client, path, body), 400, param)
    assert "surrogate" in error["message"] and "TextEncodeInput" not in error["message"]


def test_token_id_prompt_errors_say_what_is_expected(client):
    error = assert_openai_error(client.post(COMPLETIONS, json={"prompt": [-1], "max_tokens": 2}), 400, "prompt.0")
    assert error["message"] == "prompt.0: Input should be greater than or equal to 0"
    error = assert_openai_error(client.post(COMPLETIONS, json={"prompt": 5}), 400, "prompt")
    assert "a list of token ids" in error["message"] and "more error" not in error["message"]


def test_tokenizer_failures_do_not_echo_its_internals(client, monkeypatch):
    engine = client.app.state.serving.engine

    def refuse(prompt):
        raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")

    monkeypatch.setattr(engine, "encode_prompt", refuse)
    error = assert_openai_error(client.post(COMPLETIONS, json={"prompt": "hi"}), 400, "prompt")
    assert error["message"] == "the tokenizer could not encode this prompt"


@pytest.mark.parametrize("field, value", [("max_tokens", 4.0), ("n", 1.0), ("seed", 7.0), ("top_k", 5.0)])
def test_whole_number_floats_are_integers(client, field, value):
    body = {"prompt": "hello", "max_tokens": 4, "temperature": 0, field: value}
    response = client.post(COMPLETIONS, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] <= 4


@pytest.mark.parametrize("path, extra, param", [
    (COMPLETIONS, {"logit_bias": {"50": 100}}, "logit_bias"),
    (COMPLETIONS, {"stream_options": {"include_usage": True}}, "stream_options"),
    (COMPLETIONS, {"best_of": 3}, "best_of"),
    (COMPLETIONS, {"min_tokens": 5}, "min_tokens"),
    (COMPLETIONS, {"repetition_penalty": 1.2}, "repetition_penalty"),
    (CHAT, {"tool_choice": "auto"}, "tool_choice"),
    (CHAT, {"logit_bias": {"50": 100}}, "logit_bias"),
    (CHAT, {"top_logprobs": 0}, "top_logprobs"),
    (CHAT, {"response_format": {"type": "json_object"}}, "response_format"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"},
                         {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]}]},
     "messages.1.tool_calls"),
    (CHAT, {"messages": [{"role": "user", "content": "hi", "name": "ann"}]}, "messages.0.name"),
])
def test_unsupported_fields_are_refused_by_name(client, path, extra, param):
    base = {"prompt": "hi"} if path == COMPLETIONS else {"messages": [{"role": "user", "content": "hi"}]}
    error = assert_openai_error(client.post(path, json={**base, "max_tokens": 2, **extra}), 400, param)
    assert param.rsplit(".", 1)[-1] in error["message"]


@pytest.mark.parametrize("path, extra", [
    (COMPLETIONS, {"logit_bias": {}, "best_of": 1, "echo": False, "logprobs": None, "some_vendor_field": 3}),
    (CHAT, {"tool_choice": "none", "tools": [], "logprobs": False, "stream": True,
            "stream_options": {"include_usage": True}}),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "tool_calls": []},
                         {"role": "user", "content": "and?"}]}),
])
def test_neutral_values_of_unsupported_fields_are_accepted(client, path, extra):
    base = {"prompt": "hi"} if path == COMPLETIONS else {"messages": [{"role": "user", "content": "hi"}]}
    assert client.post(path, json={**base, "max_tokens": 2, **extra}).status_code == 200
