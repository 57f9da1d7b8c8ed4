"""Simulator inputs built in code: a small latency profile and fitted-looking acceptance models."""

from __future__ import annotations

import random

import pytest

from engine.profile.latency_profile import LatencyProfile, LevelProfile
from env.acceptance_counts import signal_key
from env.sim_calibration import PromptLength, SimCalibration

PAIR_RATES = {"ngram>target": 0.5, "suffix>target": 0.4, "int4>target": 0.85, "ngram>int4": 0.55,
              "draft>target": 0.7, "ngram>draft": 0.6}
SIGNAL_SHARES = (0.3, 0.3, 0.2, 0.2)      # P(signal = 0..3) of each model-free drafter
CATEGORIES = ("sharegpt", "qa", "humaneval", "summarization")


def make_profile() -> LatencyProfile:
    """Model levels cost a base time plus per token and per context; drafters cost per row."""
    batches, tokens, contexts = [1, 4, 16], [1, 8, 64, 1024], [0, 512, 2048]

    def grid(base: float, per_token: float):
        return [[[base + per_token * b * t + 1e-6 * b * c for c in contexts] for t in tokens] for b in batches]

    levels = {"target": LevelProfile("model", batches, tokens, contexts, grid(0.05, 0.002)),
              "int4": LevelProfile("model", batches, tokens, contexts, grid(0.02, 0.002)),
              "draft": LevelProfile("model", batches, tokens, contexts, grid(0.008, 0.0003))}
    for name in ("ngram", "suffix"):
        levels[name] = LevelProfile("model_free", [1], tokens, contexts, [[[1e-4] * len(contexts)] * len(tokens)])
    return LatencyProfile("tiny-test", levels)


def make_calibration(seed: int = 0) -> SimCalibration:
    """Acceptance draws from a known per-token rate (lower for qa). A model-free drafter's steps
    are fitted per draft signal: signal 0 proposes nothing, and its acceptance rises with the signal."""
    rng = random.Random(seed)
    calibration = SimCalibration("tiny-test", step_overhead_s=0.002, row_overhead_s=0.0005)
    model = calibration.acceptance
    for pair, rate in PAIR_RATES.items():
        drafter = pair.partition(">")[0]
        signals = (1, 2, 3) if drafter in ("ngram", "suffix") else (None,)
        for category in CATEGORIES:
            for signal in signals:
                a = rate * (0.5 if category == "qa" else 1.0) * (1.0 if signal is None else 0.75 + 0.125 * signal)
                for _ in range(300):
                    k = rng.choice([2, 4, 8])
                    n = 0
                    while n < k and rng.random() < min(a, 0.95):
                        n += 1
                    model.observe_pair(pair, signal_key(category, signal), k, n)
    for drafter in ("ngram", "suffix"):
        for category in CATEGORIES:
            for _ in range(200):
                signal = rng.choices(range(4), SIGNAL_SHARES)[0]
                model.observe_signal(drafter, category, signal)
                k = rng.choice([2, 4, 8])
                proposed = 0 if signal == 0 else (k if rng.random() < 0.8 else rng.randint(1, k - 1))
                model.observe_proposal(drafter, signal_key(category, signal), k, proposed)
    calibration.prompt_lengths["*"] = PromptLength(chars_per_token=4.0, template_tokens=10.0)
    return calibration


@pytest.fixture(scope="session")
def sim_files(tmp_path_factory):
    """(profile path, calibration path) for SpecRoute-v0's profile=..., acceptance=...."""
    directory = tmp_path_factory.mktemp("sim")
    profile = make_profile().save(directory / "profile.json")
    calibration = directory / "acceptance.json"
    make_calibration().save(calibration)
    return str(profile), str(calibration)


@pytest.fixture
def sim_kwargs(sim_files):
    """Keyword arguments of a small, fast sim env."""
    profile, acceptance = sim_files
    return dict(backend="sim", profile=profile, acceptance=acceptance,
                workload={"name": "sharegpt", "num_requests": 12, "rate": 4.0, "max_new_tokens": 32})
