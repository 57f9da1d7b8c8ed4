"""Shadow drafting: model-free acceptance learned per request while the router runs other chains."""

from __future__ import annotations

import pytest

from engine import SamplingParams
from engine.drafters.base import ModelFreeDrafter
from engine.sequence import FinishReason, Request, RequestStatus
from engine.shadow_drafts import PendingProposal, ShadowDrafts, score_proposal

REPETITIVE = "abc abc abc abc abc abc abc abc abc abc"


class FixedDrafter(ModelFreeDrafter):
    """Always proposes the same tokens, so the expected scores are known."""

    name = "fixed"

    def __init__(self, tokens):
        self.tokens = list(tokens)
        self.calls = 0

    def propose(self, request_id, context, k):
        self.calls += 1
        return self.tokens[:k]


@pytest.mark.parametrize("committed, is_final, expected", [
    ([7, 8], False, None),          # matches so far, not covered yet: wait
    ([7, 9], False, 1),             # contradicted at the second token
    ([7, 8, 9], False, 3),          # covered, all accepted
    ([5], False, 0),                # the first token already differs
    ([7], True, 1),                 # the request ended: score what it saw
])
def test_a_proposal_is_scored_as_greedy_verification_would(committed, is_final, expected):
    assert score_proposal(PendingProposal(2, [7, 8, 9]), [1, 2, *committed], is_final) == expected


def _request(tokens):
    request = Request("r", [1, 2], SamplingParams(max_tokens=10))
    request.status = RequestStatus.RUNNING
    request.output_token_ids.extend(tokens)
    return request


def test_outcomes_count_proposed_and_accepted_and_skip_the_drafter_the_row_ran():
    drafter = FixedDrafter([7, 8, 9, 10])
    shadow = ShadowDrafts(length=4)
    drafters = {"fixed": drafter}
    request = _request([3])
    assert shadow.observe(request, (), drafters) == []                   # proposal starts after position 3
    request.output_token_ids.extend([7, 8])
    assert shadow.observe(request, (), drafters) == []                   # 2 of 4 seen, all matching
    request.output_token_ids.extend([5])
    (outcome,) = shadow.observe(request, (), drafters)
    assert (outcome.drafter, outcome.verifier, outcome.num_proposed, outcome.num_accepted) == ("fixed", "target", 4, 2)
    calls = drafter.calls
    assert shadow.observe(request, ("fixed", "target"), drafters) == []   # the real step measures it
    assert drafter.calls == calls and not shadow.pending
    request.status, request.finish_reason = RequestStatus.FINISHED, FinishReason.LENGTH
    assert shadow.observe(request, (), drafters) == [] and not shadow.pending


def test_a_drafter_with_nothing_to_propose_is_scored_at_once_as_an_empty_proposal():
    shadow = ShadowDrafts(length=4)
    (outcome,) = shadow.observe(_request([3]), (), {"fixed": FixedDrafter([])})
    assert (outcome.drafter, outcome.num_proposed, outcome.num_accepted) == ("fixed", 0, 0)
    assert not shadow.pending


def test_length_zero_turns_it_off_and_negative_is_refused():
    drafter = FixedDrafter([1])
    assert ShadowDrafts(length=0).observe(_request([3]), (), {"fixed": drafter}) == [] and drafter.calls == 0
    with pytest.raises(ValueError, match="shadow draft length"):
        ShadowDrafts(length=-1)


def test_plain_decoding_learns_each_request_s_model_free_acceptance_and_outputs_do_not_change(make_engine):
    outputs = {}
    for length in (0, 8):
        engine = make_engine(("target",), 0, shadow_draft_length=length)
        engine.add_request(REPETITIVE, SamplingParams(max_tokens=24), request_id="r")
        seen = {}
        while engine.has_unfinished:
            (output,) = engine.step()
            seen = engine.trackers.snapshot()["requests"].get("r", seen)
        outputs[length] = output.output_token_ids
        if length:
            assert {"ngram>target", "suffix>target"} <= set(seen)
            assert all(0 < pair["num_proposed_tokens"] for pair in seen.values())
            assert engine.shadow.pending == {}                  # forgotten with the request
        else:
            assert seen == {}
    assert outputs[0] == outputs[8]


def test_shadow_acceptance_on_plain_matches_what_running_the_chain_measures(make_engine):
    """Greedy: a shadow proposal is scored exactly as verification would have scored it."""
    measured = {}
    for chain, k in ((("target",), 0), (("ngram", "target"), 8)):
        engine = make_engine(chain, k, shadow_draft_length=8)
        engine.add_request(REPETITIVE, SamplingParams(max_tokens=40), request_id="r")
        while engine.has_unfinished:
            engine.step()
        pair = engine.trackers.snapshot()["pairs"]["ngram>target"]
        measured[chain] = pair["num_accepted_tokens"] / pair["num_proposed_tokens"]
    assert measured[("target",)] == pytest.approx(measured[("ngram", "target")], abs=0.1)
