"""Step-time fits recover known latencies from synthetic engine steps."""

from __future__ import annotations

import numpy as np
import pytest

from env.step_time_fit import StepSample, fit_profile, fit_scaled
from tests.env.conftest import make_profile


def synthetic_steps(latency, rng, widths=(1, 3, 5, 9, 64, 200)) -> list[StepSample]:
    """Steps of random rows, context and width (decode widths and prefill widths)."""
    steps = []
    for _ in range(200):
        rows = int(rng.integers(1, 17))
        tokens = int(rng.choice(widths))
        context = int(rng.integers(0, 1500))
        forwards = [("target", rows, tokens, context), ("ngram", rows, 4, context)]
        steps.append(StepSample(forwards, rows, latency(forwards, rows)))
    return steps


def test_fit_scaled_recovers_scale_prefill_scale_and_overheads():
    profile = make_profile()
    split = profile.levels["target"].tokens[-1]

    def latency(forwards, rows):
        decode = sum(profile.forward_time(*f) for f in forwards if f[2] <= split)
        prefill = sum(profile.forward_time(*f) for f in forwards if f[2] > split)
        return 1.3 * decode + 0.8 * prefill + 0.004 + 0.001 * rows

    widths = (1, 3, 5, 9, 2 * split)               # the last is past the profile's timed tokens: prefill
    fit, error = fit_scaled(profile, synthetic_steps(latency, np.random.default_rng(0), widths))
    assert (fit.profile_scale, fit.prefill_scale) == (pytest.approx(1.3, rel=1e-3), pytest.approx(0.8, rel=1e-3))
    assert (fit.step_overhead_s, fit.row_overhead_s) == (pytest.approx(0.004, rel=1e-2), pytest.approx(0.001, rel=1e-2))
    assert error < 1e-3 and fit.prefill_tokens == split


def test_fit_profile_recovers_a_multilinear_forward_time():
    base = make_profile()

    def target_seconds(b, t, c):
        return 0.03 + 0.002 * b + 0.0005 * b * t + 0.001 * b * c / 1024

    def latency(forwards, rows):
        return target_seconds(*forwards[0][1:]) + base.forward_time(*forwards[1]) + 0.0002 * rows

    profile, per_row, error = fit_profile(base, synthetic_steps(latency, np.random.default_rng(1)))
    assert error < 1e-3
    for b, t, c in [(1, 1, 0), (16, 9, 700), (4, 300, 100)]:    # per-row cost may land in either term
        fitted = profile.forward_time("target", b, t, c) + per_row * b
        assert fitted == pytest.approx(target_seconds(b, t, c) + 0.0002 * b, rel=1e-3)
    assert profile.levels["ngram"] is base.levels["ngram"]
