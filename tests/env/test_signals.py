"""Draft signals in the simulator: fitted per (drafter, category), shown in the observation, and
the step's proposal drawn given the signal the router saw."""

from __future__ import annotations

import random

import numpy as np
import pytest

from env import SpecRouteEnv
from env.acceptance_counts import signal_key
from env.acceptance_model import AcceptanceModel
from tests.env.conftest import SIGNAL_SHARES


def test_signal_keys_fit_their_own_curves_and_a_category_reads_them_merged():
    rng = random.Random(0)
    model = AcceptanceModel()
    for _ in range(2000):
        model.observe_pair("ngram>target", signal_key("qa", 3), 4, 4 if rng.random() < 0.9 else 0)
        model.observe_pair("ngram>target", signal_key("qa", 1), 4, 4 if rng.random() < 0.1 else 0)
    strong = np.mean([model.sample_accepted("ngram>target", "qa|3", 4, rng.random()) for _ in range(4000)])
    weak = np.mean([model.sample_accepted("ngram>target", "qa|1", 4, rng.random()) for _ in range(4000)])
    merged = np.mean([model.sample_accepted("ngram>target", "qa", 4, rng.random()) for _ in range(4000)])
    assert strong == pytest.approx(3.6, abs=0.2) and weak == pytest.approx(0.4, abs=0.2)
    assert merged == pytest.approx(2.0, abs=0.25)
    assert model.mean_acceptance("ngram>target", "qa") == pytest.approx(0.5, abs=0.05)


def test_signals_are_sampled_with_the_fitted_frequencies_and_survive_json():
    rng = random.Random(1)
    model = AcceptanceModel()
    for _ in range(3000):
        model.observe_signal("ngram", "rag", rng.choices(range(4), (0.1, 0.2, 0.3, 0.4))[0])
    model = AcceptanceModel.from_json(model.to_json())
    draws = np.bincount([model.sample_signal("ngram", "rag", rng.random()) for _ in range(20000)], minlength=4)
    assert np.allclose(draws / draws.sum(), (0.1, 0.2, 0.3, 0.4), atol=0.02)
    assert model.sample_signal("suffix", "rag", 0.5) is None             # not fitted: no signal


def test_the_observation_shows_the_signal_the_steps_proposal_is_drawn_with(sim_kwargs):
    """Signal 0 means the drafter has nothing to propose: a step of ngram>target then commits one
    token per row; a step shown a positive signal commits more on average."""
    env = SpecRouteEnv(**sim_kwargs, actions=["plain", "ngram>target@4"], max_num_seqs=1)
    names = env.obs_spec.names
    at, rows = names.index("signal_max[ngram]"), names.index("batch_occupancy")
    assert "signal_mean[ngram]" in names and "signal_max[suffix]" not in names     # no action starts with suffix
    by_signal: dict[float, list[int]] = {}
    obs, _ = env.reset(seed=0)
    for _ in range(600):
        shown, seen = float(obs[at]), obs[rows] == 1      # a row that arrives now is admitted by the step
        obs, _, terminated, truncated, info = env.step(1)
        if seen and info["num_committed"]:
            by_signal.setdefault(round(shown, 3), []).append(info["num_committed"])
        if terminated or truncated:
            obs, _ = env.reset()
    assert set(by_signal[0.0]) == {1}
    assert np.mean(by_signal[1.0]) > 1.5
    shares = np.array([len(by_signal.get(round(s / 3, 3), [])) for s in range(4)], dtype=float)
    assert np.allclose(shares / shares.sum(), SIGNAL_SHARES, atol=0.08)


def test_domain_randomisation_scales_each_episodes_latency_and_acceptance(sim_kwargs):
    base = SpecRouteEnv(**sim_kwargs)
    wide = SpecRouteEnv(**sim_kwargs, randomize_latency=0.5, randomize_acceptance=1.0)
    scales, factors = [], []
    for seed in range(6):
        base.reset(seed=seed)
        wide.reset(seed=seed)
        calibration = wide.unwrapped.backend.episode_calibration
        scales.append(calibration.profile_scale / base.unwrapped.backend.calibration.profile_scale)
        factors.append(calibration.acceptance.odds_factors["ngram>target"])
        assert base.unwrapped.backend.episode_calibration is base.unwrapped.backend.calibration
    assert all(np.exp(-0.5) <= s <= np.exp(0.5) for s in scales) and len(set(scales)) == 6
    assert all(np.exp(-1.0) <= f <= np.exp(1.0) for f in factors) and len(set(factors)) == 6


@pytest.mark.parametrize("value", [-0.1, 4, "x", True])
def test_domain_randomisation_ranges_are_checked(sim_kwargs, value):
    with pytest.raises(ValueError, match="randomize_latency must be a number in"):
        SpecRouteEnv(**sim_kwargs, randomize_latency=value)
