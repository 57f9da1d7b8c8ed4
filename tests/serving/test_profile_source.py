"""Which latency profile the server's cost model reads: the explicit file, this machine's curve, the prior."""

from __future__ import annotations

import logging

import pytest

from engine.profile import LatencyProfile, LevelProfile, machine_curve
from serving import profile_source
from serving.config import ServerConfig
from serving.profile_source import load_profile

LEVELS = {"target", "draft", "small", "ngram", "suffix"}


def flat_profile(levels, seconds: float = 0.25) -> LatencyProfile:
    grid = {name: LevelProfile("model_free" if name in ("ngram", "suffix") else "model", (1,), (1,), (0,),
                               [[[seconds]]]) for name in levels}
    return LatencyProfile("tiny", grid, {"cpu": "Zen 4 (another machine)"})


@pytest.fixture
def engine(make_engine):
    return make_engine(max_model_len=256, max_num_seqs=4)


@pytest.fixture
def prior(tmp_path, monkeypatch):
    """A shipped prior for the tiny model, as profiles/<model>.<path>.json would be."""
    path = flat_profile(LEVELS).save(tmp_path / "prior.json")
    monkeypatch.setattr(profile_source, "shipped_profile_path", lambda model_name, precision_name: path)
    return path


@pytest.fixture
def no_calibration(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("calibrated although it should not have")

    monkeypatch.setattr(profile_source, "load_or_calibrate", refuse)


def config(**fields) -> ServerConfig:
    return ServerConfig(policy="", decision_log="", max_model_len=256, max_num_seqs=4, **fields)


def test_first_start_calibrates_and_the_next_reads_the_cache(make_engine, engine, prior, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECROUTE_CURVE_DIR", str(tmp_path / "curves"))
    first = load_profile(engine, config(calibration_budget_s=30), "tiny")
    assert engine.profile is first and set(first.levels) == LEVELS
    assert first.forward_time("target", 1, 1, 0) != 0.25                    # measured here, not the prior
    assert first.meta["curve_key"] == machine_curve.curve_key(engine)

    def refuse(*args, **kwargs):
        raise AssertionError("measured again although the curve is cached")

    monkeypatch.setattr(machine_curve, "calibrate", refuse)
    again = make_engine(max_model_len=256, max_num_seqs=4)
    assert load_profile(again, config(), "tiny").levels == first.levels


def test_budget_0_uses_the_prior_and_warns_once(engine, prior, no_calibration, caplog):
    with caplog.at_level(logging.INFO):
        profile = load_profile(engine, config(calibration_budget_s=0), "tiny")
    assert profile.levels == LatencyProfile.load(prior).levels
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "measured on another machine" in warnings[0] and str(prior) in warnings[0]


def test_budget_0_measures_the_levels_the_prior_lacks(engine, tmp_path, monkeypatch, no_calibration, caplog):
    path = flat_profile({"target", "ngram", "suffix"}).save(tmp_path / "prior.json")
    monkeypatch.setattr(profile_source, "shipped_profile_path", lambda model_name, precision_name: path)
    with caplog.at_level(logging.WARNING):
        profile = load_profile(engine, config(calibration_budget_s=0, profile_budget_s=2), "tiny")
    assert set(profile.levels) == LEVELS and profile.forward_time("target", 1, 1, 0) == 0.25
    assert len(caplog.records) == 1


def test_an_explicit_profile_wins_and_skips_calibration(engine, tmp_path, no_calibration, caplog):
    path = flat_profile(LEVELS, seconds=0.5).save(tmp_path / "mine.json")
    with caplog.at_level(logging.WARNING):
        profile = load_profile(engine, config(profile=str(path)), "tiny")
    assert profile.forward_time("draft", 1, 1, 0) == 0.5 and not caplog.records


@pytest.mark.parametrize("budget", [-1.0, float("inf"), float("nan")])
def test_a_bad_calibration_budget_is_refused(budget):
    with pytest.raises(ValueError, match="calibration_budget_s must be a finite number >= 0"):
        config(calibration_budget_s=budget)


def test_the_flag_sets_the_budget():
    from cli.dataclass_args import parse_dataclass
    parsed = parse_dataclass(ServerConfig, ["--calibration-budget-s", "0"], "", prog="python -m serving")
    assert parsed.calibration_budget_s == 0.0 and ServerConfig().calibration_budget_s == 60.0
