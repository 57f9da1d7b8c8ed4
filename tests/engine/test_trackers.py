"""Acceptance trackers: the EMA arithmetic, priors, per-request state and the engine hook."""

from __future__ import annotations

import pytest

from engine import SamplingParams, StepRecord
from engine.spec_step import PairOutcome, RowResult
from engine.trackers import AcceptanceTrackers
from tests.engine.builders import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")


def make_record(rows: dict[str, list[tuple[str, str, int, int, float | None]]]) -> StepRecord:
    """A StepRecord with one row per request id: (drafter, verifier, proposed, accepted, similarity)."""
    results = [RowResult(tokens=[0], pairs=[PairOutcome(*pair) for pair in pairs]) for pairs in rows.values()]
    return StepRecord(results=results, request_ids=list(rows), batch_size=len(rows))


def test_acceptance_pools_with_the_prior_then_becomes_an_ema():
    trackers = AcceptanceTrackers(alpha=0.25, prior=0.5, prior_weight=1.0)
    # step 1: 4 proposed, 2 accepted -> 2 successes in 3 trials; step 2: 4 of 4 -> 4 in 4
    trackers.observe_step(make_record({"r": [("ngram", "target", 4, 2, None)]}))
    assert trackers.acceptance("ngram>target") == pytest.approx((0.5 + 2) / (1 + 3))
    trackers.observe_step(make_record({"r": [("ngram", "target", 4, 4, None)]}))
    assert trackers.acceptance("ngram>target") == pytest.approx((0.5 + 2 + 4) / (1 + 3 + 4))
    # step 3 (weight 1/4 = alpha) and step 4 (weight alpha = 0.25, the floor)
    s, t = (0.5 + 2 + 4) / 3, (1 + 3 + 4) / 3
    for accepted, proposed in ((0, 2), (1, 1)):
        trackers.observe_step(make_record({"r": [("ngram", "target", proposed, accepted, None)]}))
        trials = accepted + (accepted < proposed)
        s, t = s + 0.25 * (accepted - s), t + 0.25 * (trials - t)
    assert trackers.acceptance("ngram>target") == pytest.approx(s / t)
    pair = trackers.snapshot()["pairs"]["ngram>target"]
    fractions = [0.5, 1.0, 0.0, 1.0]
    expected = (0.5 + 1.0) / 2
    expected += max(0.25, 1 / 3) * (0.0 - expected)
    expected += 0.25 * (1.0 - expected)
    assert pair["accepted_fraction"] == pytest.approx(expected) and len(fractions) == pair["num_observed"]
    assert (pair["num_proposed_tokens"], pair["num_accepted_tokens"]) == (11, 7)


def test_per_token_acceptance_does_not_depend_on_k():
    """Geometric acceptance at a = 0.8 seen through K = 2 and K = 8 gives the same estimate."""
    def expected_counts(k):            # P(accepted = j) = a^j (1 - a), j < k; a^k for j = k
        return [(j, 0.8 ** j * (0.2 if j < k else 1.0)) for j in range(k + 1)]

    estimates = []
    for k in (2, 8):
        trackers = AcceptanceTrackers(alpha=1e-4, prior_weight=1e-6)
        for j, p in expected_counts(k):
            for _ in range(round(p * 10000)):
                trackers.observe_step(make_record({"r": [("draft", "target", k, j, None)]}))
        estimates.append(trackers.acceptance("draft>target"))
    assert estimates == pytest.approx([0.8, 0.8], abs=5e-3)


def test_an_empty_proposal_counts_as_a_rejected_token_but_not_in_the_accepted_fraction():
    """No n-gram match commits one token, as a first-token rejection does: the cost model must
    not see n-gram at its acceptance over the steps that had a proposal."""
    trackers = AcceptanceTrackers(alpha=1e-4, prior=0.5, prior_weight=1.0)
    trackers.observe_step(make_record({"r": [("ngram", "target", 2, 2, None)]}))      # 2 in 2 trials
    trackers.observe_step(make_record({"r": [("ngram", "target", 0, 0, None)]}))      # 0 in 1 trial
    assert trackers.acceptance("ngram>target") == pytest.approx((0.5 + 2) / (1 + 2 + 1))
    pair = trackers.snapshot()["pairs"]["ngram>target"]
    assert (pair["num_observed"], pair["num_empty"], pair["accepted_fraction"]) == (2, 1, 1.0)
    assert trackers.snapshot()["requests"]["r"]["ngram>target"]["num_empty"] == 1


def test_similarity_ema_skips_rows_without_it_and_priors_cover_untried_pairs():
    trackers = AcceptanceTrackers(alpha=0.5, prior=0.3, priors={"draft>target": 0.9})
    trackers.observe_step(make_record({"a": [("draft", "target", 2, 1, 0.8)], "b": [("draft", "target", 2, 2, None)]}))
    trackers.observe_step(make_record({"a": [("draft", "target", 2, 1, 0.6)]}))
    snapshot = trackers.snapshot()
    assert snapshot["pairs"]["draft>target"]["similarity"] == pytest.approx(0.8 + 0.5 * (0.6 - 0.8))
    assert snapshot["requests"]["b"]["draft>target"]["similarity"] is None
    assert trackers.acceptance("ngram>target") == 0.3
    fresh = AcceptanceTrackers(priors={"draft>target": 0.9}).snapshot()["pairs"]
    assert fresh == {"draft>target": {"acceptance": 0.9, "accepted_fraction": None, "similarity": None,
                                      "num_observed": 0, "num_empty": 0, "num_proposed_tokens": 0,
                                      "num_accepted_tokens": 0}}


def test_requests_start_from_the_global_estimate_and_are_forgotten():
    trackers = AcceptanceTrackers(alpha=1.0, request_alpha=1.0, prior_weight=1.0)
    trackers.observe_step(make_record({"a": [("ngram", "target", 3, 3, None)]}))     # global -> 1.0
    trackers.observe_step(make_record({"b": [("ngram", "target", 3, 0, None)]}))
    assert trackers.acceptance("ngram>target", "a") == 1.0
    assert trackers.acceptance("ngram>target", "b") == 0.0
    assert trackers.acceptance("ngram>target") == 0.0
    # an empty proposal is a rejection of the first token (request_alpha 1: the last one counts)
    trackers.observe_step(make_record({"a": [("ngram", "target", 0, 0, None)]}))
    assert trackers.acceptance("ngram>target", "a") == 0.0
    assert trackers.snapshot()["pairs"]["ngram>target"]["num_empty"] == 1
    trackers.forget_request("a")
    assert set(trackers.snapshot()["requests"]) == {"b"}
    trackers.reset()
    assert trackers.snapshot() == {"pairs": {}, "requests": {}, "prior": 0.5, "num_steps": 0}


@pytest.mark.parametrize("kwargs, message", [({"alpha": 0}, "alpha"), ({"prior": 1.5}, "prior"),
                                             ({"priors": {"draft": 0.5}}, "drafter>verifier"),
                                             ({"prior_weight": 0}, "prior_weight")])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AcceptanceTrackers(**kwargs)


def test_engine_snapshot_has_the_pairs_that_ran(make_engine):
    engine = make_engine(("ngram", "draft", "target"), 3, shadow_draft_length=0)
    engine.add_request("hello world hello world", SamplingParams(max_tokens=12), request_id="greedy")
    engine.add_request("abc abc abc", SamplingParams(max_tokens=30, temperature=1.0, seed=0), request_id="sampled")
    engine.step()
    snapshot = engine.trackers.snapshot()
    # the draft always hands the target at least its own token, so draft>target is observed at once
    assert set(snapshot["requests"]) == {"greedy", "sampled"}
    assert "draft>target" in snapshot["requests"]["sampled"]
    while engine.has_unfinished:
        engine.step()
    snapshot = engine.trackers.snapshot()
    assert set(snapshot["pairs"]) == {"ngram>draft", "draft>target"}
    assert snapshot["requests"] == {}                     # finished requests are forgotten
    for pair in snapshot["pairs"].values():
        assert 0 <= pair["acceptance"] <= 1 and pair["num_observed"] > 0
        assert pair["num_accepted_tokens"] <= pair["num_proposed_tokens"]
    # the sampled row had both distributions for draft>target (q from the draft's own output)
    assert 0 <= snapshot["pairs"]["draft>target"]["similarity"] <= 1
    assert snapshot["num_steps"] > 0


def test_abort_forgets_the_request(make_engine):
    engine = make_engine(("ngram", "target"), 2)
    engine.add_request("abab abab abab", SamplingParams(max_tokens=20), request_id="x")
    engine.step()
    engine.step()
    assert "x" in engine.trackers.snapshot()["requests"]
    engine.abort("x")
    assert engine.trackers.snapshot()["requests"] == {}


def test_one_lucky_observation_does_not_make_a_request_look_like_a_summary():
    """A request's own estimate starts from the pool worth request_prior_weight trials."""
    trackers = AcceptanceTrackers(priors={"suffix>target": 0.25})
    trackers.observe_step(make_record({"a": [("suffix", "target", 8, 4, None)]}))
    assert trackers.acceptance("suffix>target", "a") == pytest.approx((0.25 * 16 + 4) / (16 + 5))
    for _ in range(3):                       # consistent evidence does move it
        trackers.observe_step(make_record({"a": [("suffix", "target", 8, 8, None)]}))
    assert trackers.acceptance("suffix>target", "a") > 0.6
    with pytest.raises(ValueError, match="request_prior_weight"):
        AcceptanceTrackers(request_prior_weight=0)


def test_a_model_drafter_s_confidences_fill_a_censored_histogram_shown_over_its_prior():
    """Per bin: drafted (every token, the one that stopped a draft included), judged (up to and
    including the first rejection) and accepted; a fitted histogram stands in until then."""
    trackers = AcceptanceTrackers(priors={"int4>target": 0.7})
    prior = {"drafted": [1] * 10, "judged": [1] * 10, "accepted": [0] * 10}
    trackers.confidence_priors["int4>target"] = prior
    assert trackers.snapshot()["pairs"]["int4>target"]["confidence"] == prior
    # proposed 3 (0.95, 0.85, 0.55), stopped on 0.15; accepted 1: 0.85 rejected, 0.55 censored
    pair = PairOutcome("int4", "target", 3, 1, None, [0.95, 0.85, 0.55, 0.15])
    trackers.observe_step(StepRecord(results=[RowResult([0, 0], [pair])], request_ids=["r"], batch_size=1))
    histogram = trackers.snapshot()["pairs"]["int4>target"]["confidence"]
    assert histogram["drafted"] == [0, 1, 0, 0, 0, 1, 0, 0, 1, 1]
    assert histogram["judged"] == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert histogram["accepted"] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert "confidence" not in trackers.snapshot()["requests"]["r"]["int4>target"]
    trackers.observe_step(make_record({"r": [("ngram", "target", 4, 2, None)]}))
    assert "confidence" not in trackers.snapshot()["pairs"]["ngram>target"]      # a model-free drafter


def test_a_model_level_stopped_before_its_first_token_is_not_a_rejection():
    """The threshold's stop is priced by c (engine/draft_stop.py); counting it as a rejected
    trial too would charge it twice. A model-free drafter's empty proposal stays a rejection."""
    trackers = AcceptanceTrackers(prior=0.5)
    for drafter in ("int4", "ngram"):
        trackers.observe_step(make_record({"r": [(drafter, "target", 4, 4, None)]}))
        before = trackers.acceptance(f"{drafter}>target")
        trackers.observe_step(make_record({"r": [(drafter, "target", 0, 0, None)]}))
        after = trackers.acceptance(f"{drafter}>target")
        assert (after == before) if drafter == "int4" else (after < before)
    assert trackers.snapshot()["pairs"]["int4>target"]["num_empty"] == 1
