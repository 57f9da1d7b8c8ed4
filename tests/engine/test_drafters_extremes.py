"""The two extremes of a drafter: always right (every proposal accepted, one target forward per
K + 1 tokens) and always wrong (nothing accepted, output still identical to plain decoding)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import pytest
import torch

from engine import SamplingParams
from engine.drafters import ModelFreeDrafter
from tests.engine.builders import (assert_same_outputs, make_dummy_engine, make_prompts, plain_decode,  # noqa: F401
                                   single_thread)

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = make_prompts(8, seed=5)
MAX_TOKENS = 20


class ContrarianDrafter(ModelFreeDrafter):
    """Proposes a token the target would not pick: (its argmax + 1) mod vocab, then filler."""

    name = "contrarian"

    def __init__(self, target):
        self.target = target

    def propose(self, request_id: str, context: Sequence[int], k: int) -> list[int]:
        with torch.no_grad():
            best = int(self.target(torch.tensor([list(context)])).logits[0, -1].argmax())
        wrong = (best + 1) % self.target.config.vocab_size
        return [wrong] * k


def count_forwards(engine, level: str) -> list[int]:
    """Wrap a level so that each of its step forwards is counted (the batch size is recorded);
    the catch-up forwards of long prompts (engine/levels.py) are not step forwards."""
    model_level = engine.levels[level]
    calls: list[int] = []
    original = model_level.forward

    def counted(requests, extras, num_logits):
        calls.append(len(requests))
        return original(requests, extras, num_logits)

    model_level.forward = counted
    return calls


@pytest.fixture(scope="module")
def twins(target):
    return {"twin": copy.deepcopy(target), "twin2": copy.deepcopy(target)}


@pytest.mark.parametrize("chain,k", [(("twin", "target"), 4), (("twin", "target"), 7),
                                     (("twin2", "twin", "target"), 3)], ids=["twin@4", "twin@7", "twin2>twin@3"])
def test_always_right_drafter_accepts_everything(chain, k, target, tokenizer, twins):
    params = SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True)
    engine = make_dummy_engine(target, tokenizer, twins, chain, k)
    target_forwards = count_forwards(engine, "target")
    ids = [engine.add_request(p, params) for p in PROMPTS]
    num_steps = 0
    outputs = {}
    while engine.has_unfinished:
        outputs.update({o.request_id: o for o in engine.step()})
        num_steps += 1
    tokens_per_step = k + len(chain) - 1             # every level adds one token to K proposals
    assert num_steps == math.ceil(MAX_TOKENS / tokens_per_step)
    assert target_forwards == [len(PROMPTS)] * num_steps, "the target must run once per step for the batch"
    for request_id in ids:
        stats = outputs[request_id].stats
        assert stats.num_draft_tokens > 0 and stats.acceptance_rate == 1.0
        assert len(outputs[request_id].output_token_ids) == MAX_TOKENS
    want = plain_decode(target, tokenizer, PROMPTS, params)
    assert_same_outputs([outputs[i] for i in ids], want)


def test_always_right_drafter_under_sampling(target, tokenizer, twins):
    """p == q: rejection has probability 0 (up to fp32 rounding between the two forwards)."""
    engine = make_dummy_engine(target, tokenizer, twins, ("twin", "target"), 4)
    params = [SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, ignore_eos=True, seed=i) for i in range(8)]
    ids = [engine.add_request(p, sp) for p, sp in zip(PROMPTS, params)]
    final = {}
    while engine.has_unfinished:
        final.update({o.request_id: o for o in engine.step() if o.finished})
    accepted = sum(final[i].stats.num_accepted_tokens for i in ids)
    proposed = sum(final[i].stats.num_draft_tokens for i in ids)
    assert proposed >= 8 * 12 and accepted / proposed > 0.99


@pytest.mark.parametrize("chain", [("contrarian", "target"), ("contrarian", "draft", "target")], ids=">".join)
@pytest.mark.parametrize("k", [1, 4])
def test_always_wrong_drafter_accepts_nothing(chain, k, target, tokenizer, drafts):
    params = SamplingParams(max_tokens=MAX_TOKENS)
    engine = make_dummy_engine(target, tokenizer, drafts, chain, k)
    engine.add_drafter(ContrarianDrafter(target))
    target_forwards = count_forwards(engine, "target")
    outputs = engine.generate(PROMPTS, params)
    assert_same_outputs(outputs, plain_decode(target, tokenizer, PROMPTS, params), ">".join(chain))
    assert sum(o.stats.num_draft_tokens for o in outputs) > 0
    assert sum(o.stats.num_accepted_tokens for o in outputs) == 0, "a contrarian token was committed"
    longest = max(len(o.output_token_ids) for o in outputs)
    if len(chain) == 2:      # the target rejects every proposal: one token a step
        assert len(target_forwards) == longest
    else:                    # the middle level rejects them and adds its own token, which the target may keep
        assert len(target_forwards) < longest
