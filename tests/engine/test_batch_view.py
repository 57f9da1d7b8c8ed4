"""The router protocol: routers see a read-only BatchView; callers may pass the step's decisions."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engine import Decision, SamplingParams
from engine.batch_view import BatchView, Router
from tests.engine.builders import make_dummy_engine

PARAMS = SamplingParams(max_tokens=12)
NGRAM = Decision(("ngram", "target"), 3)


class RecordingRouter:
    """Plain decoding for every row; keeps every view it was shown."""

    def __init__(self):
        self.views: list[BatchView] = []

    def decide(self, view: BatchView) -> list[Decision]:
        self.views.append(view)
        return [Decision()] * len(view.rows)


def test_the_router_sees_the_admitted_rows_the_queue_and_the_trackers(target, tokenizer, drafts):
    router = RecordingRouter()
    engine = make_dummy_engine(target, tokenizer, drafts, router=router, max_num_seqs=2)
    ids = [engine.add_request(p, PARAMS) for p in ("hello world", "abc abc abc", "the cat sat")]
    engine.step()
    view = router.views[0]
    assert isinstance(router, Router)
    assert view.request_ids == ids[:2] and [row.request_id for row in view.waiting] == ids[2:]
    assert view.rows[0].num_tokens == len(engine.encode_prompt("hello world")) and view.rows[0].max_tokens == 12
    assert view.pair_acceptance("ngram>target") == engine.trackers.prior            # before any step ran
    assert engine.trackers.acceptance("ngram>target") != engine.trackers.prior     # shadow drafts since
    assert view.max_model_len == engine.config.max_model_len
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.rows = ()
    engine.step()
    assert router.views[0].rows[0].num_output_tokens == 0         # a kept view does not move with the engine
    assert router.views[1].rows[0].num_output_tokens == 1


def test_each_row_shows_what_every_model_level_s_cache_holds(target, tokenizer, drafts):
    """What the cost model charges a level's catch-up from: before the prompt's prefill nothing,
    after plain steps the target alone, after a draft step the draft too."""
    router = RecordingRouter()
    engine = make_dummy_engine(target, tokenizer, drafts, router=router)
    request_id = engine.add_request("the cat sat on the mat", PARAMS)
    engine.step()
    engine.step()
    request = engine.scheduler.requests[request_id]
    first, second = (dict(view.rows[0].cached) for view in router.views)
    assert set(first) == set(engine.levels) and not any(first.values())
    assert second["target"] == request.num_tokens - 2 and second["draft"] == 0
    engine.step(Decision(("draft", "target"), 2))
    assert dict(engine.view().rows[0].cached) == {name: level.committed_length(request)
                                                  for name, level in engine.levels.items()}
    assert dict(engine.view().rows[0].cached)["draft"] > 0


def test_decisions_from_the_caller_replace_the_router_and_match_it(target, tokenizer, drafts):
    prompts = ["hello world hello world", "abc abc abc abc"]
    routed = make_dummy_engine(target, tokenizer, drafts, ("ngram", "target"), 3)
    driven = make_dummy_engine(target, tokenizer, drafts, router=RecordingRouter())
    for engine in (routed, driven):
        for prompt in prompts:
            engine.add_request(prompt, PARAMS)
    outputs = {"routed": [], "driven": []}
    while routed.has_unfinished:
        outputs["routed"] += routed.step()
        view = driven.admit()
        outputs["driven"] += driven.step([NGRAM] * len(view.rows))
    assert driven.router.views == []                              # never asked
    assert [o.output_token_ids for o in outputs["driven"]] == [o.output_token_ids for o in outputs["routed"]]
    assert routed.last_step.decisions == driven.last_step.decisions


def test_one_decision_applies_to_every_row_and_a_wrong_count_is_refused(target, tokenizer, drafts):
    engine = make_dummy_engine(target, tokenizer, drafts)
    engine.add_request("hello world", PARAMS)
    engine.add_request("abc abc", PARAMS)
    engine.step(NGRAM)
    assert engine.last_step.decisions == [NGRAM, NGRAM]
    with pytest.raises(ValueError, match="1 decisions for a batch of 2"):
        engine.step([NGRAM])


def test_building_an_engine_leaves_the_thread_setting_alone(target, tokenizer, drafts):
    threads = torch.get_num_threads()
    make_dummy_engine(target, tokenizer, drafts)
    assert torch.get_num_threads() == threads


def test_after_a_failed_step_only_the_row_that_fails_alone_is_named(target, tokenizer, drafts):
    engine = make_dummy_engine(target, tokenizer, drafts, ("ngram", "target"), 3)
    ngram = engine.drafters["ngram"]
    propose = ngram.propose

    def poisoned(request_id, token_ids, k):
        if request_id == "bad":
            raise RuntimeError("poisoned")
        return propose(request_id, token_ids, k)

    ngram.propose = poisoned
    for request_id in ("good", "bad"):
        engine.add_request("hello world hello", PARAMS, request_id=request_id)
    with pytest.raises(RuntimeError, match="poisoned"):
        engine.step()
    failures = engine.isolate_failures()
    assert [(r.request_id, message) for r, message in failures] == [("bad", "RuntimeError: poisoned")]
    assert all(not r.level_slots for r in engine.scheduler.running)       # KV dropped, nothing committed
    engine.abort("bad", error="poisoned")
    ngram.propose = propose
    plain = make_dummy_engine(target, tokenizer, drafts).generate(["hello world hello"], PARAMS)[0]
    while engine.has_unfinished:
        outputs = engine.step()
    assert outputs[0].request_id == "good" and outputs[0].output_token_ids == plain.output_token_ids

    class Broken:
        def decide(self, view):
            raise RuntimeError("no")

    engine.add_request("abc", PARAMS, request_id="next")
    engine.admit()
    engine.set_router(Broken())
    assert [(r.request_id, m) for r, m in engine.isolate_failures()] == [("next", "routing failed: RuntimeError('no')")]
