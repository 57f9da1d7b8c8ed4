"""Seeded sampling is reproducible: same seed, same output (alone or batched with others);
different seeds, different outputs."""

from __future__ import annotations

import pytest

from engine import SamplingParams
from tests.engine.builders import make_dummy_engine, make_prompts, run_engine, single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = make_prompts(6, seed=9)
CHAINS = [(("target",), 0), (("draft", "target"), 4), (("ngram", "target"), 3), (("ngram", "draft", "target"), 2),
          (("small", "draft", "target"), 3)]


def sampled(seed: int | None, **overrides) -> SamplingParams:
    settings = dict(max_tokens=20, temperature=1.0, top_p=0.95, ignore_eos=True, seed=seed)
    settings.update(overrides)
    return SamplingParams(**settings)


@pytest.mark.parametrize("chain,k", CHAINS, ids=[">".join(c) + f"@{k}" for c, k in CHAINS])
def test_same_seed_same_output_different_seed_different_output(chain, k, target, tokenizer, drafts):
    def run(seeds: list[int]) -> list[list[int]]:
        engine = make_dummy_engine(target, tokenizer, drafts, chain, k)
        return [o.output_token_ids for o in run_engine(engine, PROMPTS, [sampled(s) for s in seeds])]

    first = run([0, 1, 2, 3, 4, 5])
    assert run([0, 1, 2, 3, 4, 5]) == first                       # fresh engine, same seeds
    other = run([10, 11, 12, 13, 14, 15])
    assert sum(a != b for a, b in zip(first, other)) >= 5, "different seeds gave the same text"
    # a seeded row does not depend on the other rows of its batch, nor on when it joined
    engine = make_dummy_engine(target, tokenizer, drafts, chain, k)
    alone = run_engine(engine, [PROMPTS[2]], [sampled(2)])[0].output_token_ids
    assert alone == first[2]


def test_seeded_row_is_independent_of_batch_neighbours(target, tokenizer, drafts):
    engine = make_dummy_engine(target, tokenizer, drafts, ("draft", "target"), 4)
    want = run_engine(engine, [PROMPTS[0]], [sampled(42)])[0].output_token_ids
    engine.add_request(PROMPTS[1], sampled(None))                       # an unseeded neighbour
    engine.add_request(PROMPTS[3], sampled(7, max_tokens=3))            # one that leaves early
    engine.step()
    got = run_engine(engine, [PROMPTS[0]], [sampled(42)])[0].output_token_ids   # joins mid-run
    assert got == want


def test_top_k_1_sampling_equals_greedy(target, tokenizer, drafts):
    """With one candidate left, sampling has no choice: it must reproduce greedy decoding."""
    engine = make_dummy_engine(target, tokenizer, drafts, ("ngram", "draft", "target"), 3)
    greedy = run_engine(engine, PROMPTS, SamplingParams(max_tokens=20, ignore_eos=True))
    top1 = run_engine(engine, PROMPTS, [sampled(i, top_k=1) for i in range(len(PROMPTS))])
    assert [o.output_token_ids for o in top1] == [o.output_token_ids for o in greedy]
