"""Greedy speculative decoding is token-identical to plain greedy decoding, whatever the chain.

The reference is the engine's plain decoding (chain ("target",), K = 0), itself checked against
transformers' `generate`. Stop conditions (EOS, stop strings, max_tokens) that fall inside a
verified draft must cut the output exactly where plain decoding stops.
"""

from __future__ import annotations

import pytest
import torch

from engine import FinishReason, SamplingParams
from tests.engine.builders import (assert_same_outputs, make_dummy_engine, make_prompts, plain_decode,
                                   run_engine, single_thread, truncated_in_draft, with_eos)  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = make_prompts(30, seed=0)
PARAMS = SamplingParams(max_tokens=20)
CHAINS = [
    ("ngram", "target"), ("suffix", "target"), ("draft", "target"), ("small", "target"),
    ("ngram", "draft", "target"), ("suffix", "small", "target"), ("small", "draft", "target"),
    ("int4", "target"), ("ngram", "small", "draft", "target"), ("suffix", "draft", "int4", "target"),
]
KS = [1, 2, 4, 8]
EOS_CHAR = "o"                  # a character the tiny target emits often
STOP = ["j\n", "2o", "jjj"]            # substrings of many of its greedy outputs


def ladder(chain) -> dict:
    """Engine settings a chain needs: the target's int4 copy as a level where the chain has one."""
    return dict(quantized_levels="int4") if "int4" in chain else {}


def stop_params() -> list[SamplingParams]:
    """Per-row params: stop strings and a spread of max_tokens (3..11)."""
    return [SamplingParams(max_tokens=3 + i % 9 if i % 2 else 20, stop=STOP) for i in range(len(PROMPTS))]


@pytest.fixture(scope="module")
def reference(target, tokenizer):
    return plain_decode(target, tokenizer, PROMPTS, PARAMS)


@pytest.fixture(scope="module")
def eos_target(target, tokenizer):
    return with_eos(target, tokenizer.convert_tokens_to_ids(EOS_CHAR))


@pytest.fixture(scope="module")
def stop_reference(eos_target, tokenizer):
    engine = make_dummy_engine(eos_target, tokenizer)
    return run_engine(engine, PROMPTS, stop_params())


def test_plain_decoding_equals_transformers_generate(target, tokenizer, reference):
    for prompt, output in list(zip(PROMPTS, reference))[:10]:
        ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)])
        with torch.no_grad():
            generated = target.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=PARAMS.max_tokens,
                                        do_sample=False, pad_token_id=0)
        assert generated[0, ids.shape[1]:].tolist() == output.output_token_ids, prompt


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("chain", CHAINS, ids=">".join)
def test_speculative_greedy_equals_plain(chain, k, target, tokenizer, drafts, reference):
    engine = make_dummy_engine(target, tokenizer, drafts, chain, k, **ladder(chain))
    outputs = engine.generate(PROMPTS, PARAMS)
    assert_same_outputs(outputs, reference, f"{'>'.join(chain)}@k{k}")
    assert sum(o.stats.num_draft_tokens for o in outputs) > 0, "the chain never drafted"


@pytest.mark.parametrize("chain", CHAINS, ids=">".join)
def test_eos_stop_strings_and_max_tokens_inside_drafts(chain, eos_target, tokenizer, drafts, stop_reference):
    engine = make_dummy_engine(eos_target, tokenizer, drafts, chain, 8, **ladder(chain))
    counter: dict = {}
    outputs = run_engine(engine, PROMPTS, stop_params(), on_step=truncated_in_draft(counter))
    assert_same_outputs(outputs, stop_reference, ">".join(chain))
    assert counter.get("n", 0) > 0, "no stop condition fell inside a draft: the test would prove nothing"


def test_stop_reference_exercises_every_stop_condition(stop_reference, tokenizer):
    eos_ids = {tokenizer.convert_tokens_to_ids(EOS_CHAR), tokenizer.eos_token_id}
    by_eos = [o for o in stop_reference if o.output_token_ids[-1] in eos_ids]
    by_string = [o for o in stop_reference if o.finish_reason is FinishReason.STOP and o not in by_eos]
    by_length = [o for o in stop_reference if o.finish_reason is FinishReason.LENGTH]
    assert len(by_eos) >= 3 and len(by_string) >= 3 and len(by_length) >= 3
    assert all(o.finish_reason is FinishReason.STOP for o in by_eos)
    for output in by_string:      # the text stops right before the stop string
        full = tokenizer.decode(output.output_token_ids, skip_special_tokens=True)
        assert any(full[len(output.text):].startswith(s) for s in STOP)


@pytest.mark.parametrize("chain,k", [(("target",), 0), (("suffix", "target"), 4), (("ngram", "draft", "target"), 2),
                                     (("draft", "target"), 8)], ids=["plain", "suffix@4", "ngram>draft@2", "draft@8"])
def test_batch_equals_one_at_a_time(chain, k, target, tokenizer, drafts, reference):
    engine = make_dummy_engine(target, tokenizer, drafts, chain, k)
    alone = [engine.generate([prompt], PARAMS)[0] for prompt in PROMPTS[:15]]
    assert_same_outputs(alone, reference[:15], "one at a time")


@pytest.mark.parametrize("chain", CHAINS, ids=">".join)
def test_context_end_inside_a_draft(chain, target, tokenizer, drafts):
    """Rows that reach max_model_len mid-draft stop exactly where plain decoding stops, and
    no level is asked to run past the context (a 3-level chain outputs up to K + 2 tokens)."""
    params = SamplingParams(max_tokens=100, ignore_eos=True)
    prompts = [p for p in PROMPTS if len(p) < 24]
    want = plain_decode(target, tokenizer, prompts, params, max_model_len=26)
    got = make_dummy_engine(target, tokenizer, drafts, chain, 8, max_model_len=26, **ladder(chain)).generate(prompts, params)
    assert_same_outputs(got, want, ">".join(chain))
    assert all(len(p) + len(o.output_token_ids) == 26 for p, o in zip(prompts, got))
