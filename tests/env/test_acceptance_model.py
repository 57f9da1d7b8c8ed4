"""Acceptance models: fitted from engine-shaped outcomes, sampled back with the same statistics."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from env.acceptance_model import AcceptanceModel
from env.sim_calibration import PromptLength, SimCalibration
from env.prompt_sources import Prompt


def draw_truncated_geometric(rng: random.Random, rate: float, k: int) -> int:
    n = 0
    while n < k and rng.random() < rate:
        n += 1
    return n


def test_recovers_the_mean_accepted_length_at_every_k():
    rng = random.Random(0)
    model = AcceptanceModel()
    for _ in range(3000):
        k = rng.choice([2, 4, 8])
        model.observe_pair("ngram>target", "qa", k, draw_truncated_geometric(rng, 0.6, k))
    for k in (1, 3, 4, 8):
        true_mean = sum(0.6 ** i for i in range(1, k + 1))
        sampled = statistics.mean(model.sample_accepted("ngram>target", "qa", k, rng.random()) for _ in range(20000))
        assert sampled == pytest.approx(true_mean, rel=0.05)


def test_keeps_the_all_or_nothing_shape_of_prompt_lookup():
    """First token rarely accepted, the rest almost always once the first is: P(n = 0 or K) ~ 1."""
    rng = random.Random(1)
    model = AcceptanceModel()
    for _ in range(2000):
        model.observe_pair("ngram>target", "rag", 4, 4 if rng.random() < 0.3 else 0)
    draws = [model.sample_accepted("ngram>target", "rag", 4, rng.random()) for _ in range(10000)]
    assert sum(d in (0, 4) for d in draws) / len(draws) > 0.95
    assert statistics.mean(d == 4 for d in draws) == pytest.approx(0.3, abs=0.03)


def test_categories_differ_and_a_sparse_category_shrinks_to_the_pool():
    rng = random.Random(2)
    model = AcceptanceModel()
    for category, rate, n in (("summarization", 0.8, 2000), ("qa", 0.2, 2000), ("rare", 0.8, 1)):
        for _ in range(n):
            model.observe_pair("suffix>target", category, 4, draw_truncated_geometric(rng, rate, 4))
    high, low = model.curve("suffix>target", "summarization"), model.curve("suffix>target", "qa")
    assert high[0] > 0.7 > 0.3 > low[0]
    assert model.curve("suffix>target", "rare")[0] == pytest.approx(model.curve("suffix>target", "unseen")[0], abs=0.1)


def test_proposal_misses_are_modelled_for_model_free_drafters():
    rng = random.Random(3)
    model = AcceptanceModel()
    for _ in range(4000):
        k = rng.choice([2, 4, 8])
        model.observe_proposal("ngram", "sharegpt", k, 0 if rng.random() < 0.4 else k)
    draws = [model.sample_proposed("ngram", "sharegpt", 4, rng.random(), rng.random()) for _ in range(10000)]
    assert statistics.mean(d == 0 for d in draws) == pytest.approx(0.4, abs=0.03)
    assert set(draws) <= {0, 1, 2, 3, 4}
    assert model.sample_proposed("draft", "sharegpt", 4, 0.99, 0.99) == 4     # model drafters always propose K


def test_unknown_pair_names_the_fitted_ones():
    model = AcceptanceModel()
    model.observe_pair("ngram>target", "qa", 2, 1)
    with pytest.raises(KeyError, match="no observations of 'draft>target'.*ngram>target"):
        model.sample_accepted("draft>target", "qa", 4, 0.5)


def test_calibration_round_trips_through_json(tmp_path):
    calibration = SimCalibration("m", profile_scale=1.3, step_overhead_s=0.01, row_overhead_s=0.001,
                                 prompt_lengths={"qa": PromptLength(3.5, 20.0)})
    calibration.acceptance.observe_pair("ngram>target", "qa", 4, 2)
    calibration.acceptance.observe_proposal("ngram", "qa", 4, 0)
    calibration.save(tmp_path / "a.json")
    loaded = SimCalibration.load(tmp_path / "a.json")
    assert loaded.to_json() == calibration.to_json()
    assert json.loads((tmp_path / "a.json").read_text())["format"] == "specroute-sim-calibration-v1"
    prompt = Prompt("spec_bench", "1", "qa", "x" * 70)
    assert loaded.prompt_tokens(prompt, keep=1000) == 20 + 20 and loaded.prompt_tokens(prompt, keep=5) == 25
    assert loaded.step_time_s(0.1, 4) == pytest.approx(1.3 * 0.1 + 0.01 + 0.004)
    assert loaded.step_time_s(0.1, 4, prefill_s=0.5) == pytest.approx(1.3 * 0.1 + 0.5 + 0.01 + 0.004)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a specroute-sim-calibration-v1 file"):
        SimCalibration.load(tmp_path / "bad.json")


def test_per_token_acceptance_is_the_trackers_estimate_pooled_over_categories():
    model = AcceptanceModel()
    model.observe_pair("draft>target", "qa", 4, 4)        # 4 accepted, no rejection
    model.observe_pair("draft>target", "coding", 4, 1)    # 1 accepted, then a rejection
    model.observe_pair("ngram>target", "qa", 2, 0)
    rates = model.per_token_acceptance()
    assert rates["draft>target"] == pytest.approx(5 / 6)   # accepted / (accepted + rejections)
    assert rates["ngram>target"] == 0.0


def test_per_token_acceptance_counts_a_model_free_drafter_s_empty_proposals_as_rejections():
    model = AcceptanceModel()
    for _ in range(99):                                   # n-gram proposes on 1 step in 3
        model.observe_proposal("ngram", "qa", 2, 2)
        model.observe_proposal("ngram", "qa", 2, 0)
        model.observe_proposal("ngram", "qa", 2, 0)
        model.observe_pair("ngram>target", "qa", 2, 2)   # and is then always accepted
    p_nonempty, _ = model.proposal_rates("ngram", "*")
    assert p_nonempty == pytest.approx(1 / 3, abs=0.01)
    empty = 99 * (1 - p_nonempty) / p_nonempty
    assert model.per_token_acceptance()["ngram>target"] == pytest.approx(198 / (198 + empty))


def test_the_confidence_histogram_round_trips_and_older_files_load_without_one():
    model = AcceptanceModel()
    model.observe_pair("int4>target", "qa", 4, 2)
    model.observe_confidences("int4>target", [0.9, 0.7, 0.4, 0.2, 0.1], 4, 2)
    model.observe_confidences("ngram>target", None, 4, 2)                 # a model-free drafter: nothing
    loaded = AcceptanceModel.from_json(json.loads(json.dumps(model.to_json())))
    assert loaded.confidence["int4>target"] == model.confidence["int4>target"] and "ngram>target" not in loaded.confidence
    assert loaded.stop_rates("int4>target", 0.5) == model.stop_rates("int4>target", 0.5)
    assert model.stop_rates("int4>target", 0.5)[0] == pytest.approx(2 / 5)
    old = {key: value for key, value in model.to_json().items() if key != "confidence"}
    assert AcceptanceModel.from_json(old).stop_rates("int4>target", 0.5) == (1.0, 1.0)     # neutral


def test_a_lift_scales_every_position_s_acceptance():
    model = AcceptanceModel()
    rng = random.Random(3)
    for _ in range(2000):
        n = draw_truncated_geometric(rng, 0.5, 6)
        model.observe_pair("draft>target", "qa", 6, n)
    mean = [statistics.mean(model.sample_accepted("draft>target", "qa", 6, rng.random(), lift) for _ in range(4000))
            for lift in (1.0, 1.5)]
    assert mean[1] > mean[0] + 0.5
