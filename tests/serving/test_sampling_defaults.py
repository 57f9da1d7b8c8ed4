"""Sampling defaults per model: a generation_config.json or the built-in table fills the fields a
request omits, the request's own values win, and /v1/models and /ready show what is in force."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from engine import SamplingParams
from serving.app import create_app
from serving.protocol import CompletionRequest
from serving.sampling_defaults import OPENAI_DEFAULTS, SamplingDefaults, resolve_sampling_defaults

PROMPT = "the cat sat on the mat. the cat sat on the"


def test_auto_reads_the_model_directory_generation_config(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": 0.6, "top_p": 0.95, "top_k": 20,
                                                                 "do_sample": True}))
    defaults = resolve_sampling_defaults("auto", str(tmp_path), "whatever")
    assert (defaults.temperature, defaults.top_p, defaults.top_k) == (0.6, 0.95, 20)
    assert defaults.source.startswith("generation_config:")


def test_auto_uses_the_built_in_default_for_the_embedded_model_and_openai_otherwise(tmp_path):
    embedded = resolve_sampling_defaults("auto", "default", "SmolLM2-135M-Instruct")
    assert (embedded.temperature, embedded.top_p) == (0.2, 0.9)
    assert resolve_sampling_defaults("auto", str(tmp_path), "unknown-model") == OPENAI_DEFAULTS
    assert resolve_sampling_defaults("openai", "default", "SmolLM2-135M-Instruct") == OPENAI_DEFAULTS
    with pytest.raises(ValueError, match="generation_config"):
        resolve_sampling_defaults(str(tmp_path / "missing.json"), "default", "x")


def test_a_request_s_own_values_win_over_the_defaults():
    defaults = SamplingDefaults(temperature=0.2, top_p=0.9, top_k=5, source="test")
    omitted = CompletionRequest(prompt="hi").sampling_params(4, defaults=defaults)
    assert (omitted.temperature, omitted.top_p, omitted.top_k) == (0.2, 0.9, 5)
    given = CompletionRequest(prompt="hi", temperature=1.0, top_p=1.0, top_k=0).sampling_params(4, defaults=defaults)
    assert (given.temperature, given.top_p, given.top_k) == (1.0, 1.0, 0)


def test_the_server_applies_and_shows_its_defaults(make_state, make_engine):
    state = make_state()
    state.sampling_defaults = SamplingDefaults(temperature=0.0, top_p=0.9, source="test")   # greedy by default
    reference = make_engine(("target",), 0).generate([PROMPT], SamplingParams(max_tokens=12, ignore_eos=True))[0]
    with TestClient(create_app(state)) as client:
        body = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 12, "ignore_eos": True}).json()
        assert body["choices"][0]["text"] == reference.text          # no temperature sent: the default's greedy
        shown = client.get("/v1/models").json()["data"][0]["sampling_defaults"]
        assert shown == {"temperature": 0.0, "top_p": 0.9, "top_k": 0, "source": "test"}
        assert client.get("/ready").json()["sampling_defaults"] == shown
