"""Per-request speculation metrics (`--per-request-spec-metrics`): off by default, a summary or the
detailed histogram in each choice, consistent with the usage counters."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app

PROMPT = "the cat sat on the mat. the cat sat on the"
REQUEST = {"prompt": PROMPT, "max_tokens": 24, "temperature": 0, "ignore_eos": True}


def completion(make_state, mode: str, **extra) -> dict:
    with TestClient(create_app(make_state(("ngram", "target"), 3, per_request_spec_metrics=mode))) as client:
        response = client.post("/v1/completions", json={**REQUEST, **extra})
        assert response.status_code == 200
        if extra.get("stream"):
            events = [json.loads(b[len("data: "):]) for b in response.text.split("\n\n") if b.startswith("data: {")]
            return events[-1]
        return response.json()


def test_off_by_default(make_state):
    assert "spec_decode" not in completion(make_state, "none")["choices"][0]


@pytest.mark.parametrize("stream", [False, True])
def test_summary_reports_acceptance_chain_and_k(make_state, stream):
    body = completion(make_state, "summary", stream=stream)
    spec = body["choices"][0]["spec_decode"]
    assert spec["chain"] == "ngram>target" and spec["k"] == 3
    assert spec["decisions"] == {"ngram>target@k3": spec["num_steps"]}
    assert spec["num_drafts"] > 0 and 0 <= spec["num_accepted_tokens"] <= spec["num_draft_tokens"]
    assert spec["mean_acceptance_length"] == pytest.approx(1 + spec["num_accepted_tokens"] / spec["num_drafts"])
    assert spec["draft_acceptance_rate"] == pytest.approx(spec["num_accepted_tokens"] / spec["num_draft_tokens"])
    assert "accepted_histogram" not in spec
    if not stream:
        assert spec["num_accepted_tokens"] == body["usage"]["num_accepted_tokens"]


def test_detailed_adds_the_histogram_and_acceptance_by_position(make_state):
    spec = completion(make_state, "detailed")["choices"][0]["spec_decode"]
    histogram, by_position = spec["accepted_histogram"], spec["acceptance_by_position"]
    assert sum(histogram) == spec["num_drafts"]
    assert sum(j * n for j, n in enumerate(histogram)) == spec["num_accepted_tokens"]
    assert 1 <= len(by_position) <= 3 and all(0 <= p <= 1 for p in by_position)
    assert by_position[0] == pytest.approx(1 - histogram[0] / spec["num_drafts"])   # every draft proposes position 0
