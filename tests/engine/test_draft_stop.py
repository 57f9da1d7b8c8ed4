"""A draft that stops inside the step (Decision.p_min): lossless, shorter, and predicted right.

Greedy output with a threshold equals plain decoding token for token; a threshold no token
reaches makes the level propose fewer than K tokens (and records why); the cost model's
formulas (engine/draft_stop.py, engine/expectation.py) match a Monte Carlo of the process they
describe. Sampling stays distributed as the target: tests/engine/test_sampling_lossless.py.
"""

from __future__ import annotations

import random

import pytest

from engine import SamplingParams
from engine.draft_stop import ConfidenceHistogram, draft_forward_odds, initial_lengths, stop_rates
from engine.expectation import chain_expected_tokens
from tests.engine.builders import assert_same_outputs, make_dummy_engine, make_prompts, plain_decode, run_engine
from tests.engine.builders import single_thread  # noqa: F401
from tests.tiny_models import noisy_copy

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = make_prompts(12, seed=3)
PARAMS = SamplingParams(max_tokens=16)


@pytest.fixture(scope="module")
def reference(target, tokenizer):
    return plain_decode(target, tokenizer, PROMPTS, PARAMS)


@pytest.mark.parametrize("p_min", [0.3, 0.9])
@pytest.mark.parametrize("chain", [("draft", "target"), ("int4", "target"), ("small", "int4", "target")], ids=">".join)
def test_greedy_output_with_a_threshold_equals_plain_decoding(target, tokenizer, drafts, reference, chain, p_min):
    engine = make_dummy_engine(target, tokenizer, drafts, chain, 4, p_min=p_min,
                               quantized_levels="int4" if "int4" in chain else "")
    assert_same_outputs(engine.generate(PROMPTS, PARAMS), reference, f"{'>'.join(chain)} p_min {p_min}")


def test_a_threshold_no_token_reaches_proposes_fewer_than_k(target, tokenizer):
    """A random draft is rarely 99.9% sure: rows stop early, the stopping token is dropped, and
    each step records the confidences it stopped on; output stays plain decoding's."""
    random_draft = {"draft": noisy_copy(target, 3.0, seed=7)}
    engine = make_dummy_engine(target, tokenizer, random_draft, ("draft", "target"), 4, p_min=0.999)
    proposed, stopped = [], 0

    def observe(engine, outputs):
        nonlocal stopped
        for result in engine.last_step.results:
            if not result.pairs:          # K capped to 0 at the end of a request: plain decoding
                continue
            pair = result.pairs[0]
            proposed.append(pair.num_proposed)
            assert len(pair.confidences) in (pair.num_proposed, pair.num_proposed + 1)
            assert all(c >= 0.999 for c in pair.confidences[:pair.num_proposed])
            if len(pair.confidences) > pair.num_proposed:
                stopped += 1
                assert pair.confidences[-1] < 0.999
    outputs = run_engine(engine, PROMPTS, PARAMS, observe)
    assert_same_outputs(outputs, plain_decode(target, tokenizer, PROMPTS, PARAMS))
    assert proposed and max(proposed) <= 4 and sum(proposed) < 4 * len(proposed) and stopped > 0
    histogram = engine.trackers.snapshot()["pairs"]["draft>target"]["confidence"]
    assert sum(histogram["drafted"]) == sum(proposed) + stopped


def test_sampled_rows_stop_too_and_keep_a_distribution_per_proposed_token(target, tokenizer):
    random_draft = {"draft": noisy_copy(target, 3.0, seed=7)}
    engine = make_dummy_engine(target, tokenizer, random_draft, ("draft", "target"), 4, p_min=0.5)
    level = engine.levels["draft"]
    for i, prompt in enumerate(PROMPTS[:6]):
        engine.add_request(prompt, SamplingParams(max_tokens=8, temperature=1.0, seed=i))
    engine.admit()
    requests = list(engine.scheduler.running)
    drafted = level.draft(requests, [4] * len(requests), [0.5] * len(requests))
    for tokens, q, confidences in zip(*drafted):
        assert (q is None) == (not tokens) and (q is None or q.shape[0] == len(tokens))
        assert len(confidences) == len(tokens) + (len(tokens) < 4)


def simulate(k: int, c: float, rates: list[float], rng: random.Random) -> tuple[int, int]:
    """One row: (committed tokens, draft forwards) of a chain whose first level goes on with
    probability c per token and whose pair i accepts each token with probability rates[i]."""
    length = 0
    while length < k and rng.random() < c:
        length += 1
    forwards = min(k, length + 1)
    for a in rates:                    # each verifier keeps a prefix and adds one token
        accepted = 0
        while accepted < length and rng.random() < a:
            accepted += 1
        length = accepted + 1
    return length, forwards


@pytest.mark.parametrize("k, c, rates", [(8, 0.7, [0.8]), (4, 0.5, [0.9]), (6, 0.8, [0.7, 0.9]), (5, 1.0, [0.6])])
def test_expected_tokens_match_a_monte_carlo(k, c, rates):
    rng = random.Random(0)
    runs = [simulate(k, c, rates, rng)[0] for _ in range(40_000)]
    pairs = tuple(f"l{i}>l{i + 1}" for i in range(len(rates)))
    predicted = chain_expected_tokens(pairs, k, dict(zip(pairs, rates)), 0.5, (c, 1.0))
    assert predicted == pytest.approx(sum(runs) / len(runs), rel=0.02)
    if len(rates) == 1:                # the closed form: 1 + sum_j (c a)^j
        assert predicted == pytest.approx(1 + sum((c * rates[0]) ** j for j in range(1, k + 1)))


@pytest.mark.parametrize("ks, cs", [([8] * 4, [0.6] * 4), ([8, 4, 2], [0.9, 0.5, 1.0]), ([3], [0.3])])
def test_draft_forward_odds_match_a_monte_carlo(ks, cs):
    """The expected number of draft forwards of a batch is the sum of each forward's odds."""
    rng = random.Random(1)
    runs = [max(simulate(k, c, [], rng)[1] for k, c in zip(ks, cs)) for _ in range(40_000)]
    assert sum(draft_forward_odds(ks, cs)) == pytest.approx(sum(runs) / len(runs), rel=0.02)
    assert draft_forward_odds(ks, [1.0] * len(ks)) == [1.0] * max(ks)     # no threshold: every forward


def test_stop_rates_read_the_histogram_and_are_neutral_without_one():
    histogram = ConfidenceHistogram()
    rng = random.Random(2)
    for _ in range(5000):        # confidence uniform; a confident token is accepted more often
        confidences = [rng.random() for _ in range(4)]
        accepted = 0
        while accepted < 4 and rng.random() < 0.3 + 0.6 * confidences[accepted]:
            accepted += 1
        histogram.observe(confidences, 4, accepted)
    c, lift = stop_rates(histogram, 0.5)
    assert c == pytest.approx(0.5, abs=0.02) and lift > 1.1
    assert stop_rates(histogram, 0.0) == (1.0, 1.0) and stop_rates(None, 0.8) == (1.0, 1.0)
    assert stop_rates(ConfidenceHistogram.from_dict(histogram.to_dict()), 0.5) == (c, lift)
    assert sum(initial_lengths(5, 0.7)) == pytest.approx(1.0) and initial_lengths(3, 1.0) == [0, 0, 0, 1]


def test_model_free_drafters_propose_only_as_far_as_their_match_goes():
    from engine.drafters import NgramDrafter, SuffixDrafter
    context = [5, 6, 7, 8, 9, 5, 6]              # "5 6" matched; what followed it: 7 8 9 5 6
    assert NgramDrafter().propose("r", context, 3) == [7, 8, 9]
    assert NgramDrafter().propose("r", context, 8) == [7, 8, 9, 5, 6]          # the copy runs out
    assert NgramDrafter().propose("r", [1, 2, 3, 4], 8) == []                  # no match, no draft
    # after 7 always 1; after "7 1" four continuations, none with min_share (0.3): the draft stops
    assert SuffixDrafter().propose("s", [7, 1, 2, 7, 1, 3, 7, 1, 4, 7, 1, 5, 8, 7], 8) == [1]
    assert SuffixDrafter().propose("s", [1, 2, 1, 3, 1, 4, 1, 5, 1], 8) == []
