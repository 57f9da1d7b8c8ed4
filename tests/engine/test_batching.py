"""Continuous batching: rows join and leave between steps, run different chains in one step,
are aborted or fail alone, and none of it changes what the other rows produce."""

from __future__ import annotations

import random

import pytest

from engine import Decision, FinishReason, RequestOutput, SamplingParams
from engine.levels import ModelLevel
from engine.runner import ModelRunner
from engine.sequence import Request
from tests.engine.builders import (assert_same_outputs, make_dummy_engine, make_long_prompts,  # noqa: F401
                                   make_prompts, plain_decode, single_thread, with_catch_up)

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

    def decide(self, view) -> list[Decision]:
        decisions = [self.assign(row.request_id) for row in view.rows]
        self.mixes.append(set(decisions))
        return decisions


def free_slots(engine) -> dict[str, int]:
    return {name: level.cache.num_free_slots for name, level in engine.levels.items()}


def test_rows_joining_and_leaving_match_isolated_runs(target, tokenizer, drafts, reference):
    rng = random.Random(0)
    engine = make_dummy_engine(target, tokenizer, drafts, ("draft", "target"), 3, max_num_seqs=4)
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
    original = engine.levels["target"].forward       # the step's forward (catch-up forwards aside)
    engine.levels["target"].forward = lambda r, e, n: target_batches.append(len(r)) or original(r, e, n)
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
    engine = make_dummy_engine(target, tokenizer, drafts, ("ngram", "target"), 2, max_num_seqs=1)
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
    engine = make_dummy_engine(target, tokenizer, drafts, ("suffix", "target"), 4, max_num_seqs=max_batch)
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


# ---- catch-up: long pending feeds go first, in forwards of at most token_budget positions ----
BUDGET = 24
NO_CATCH_UP = {"threshold": 10**6, "budget": 10**9}       # every row padded to the longest feed


def record_forwards(engine) -> list[tuple[str, int, int]]:
    """(level, rows, longest feed) of every runner forward from now on."""
    calls = []
    for name, level in engine.levels.items():
        original = level.runner.forward

        def forward(slots, tokens, num_logits, original=original, name=name):
            calls.append((name, len(slots), max(len(t) for t in tokens)))
            return original(slots, tokens, num_logits)

        level.runner.forward = forward
    return calls


def arrive_while_decoding(engine, prompts: list[str], params: SamplingParams, seed: int) -> list[RequestOutput]:
    """Add prompts a few at a time while the others decode; the outputs in prompt order."""
    rng = random.Random(seed)
    ids, final, pending = [], {}, list(prompts)
    while pending or engine.has_unfinished:
        for _ in range(rng.randint(0, 2)):
            if pending:
                ids.append(engine.add_request(pending.pop(0), params))
        final.update({o.request_id: o for o in engine.step() if o.finished})
    return [final[i] for i in ids]


@pytest.mark.parametrize("chain, k", [(("target",), 0), (("small", "draft", "target"), 3), (("draft", "target"), 4)])
def test_long_prompts_joining_decoding_rows_give_the_same_outputs(chain, k, target, tokenizer, drafts):
    """Long prompts (and levels catching up) join short decoding rows: caught up apart and sliced
    to the budget, every forward stays within it, and the outputs equal padding every row."""
    prompts = [p for pair in zip(PROMPTS[:6], make_long_prompts(6, seed=3)) for p in pair]
    want = arrive_while_decoding(with_catch_up(make_dummy_engine(target, tokenizer, drafts, chain, k, max_num_seqs=4),
                                               **NO_CATCH_UP), prompts, PARAMS, seed=7)
    engine = with_catch_up(make_dummy_engine(target, tokenizer, drafts, chain, k, max_num_seqs=4), 4, BUDGET)
    calls = record_forwards(engine)
    got = arrive_while_decoding(engine, prompts, PARAMS, seed=7)
    assert_same_outputs(got, want, f"{chain} k={k}")
    assert all(rows * width <= BUDGET for _, rows, width in calls), max(calls, key=lambda c: c[1] * c[2])
    assert sum(1 for _, rows, width in calls if rows == 1 and width == BUDGET) >= 6, "no chunked prefill"
    assert any(rows > 1 and width > 4 and rows * width <= BUDGET for _, rows, width in calls), "no grouped catch-up"


def make_level_requests(lengths: list[int], seed: int) -> list[Request]:
    rng = random.Random(seed)
    return [Request(f"r{i}", [rng.randrange(3, 45) for _ in range(n)], SamplingParams()) for i, n in enumerate(lengths)]


def test_chunked_catch_up_gives_the_logits_and_kv_of_one_padded_forward(target):
    """Level by level: a long row among short ones, caught up in budget-sized slices and groups,
    gives the same verify logits and the same KV as feeding every row in one padded forward."""
    plain = ModelLevel("plain", ModelRunner(target, 256), catch_up_threshold=10**6, token_budget=10**9)
    chunked = ModelLevel("chunked", ModelRunner(target, 256), catch_up_threshold=4, token_budget=16)
    requests = make_level_requests([70, 3, 1, 40, 18], seed=1)
    rng = random.Random(2)
    for step in range(3):
        proposals = [[rng.randrange(3, 45) for _ in range(rng.randint(0, 3))] for _ in requests]
        logits = [level.verify_logits(requests, proposals) for level in (plain, chunked)]   # [b, m+1, V]
        for i, proposal in enumerate(proposals):
            got, want = logits[1][i, : len(proposal) + 1], logits[0][i, : len(proposal) + 1]
            assert (got - want).abs().max() < 1e-4, f"step {step} row {i}"
        for request, proposal in zip(requests, proposals):      # commit part of each proposal
            request.output_token_ids.extend(proposal[: rng.randint(0, len(proposal))] + [rng.randrange(3, 45)])
        for level in (plain, chunked):
            for request in requests:
                level.sync(request)
        for request in requests:
            slots = request.level_slots["plain"], request.level_slots["chunked"]
            length = plain.cache.lengths[slots[0]]
            assert chunked.cache.lengths[slots[1]] == length
            assert chunked.cached_tokens[slots[1]] == plain.cached_tokens[slots[0]]
            for a, b in zip(plain.cache.keys + plain.cache.values, chunked.cache.keys + chunked.cache.values):
                assert (a[slots[0], :, :length] - b[slots[1], :, :length]).abs().max() < 1e-4


def test_a_lone_long_row_is_one_forward_within_the_budget_and_sliced_beyond(target):
    within = ModelLevel("target", ModelRunner(target, 256), catch_up_threshold=4, token_budget=64)
    calls = []
    original = within.runner.forward
    within.runner.forward = lambda s, t, n: calls.append([len(x) for x in t]) or original(s, t, n)
    within.forward(make_level_requests([60], seed=3), [[]], [1])
    beyond = make_level_requests([150], seed=4)
    within.forward(beyond, [[7, 8]], [3])
    assert calls == [[60], [64], [64], [21], [3]]     # 149 pending -> 64 + 64 + 21, then last + extras
    with pytest.raises(ValueError, match="catch_up_threshold and token_budget must be >= 1"):
        ModelLevel("target", within.runner, token_budget=0)
