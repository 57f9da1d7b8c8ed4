"""Rollback invariant: whatever happened to a cache, it holds what a fresh prefill would.

1. Runner level: random interleavings of extend, rollback, rows joining and leaving (slots freed
   and reused, the cache growing and shrinking) leave every slot equal to a fresh prefill of its tokens.
2. Engine level: a router that switches chain and K at random, per row and per step, with rows
   joining and being aborted; after every step each level's cache for every running request
   holds exactly a prefix of the committed tokens, and the outputs equal plain decoding.
"""

from __future__ import annotations

import random

import pytest
import torch

from engine import Decision, SamplingParams
from engine.kv_cache import KVCache
from engine.runner import ModelRunner
from tests.engine.builders import (make_dummy_engine, make_long_prompts, make_prompts, plain_decode,  # noqa: F401
                                   single_thread, with_catch_up)

pytestmark = pytest.mark.usefixtures("single_thread")

TOLERANCE = 1e-4
VOCAB = 45


class FreshPrefill:
    """Next-token logits of a token sequence from a brand-new prefill (one reused slot)."""

    def __init__(self, model):
        self.runner = ModelRunner(model, max_len=256)
        self.slot = self.runner.cache.allocate_slot()

    def next_logits(self, tokens: list[int]) -> torch.Tensor:
        self.runner.cache.rollback(self.slot, 0)
        return self.runner.forward([self.slot], [tokens], [1])[0, 0]                # [vocab]


def probe(runner: ModelRunner, slot: int, token: int) -> torch.Tensor:
    """Logits after feeding `token` on top of what the slot holds; the slot is left as it was."""
    length = runner.cache.lengths[slot]
    logits = runner.forward([slot], [[token]], [1])[0, 0]
    runner.cache.rollback(slot, length)
    return logits


@pytest.mark.parametrize("seed", [0, 1])
def test_random_extend_rollback_join_leave(seed, target):
    rng = random.Random(seed)
    runner = ModelRunner(target, max_len=96)
    runner.cache = KVCache(runner.num_layers, runner.num_kv_heads, runner.head_dim, 96,
                           initial_slots=1, initial_len=8, block_len=16)          # force growth
    fresh = FreshPrefill(target)
    held: dict[int, list[int]] = {}                                               # slot -> tokens
    counts = {"join": 0, "leave": 0, "extend": 0, "rollback": 0}
    capacities = [runner.cache.capacity]

    def check(slot: int) -> None:
        token = rng.randrange(VOCAB)
        got = probe(runner, slot, token)
        assert (got - fresh.next_logits(held[slot] + [token])).abs().max() < TOLERANCE, f"slot {slot}"
        assert runner.cache.lengths[slot] == len(held[slot])

    for _ in range(200):
        op = rng.choice(["join", "leave", "extend", "extend", "extend", "rollback"])
        if op == "join" and len(held) < 6 or not held:
            slot = runner.cache.allocate_slot()
            assert slot not in held and runner.cache.lengths[slot] == 0
            held[slot] = []
            op = "join"
        elif op == "leave":
            slot = rng.choice(sorted(held))
            runner.cache.free_slot(slot)
            del held[slot]
        elif op == "extend":
            rows = [s for s in sorted(held) if rng.random() < 0.6 and len(held[s]) < 80] or [min(held)]
            rows = [s for s in rows if len(held[s]) < 80]
            if not rows:
                continue
            rng.shuffle(rows)
            feeds = [[rng.randrange(VOCAB) for _ in range(rng.randint(1, 6))] for _ in rows]
            runner.forward(rows, feeds, [1] * len(rows))
            for slot, feed in zip(rows, feeds):
                held[slot].extend(feed)
        else:
            slot = rng.choice(sorted(held))
            keep = rng.randint(0, len(held[slot]))
            runner.cache.rollback(slot, keep)
            del held[slot][keep:]
        counts[op] += 1
        if runner.cache.capacity != capacities[-1]:
            capacities.append(runner.cache.capacity)
        if held:
            check(rng.choice(sorted(held)))
    for slot in held:
        check(slot)
    assert all(n > 10 for n in counts.values()), counts
    assert runner.cache.num_slots > 1 and max(capacities) > 8
    assert any(a > b for a, b in zip(capacities, capacities[1:])), f"never shrank: {capacities}"


def test_rollback_beyond_the_held_length_is_refused(target):
    runner = ModelRunner(target, max_len=32)
    slot = runner.cache.allocate_slot()
    runner.forward([slot], [[5, 6, 7]], [1])
    with pytest.raises(ValueError, match="cannot roll slot .* back to 4: it holds 3"):
        runner.cache.rollback(slot, 4)
    runner.cache.free_slot(slot)
    with pytest.raises(ValueError, match="already free"):
        runner.cache.free_slot(slot)


CHAINS = [("target",), ("ngram", "target"), ("suffix", "target"), ("draft", "target"), ("small", "target"),
          ("ngram", "draft", "target"), ("small", "draft", "target"), ("suffix", "small", "target")]


class RandomRouter:
    """A different chain and K for every row at every step."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.num_calls = 0

    def decide(self, view) -> list[Decision]:
        self.num_calls += 1
        return [Decision(self.rng.choice(CHAINS), self.rng.randint(0, 6)) for _ in view.rows]


def assert_caches_hold_committed_prefixes(engine, fresh: dict[str, FreshPrefill]) -> int:
    """Every level's cache of every running request: a strict prefix of the committed tokens,
    with the logits of a fresh prefill. Returns how many caches were checked."""
    num_checked = 0
    for request in engine.scheduler.running:
        committed = request.all_token_ids
        for name, slot in request.level_slots.items():
            level = engine.levels[name]
            cached = level.cached_tokens[slot]
            assert level.cache.lengths[slot] == len(cached) < len(committed), f"{name}: {request.request_id}"
            assert cached == committed[: len(cached)], f"{name} holds tokens that were not committed"
            got = probe(level.runner, slot, committed[len(cached)])
            want = fresh[name].next_logits(committed[: len(cached) + 1])
            assert (got - want).abs().max() < TOLERANCE, f"{name}: {request.request_id} at {len(cached)}"
            num_checked += 1
    return num_checked


@pytest.mark.parametrize("seed", [0, 1])
def test_random_chain_and_k_every_step_keeps_caches_exact(seed, target, tokenizer, drafts):
    rng = random.Random(100 + seed)
    prompts = make_prompts(10, seed=seed)
    greedy = SamplingParams(max_tokens=24)
    router = RandomRouter(seed)
    engine = make_dummy_engine(target, tokenizer, drafts, router=router, max_num_seqs=6)
    fresh = {name: FreshPrefill(model) for name, model in {"target": target, **drafts}.items()}
    free_before = {name: level.cache.num_free_slots for name, level in engine.levels.items()}
    ids = [engine.add_request(p, greedy) for p in prompts[:4]]
    sampled_id = engine.add_request(prompts[4], SamplingParams(max_tokens=24, temperature=1.0, seed=seed,
                                                                  ignore_eos=True))
    aborted_id = engine.add_request(prompts[5], greedy)
    pending = list(prompts[6:])
    final, num_checked, num_steps = {}, 0, 0
    while engine.has_unfinished or pending:
        if pending and rng.random() < 0.4:            # rows join while others run
            ids.append(engine.add_request(pending.pop(0), greedy))
        for output in engine.step():
            if output.finished:
                final[output.request_id] = output
        num_steps += 1
        if num_steps == 5:
            assert engine.abort(aborted_id)
        num_checked += assert_caches_hold_committed_prefixes(engine, fresh)
    want = plain_decode(target, tokenizer, prompts[:4] + prompts[6:], greedy)
    assert [final[i].output_token_ids for i in ids] == [w.output_token_ids for w in want]
    assert len(final[sampled_id].output_token_ids) == 24
    assert aborted_id not in final and not engine.scheduler.requests
    assert {name: level.cache.num_free_slots for name, level in engine.levels.items()} == {
        name: level.cache.num_slots for name, level in engine.levels.items()}
    assert all(free_before[name] <= level.cache.num_free_slots for name, level in engine.levels.items())
    assert num_steps > 15 and num_checked > 100 and router.num_calls == num_steps


def test_caught_up_and_chunked_rows_keep_every_cache_exact(target, tokenizer, drafts):
    """Long prompts join decoding rows under random chains and K while every level catches up in
    budget-sized slices: each level's cache still equals a fresh prefill of committed tokens."""
    prompts = [p for pair in zip(make_prompts(5, seed=9), make_long_prompts(5, seed=9)) for p in pair]
    greedy = SamplingParams(max_tokens=16)
    router = RandomRouter(7)
    engine = with_catch_up(make_dummy_engine(target, tokenizer, drafts, router=router, max_num_seqs=5), 4, 24)
    fresh = {name: FreshPrefill(model) for name, model in {"target": target, **drafts}.items()}
    rng = random.Random(5)
    ids, final, pending, num_checked = [], {}, list(prompts), 0
    while engine.has_unfinished or pending:
        for _ in range(rng.randint(0, 2)):
            if pending:
                ids.append(engine.add_request(pending.pop(0), greedy))
        final.update({o.request_id: o for o in engine.step() if o.finished})
        num_checked += assert_caches_hold_committed_prefixes(engine, fresh)
    want = plain_decode(target, tokenizer, prompts, greedy)
    assert [final[i].output_token_ids for i in ids] == [w.output_token_ids for w in want]
    assert num_checked > 60
