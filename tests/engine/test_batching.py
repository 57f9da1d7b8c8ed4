"""Continuous batching: rows join and leave between steps, run different chains in one step,
are aborted or fail alone, and none of it changes what the other rows produce."""

from __future__ import annotations

import random

import pytest

from engine import Decision, FinishReason, SamplingParams
from tests.engine.builders import (assert_same_outputs, make_dummy_engine, make_prompts, plain_decode,  # noqa: F401
                                   single_thread)

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = make_prompts(12, seed=21)
PARAMS = SamplingParams(max_tokens=18)
MIXED = [Decision(("ngram", "target"), 3), Decision(("draft", "target"), 4), Decision(("target",), 0),
         Decision(("suffix", "small", "target"), 2), Decision(("small", "draft", "target"), 3)]


@pytest.fixture(scope="module")
def reference(target, tokenizer):
    return plain_decode(target, tokenizer, PROMPTS, PARAMS)


class PerRowRouter:
    """A fixed decision per request (chosen by `assign(request_id)`); records each step's mix."""

    def __init__(self, assign):
        self.assign = assign
        self.mixes: list[set[Decision]] = []

    def decide(self, engine) -> list[Decision]:
        decisions = [self.assign(r.request_id) for r in engine.scheduler.running]
        self.mixes.append(set(decisions))
        return decisions


def free_slots(engine) -> dict[str, int]:
    return {name: level.cache.num_free_slots for name, level in engine.levels.items()}


def test_rows_joining_and_leaving_match_isolated_runs(target, tokenizer, drafts, reference):
    rng = random.Random(0)
    engine = make_dummy_engine(target, tokenizer, drafts, ("draft", "target"), 3, max_batch=4)
    ids: dict[str, int] = {}
    final = {}
    pending = list(range(len(PROMPTS)))
    sizes = []
    while pending or engine.has_unfinished:
        for _ in range(rng.randint(0, 2)):           # arrivals while others run
            if pending:
                index = pending.pop(0)
                ids[engine.add_request(PROMPTS[index], PARAMS)] = index
        for output in engine.step():
            if output.finished:
                final[output.request_id] = output
        sizes.append(engine.last_step.batch_size)
        assert len(engine.scheduler.running) <= 4
    assert max(sizes) == 4 and len(set(sizes)) >= 3, "the batch never changed size"
    by_index = {index: final[request_id] for request_id, index in ids.items()}
    assert_same_outputs([by_index[i] for i in range(len(PROMPTS))], reference)


def test_rows_with_different_chains_in_one_step(target, tokenizer, drafts, reference):
    router = PerRowRouter(lambda request_id: MIXED[int(request_id.split("-")[1]) % len(MIXED)])
    engine = make_dummy_engine(target, tokenizer, drafts, router=router)
    target_batches = []
    original = engine.levels["target"].runner.forward
    engine.levels["target"].runner.forward = lambda s, t, n: target_batches.append(len(s)) or original(s, t, n)
    outputs = engine.generate(PROMPTS, PARAMS)
    assert_same_outputs(outputs, reference, "mixed chains")
    assert max(len(mix) for mix in router.mixes) == len(MIXED), "no step mixed every chain"
    assert len(target_batches) == len(router.mixes), "the target must run once per step for all rows"
    assert target_batches[0] == len(PROMPTS)


def test_abort_frees_kv_at_every_level_and_others_continue(target, tokenizer, drafts, reference):
    router = PerRowRouter(lambda request_id: Decision(("small", "draft", "target"), 3))
    engine = make_dummy_engine(target, tokenizer, drafts, router=router)
    empty = free_slots(engine)
    ids = [engine.add_request(p, PARAMS) for p in PROMPTS[:5]]
    queued = engine.add_request(PROMPTS[5], PARAMS)
    engine.step()
    engine.step()
    victim = engine.scheduler.requests[ids[2]]
    held = dict(victim.level_slots)
    assert set(held) == {"small", "draft", "target"}
    before = free_slots(engine)
    assert engine.abort(ids[2])
    after = free_slots(engine)
    assert all(after[name] == before[name] + (name in held) for name in after), (before, after)
    assert victim.finish_reason is FinishReason.ABORT and not victim.level_slots
    assert not engine.abort(ids[2]) and not engine.abort("no-such-request")
    final = {}
    while engine.has_unfinished:
        for output in engine.step():
            assert output.request_id != ids[2]
            if output.finished:
                final[output.request_id] = output
    kept = [i for i in range(6) if i != 2]
    assert_same_outputs([final[(ids + [queued])[i]] for i in kept], [reference[i] for i in kept])
    assert free_slots(engine) == {name: engine.levels[name].cache.num_slots for name in empty}


def test_abort_of_a_waiting_request_removes_it_from_the_queue(target, tokenizer, drafts, reference):
    engine = make_dummy_engine(target, tokenizer, drafts, ("ngram", "target"), 2, max_batch=1)
    first = engine.add_request(PROMPTS[0], PARAMS)
    second = engine.add_request(PROMPTS[1], PARAMS)
    engine.step()
    assert engine.abort(second)
    assert [r.request_id for r in engine.scheduler.waiting] == []
    outputs = []
    while engine.has_unfinished:
        outputs += [o for o in engine.step() if o.finished]
    assert [o.request_id for o in outputs] == [first]
    assert_same_outputs(outputs, reference[:1])


@pytest.mark.parametrize("max_batch", [1, 3])
def test_max_batch_is_respected_and_the_queue_is_fifo(max_batch, target, tokenizer, drafts, reference):
    engine = make_dummy_engine(target, tokenizer, drafts, ("suffix", "target"), 4, max_batch=max_batch)
    ids = [engine.add_request(p, PARAMS) for p in PROMPTS[:6]]
    started = []
    final = {}
    while engine.has_unfinished:
        outputs = engine.step()
        assert engine.last_step.batch_size <= max_batch and len(engine.scheduler.running) <= max_batch
        started += [i for i in engine.last_step.request_ids if i not in started]
        final.update({o.request_id: o for o in outputs if o.finished})
    assert started == ids, "requests must start in arrival order"
    assert_same_outputs([final[i] for i in ids], reference[:6])


def test_max_num_tokens_limits_admission(target, tokenizer, drafts):
    """A row needs prompt + max_tokens tokens of room; the next one waits until it fits."""
    engine = make_dummy_engine(target, tokenizer, drafts, max_model_len=64, max_num_tokens=64)
    params = SamplingParams(max_tokens=30)
    for prompt in ["abcdefghij", "klmnopqrst", "uvwxyz"]:
        engine.add_request(prompt, params)
    engine.step()
    assert engine.last_step.batch_size == 1 and len(engine.scheduler.waiting) == 2


def test_an_invalid_chain_fails_its_row_alone(target, tokenizer, drafts, reference):
    """A router decision that is invalid for one row marks that row FinishReason.ERROR with the
    reason, frees its KV at every level, and lets the other rows continue unchanged."""
    state = {"step": 0}

    def assign(request_id: str) -> Decision:
        if request_id == "bad" and state["step"] >= 3:         # valid at first, then a bad chain
            return Decision(("draft", "suffix", "target"), 2)
        return MIXED[sum(map(ord, request_id)) % len(MIXED)]

    engine = make_dummy_engine(target, tokenizer, drafts, router=PerRowRouter(assign))
    ids = [engine.add_request(p, PARAMS) for p in PROMPTS[:4]]
    engine.add_request(PROMPTS[4], PARAMS, request_id="bad")
    final = {}
    while engine.has_unfinished:
        before = free_slots(engine)
        bad = engine.scheduler.requests.get("bad")
        held = set(bad.level_slots) if bad is not None else set()
        outputs = engine.step()
        state["step"] += 1
        final.update({o.request_id: o for o in outputs if o.finished})
        if "bad" in final and held:
            assert all(free_slots(engine)[name] >= before[name] + 1 for name in held)
            held = set()
    error = final["bad"]
    assert error.finish_reason is FinishReason.ERROR
    assert "model-free drafter 'suffix' cannot verify" in error.error
    assert 0 < len(error.output_token_ids) < PARAMS.max_tokens            # it ran before its chain went bad
    assert_same_outputs([final[i] for i in ids], reference[:4])
    assert free_slots(engine) == {name: level.cache.num_slots for name, level in engine.levels.items()}
