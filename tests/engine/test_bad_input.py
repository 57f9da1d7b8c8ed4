"""Bad input fails with a ValueError that names the problem and leaves the engine as it was."""

from __future__ import annotations

import math

import pytest

from engine import Decision, EngineConfig, FinishReason, SamplingParams
from tests.engine.builders import (assert_same_outputs, make_dummy_engine, make_prompts, plain_decode,  # noqa: F401
                                   single_thread)

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = make_prompts(4, seed=3)
PARAMS = SamplingParams(max_tokens=16)


def snapshot(engine) -> dict:
    """What a failed call must not change: queues, known requests, KV slots at every level."""
    return {
        "waiting": [r.request_id for r in engine.scheduler.waiting],
        "running": [r.request_id for r in engine.scheduler.running],
        "requests": sorted(engine.scheduler.requests),
        "outputs": {r.request_id: list(r.output_token_ids) for r in engine.scheduler.running},
        "free_slots": {name: list(level.cache.free_slots) for name, level in engine.levels.items()},
        "lengths": {name: list(level.cache.lengths) for name, level in engine.levels.items()},
    }


ENGINE_CALLS = {
    "empty text prompt": (lambda e: e.add_request("", PARAMS), "prompt is empty"),
    "empty token prompt": (lambda e: e.add_request([], PARAMS), "prompt is empty"),
    "prompt longer than the context": (lambda e: e.add_request("ab " * 100, PARAMS),
                                       r"prompt is longer than the context: 300 tokens, max_model_len is 256"),
    "prompt as long as the context": (lambda e: e.add_request(list(range(3, 40)) * 7, PARAMS),
                                      r"longer than the context: 259 tokens"),
    "token id outside the vocabulary": (lambda e: e.add_request([5, 45], PARAMS),
                                        r"token ids must be integers in \[0, 45\)"),
    "negative token id": (lambda e: e.add_request([-1], PARAMS), r"token ids must be integers"),
    "duplicate request id": (lambda e: e.add_request("hi", PARAMS, request_id="running"), "'running' is already in use"),
    "unknown drafter": (lambda e: e.validate_decision(Decision(("nope", "target"), 2)), "unknown drafter 'nope'"),
    "model-free drafter verifying": (lambda e: e.validate_decision(Decision(("draft", "ngram", "target"), 2)),
                                     "model-free drafter 'ngram' cannot verify"),
}

CONSTRUCTOR_CALLS = {
    "K < 0": (lambda: Decision(("draft", "target"), -1), "draft length K must be an integer >= 0, got -1"),
    "K not an integer": (lambda: Decision(("draft", "target"), 2.5), "K must be an integer"),
    "chain not ending at the target": (lambda: Decision(("target", "draft"), 2), "a chain must end at 'target'"),
    "level used twice": (lambda: Decision(("draft", "draft", "target"), 2), "each level once"),
    "max_tokens 0": (lambda: SamplingParams(max_tokens=0), "max_tokens must be a positive integer, got 0"),
    "max_tokens < 0": (lambda: SamplingParams(max_tokens=-3), "max_tokens must be a positive integer, got -3"),
    "temperature < 0": (lambda: SamplingParams(temperature=-0.5), "temperature must be a finite number >= 0"),
    "nan temperature": (lambda: SamplingParams(temperature=math.nan), "temperature .* got nan"),
    "inf temperature": (lambda: SamplingParams(temperature=math.inf), "temperature .* got inf"),
    "top_p 0": (lambda: SamplingParams(top_p=0.0), r"top_p must be in \(0, 1\], got 0.0"),
    "top_p > 1": (lambda: SamplingParams(top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
    "nan top_p": (lambda: SamplingParams(top_p=math.nan), r"top_p must be in \(0, 1\]"),
    "top_k < 0": (lambda: SamplingParams(top_k=-1), "top_k must be an integer >= 0"),
    "empty stop string": (lambda: SamplingParams(stop=[""]), "stop must be a list of non-empty strings"),
    "max_num_seqs 0": (lambda: EngineConfig(max_num_seqs=0), "max_num_seqs must be > 0"),
}


@pytest.fixture(scope="module")
def reference(target, tokenizer):
    return plain_decode(target, tokenizer, PROMPTS + ["hello"], PARAMS)


@pytest.fixture
def busy_engine(target, tokenizer, drafts):
    """An engine with one request halfway through and one queued, so there is state to keep."""
    engine = make_dummy_engine(target, tokenizer, drafts, ("ngram", "draft", "target"), 3, max_num_seqs=1)
    engine.add_request("hello", PARAMS, request_id="running")
    engine.add_request(PROMPTS[0], PARAMS, request_id="queued")
    engine.step()
    engine.step()
    assert [r.request_id for r in engine.scheduler.running] == ["running"]
    return engine


@pytest.mark.parametrize("case", list(ENGINE_CALLS))
def test_bad_engine_call_fails_clearly_and_changes_nothing(case, busy_engine, reference):
    call, message = ENGINE_CALLS[case]
    before = snapshot(busy_engine)
    with pytest.raises(ValueError, match=message):
        call(busy_engine)
    assert snapshot(busy_engine) == before
    final = {}
    while busy_engine.has_unfinished:
        final.update({o.request_id: o for o in busy_engine.step() if o.finished})
    assert_same_outputs([final["queued"], final["running"]], [reference[0], reference[-1]], case)
    assert_same_outputs(busy_engine.generate(PROMPTS, PARAMS), reference[:-1], case)


@pytest.mark.parametrize("case", list(CONSTRUCTOR_CALLS))
def test_bad_settings_fail_before_reaching_the_engine(case, busy_engine):
    call, message = CONSTRUCTOR_CALLS[case]
    before = snapshot(busy_engine)
    with pytest.raises(ValueError, match=message):
        call()
    assert snapshot(busy_engine) == before


def test_invalid_chain_from_the_router_fails_that_request_with_the_reason(target, tokenizer, drafts, reference):
    engine = make_dummy_engine(target, tokenizer, drafts, ("nope", "target"), 2)
    free = {name: level.cache.num_free_slots for name, level in engine.levels.items()}
    outputs = engine.generate(PROMPTS, PARAMS)
    assert all(o.finish_reason is FinishReason.ERROR and o.output_token_ids == [] for o in outputs)
    assert all("unknown drafter 'nope'" in o.error for o in outputs)
    assert not engine.has_unfinished and not engine.scheduler.requests
    assert {name: level.cache.num_free_slots for name, level in engine.levels.items()} == free
    engine.router.decision = Decision(("suffix", "target"), 3)                  # the engine still works
    assert_same_outputs(engine.generate(PROMPTS, PARAMS), reference[:-1])


def test_router_returning_the_wrong_number_of_decisions_is_refused(target, tokenizer, drafts):
    class TooFew:
        def decide(self, view):
            return [Decision()]

    engine = make_dummy_engine(target, tokenizer, drafts, router=TooFew())
    engine.add_request(PROMPTS[0], PARAMS)
    engine.add_request(PROMPTS[1], PARAMS)
    with pytest.raises(ValueError, match="router returned 1 decisions for a batch of 2"):
        engine.step()
