"""Logprobs of committed tokens are the target's own: a speculative chain reports, bit for bit,
what plain decoding reports for the same tokens.

Bitwise, not within a tolerance: the target's default attention is batch-invariant
(engine/attention.py) and its products are row-invariant on the pinned fp32 path, so a committed
token's logits do not depend on how many drafted tokens were verified beside it; log_softmax of
the same logits is the same float.
"""

from __future__ import annotations

import pytest
import torch

from engine import SamplingParams
from tests.engine.builders import make_dummy_engine, make_prompts, plain_decode, single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = make_prompts(8, seed=3)
GREEDY = SamplingParams(max_tokens=12, logprobs=5)


@pytest.fixture(scope="module")
def reference(target, tokenizer):
    return plain_decode(target, tokenizer, PROMPTS, GREEDY)


@pytest.mark.parametrize("chain", [("ngram", "target"), ("draft", "target"), ("small", "draft", "target")],
                         ids=">".join)
def test_speculative_logprobs_equal_plain_decoding_bitwise(chain, target, tokenizer, drafts, reference):
    outputs = make_dummy_engine(target, tokenizer, drafts, chain, 4).generate(PROMPTS, GREEDY)
    assert sum(o.stats.num_accepted_tokens for o in outputs) > 0, "the chain never committed a draft"
    for got, want in zip(outputs, reference):
        assert got.output_token_ids == want.output_token_ids
        assert got.logprobs == want.logprobs      # TokenLogprob equality: ids and floats, bitwise


def test_top_logprobs_sorted_and_greedy_token_first(reference):
    for output in reference:
        assert len(output.logprobs) == len(output.output_token_ids)
        for token, entry in zip(output.output_token_ids, output.logprobs):
            assert entry.token_id == token and entry.logprob <= 0
            values = [lp for _, lp in entry.top]
            assert len(entry.top) == 5 and values == sorted(values, reverse=True)
            assert entry.top[0] == (token, entry.logprob)      # greedy: the chosen token is the argmax


def test_sampled_logprobs_are_the_raw_distribution(target, tokenizer, drafts):
    """Under temperature the reported logprobs are the model's, not the tempered distribution's
    (as vLLM's): they match log_softmax of transformers' own logits for the sampled tokens
    (within 1e-5: a different forward path, so not bitwise)."""
    hot = SamplingParams(max_tokens=10, temperature=1.7, seed=5, logprobs=0)
    spec = make_dummy_engine(target, tokenizer, drafts, ("draft", "target"), 4).generate(PROMPTS[:3], hot)
    for prompt, output in zip(PROMPTS, spec):
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        with torch.no_grad():
            logits = target(torch.tensor([prompt_ids + output.output_token_ids])).logits[0]     # [n, vocab]
        raw = logits[len(prompt_ids) - 1: -1].float().log_softmax(dim=-1)                      # [out, vocab]
        want = raw.gather(-1, torch.tensor(output.output_token_ids)[:, None])[:, 0]
        got = torch.tensor([entry.logprob for entry in output.logprobs])
        assert all(entry.top == () for entry in output.logprobs)
        assert torch.allclose(got, want, atol=1e-5), (got, want)


def test_no_logprobs_unless_asked(target, tokenizer):
    output = plain_decode(target, tokenizer, PROMPTS[:1], SamplingParams(max_tokens=3))[0]
    assert output.logprobs is None and output.new_logprobs is None


@pytest.mark.parametrize("value", [-1, 21, True, 1.5])
def test_bad_logprobs_value_is_refused(value):
    with pytest.raises(ValueError, match="logprobs"):
        SamplingParams(logprobs=value)
