"""This machine's latency curve: measured once per key and cached, the grid trimmed to a budget."""

from __future__ import annotations

import pytest

from engine.autotune import cpu_identity
from engine.profile import LatencyProfile, LevelProfile, machine_curve, machine_profile
from engine.profile.machine_curve import (VERIFY_TOKENS, CurveGrid, calibrate, curve_file, curve_key, fit_grid,
                                          full_grid, grid_seconds, load_or_calibrate)
from tests.engine.builders import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")
LEVELS = {"target", "draft", "small", "ngram", "suffix"}


@pytest.fixture(autouse=True)
def curve_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECROUTE_CURVE_DIR", str(tmp_path / "curves"))
    return tmp_path / "curves"


def seconds_of(b: int, t: int, c: int) -> float:
    """The fake machine: a forward costs 1 ms plus 1 ms per row-token (context ignored)."""
    return 1e-3 + 1e-3 * b * t


class FakeMachine:
    """`measure_profile`'s stand-in: answers `seconds_of` on the grid asked for and advances a fake
    clock by what timing it would have taken, so budgets are tested without wall time."""

    def __init__(self, engine):
        self.engine, self.now, self.calls = engine, 0.0, []

    def clock(self) -> float:
        return self.now

    def measure(self, engine, levels, batches, tokens, contexts, budget_s, repeats, model=None) -> LatencyProfile:
        (name,) = levels
        self.calls.append(name)
        free = name in engine.drafters
        batches = (1,) if free else tuple(batches)
        self.now += repeats * sum(seconds_of(b, t, c) for b in batches for t in tokens for c in contexts)
        grid = [[[seconds_of(b, t, c) for c in contexts] for t in tokens] for b in batches]
        level = LevelProfile("model_free" if free else "model", batches, tuple(tokens), tuple(contexts), grid)
        return LatencyProfile(model or "tiny", {name: level}, {"estimated_points": {name: 0}})


def test_first_start_measures_every_level_and_caches_it_under_the_machine_key(make_engine, curve_dir):
    engine = make_engine(max_model_len=256, max_num_seqs=4)
    profile = load_or_calibrate(engine, "tiny", budget_s=30)
    key = curve_key(engine)
    assert set(profile.levels) == LEVELS == set(key["levels"])
    assert (key["cpu"], key["path"], key["model"]) == (cpu_identity()["cpu"], engine.precision.name, engine.model_digest)
    target = profile.levels["target"]          # the verification curve 1..17 and batches up to max_num_seqs
    assert (target.tokens[0], target.tokens[-1], target.batches[0], target.batches[-1]) == (1, 17, 1, 4)
    cached = LatencyProfile.load(curve_file(key))
    assert cached.meta["curve_key"] == key and cached.levels == profile.levels
    assert curve_file(key).parent == curve_dir


def test_a_second_start_reads_the_cache_without_measuring(make_engine, monkeypatch, caplog):
    first = load_or_calibrate(make_engine(max_model_len=256, max_num_seqs=4), "tiny", budget_s=30)

    def refuse(*args, **kwargs):
        raise AssertionError("measured again although the curve is cached")

    monkeypatch.setattr(machine_curve, "calibrate", refuse)
    with caplog.at_level("INFO", logger="specroute.profile"):
        second = load_or_calibrate(make_engine(max_model_len=256, max_num_seqs=4), "tiny", budget_s=30)
    assert second.levels == first.levels
    assert any(f"latency curve: cached for {cpu_identity()['cpu']} " in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("change", [{"kernel": "dense"}, {"max_num_seqs": 2}, {"drafts": {}}])
def test_a_changed_path_batch_or_level_set_measures_again(make_engine, target, tokenizer, change):
    from engine import Engine, EngineConfig
    machine = FakeMachine(None)
    base = make_engine(max_model_len=256, max_num_seqs=4)
    load_or_calibrate(base, "tiny", budget_s=30, clock=machine.clock, measure=machine.measure)
    calls = len(machine.calls)
    load_or_calibrate(make_engine(max_model_len=256, max_num_seqs=4), "tiny", budget_s=30, clock=machine.clock,
                      measure=machine.measure)
    assert len(machine.calls) == calls                                # same key: cached
    drafts = change.pop("drafts", None)
    if drafts is not None:
        changed = Engine(target, tokenizer, EngineConfig(max_model_len=256, max_num_seqs=4), drafts=drafts)
    else:
        changed = make_engine(max_model_len=256, **{"max_num_seqs": 4, **change})
    assert curve_key(changed) != curve_key(base)
    profile = load_or_calibrate(changed, "tiny", budget_s=30, clock=machine.clock, measure=machine.measure)
    assert len(machine.calls) > calls and set(profile.levels) == set(changed.levels) | set(changed.drafters)


def test_the_grid_shrinks_to_fit_the_budget_and_keeps_its_corners(make_engine):
    engine = make_engine(max_model_len=2048, max_num_seqs=16)
    grid = full_grid(16, 2048)
    assert grid == CurveGrid((1, 2, 4, 8, 16), VERIFY_TOKENS, (64, 512, 1536))
    sizes = {}
    for budget in (1e3, 12.0, 6.0, 1e-3):
        machine = FakeMachine(engine)
        profile = calibrate(engine, "tiny", budget_s=budget, clock=machine.clock, measure=machine.measure)
        target = profile.levels["target"]
        sizes[budget] = len(target.batches) * len(target.tokens) * len(target.contexts)
        assert (target.batches[0], target.batches[-1], target.tokens[0], target.tokens[-1]) == (1, 16, 1, 17)
        assert profile.meta["grid_points"]["target"] == sizes[budget]
    assert sizes[1e3] == grid.num_points and sizes[1e-3] == 8                # everything; the corners only
    assert sizes[1e3] > sizes[12.0] > sizes[6.0] > sizes[1e-3]


def test_fit_grid_takes_the_largest_coarsening_that_fits():
    grid = full_grid(16, 2048)
    coarsenings = [grid]
    while (smaller := coarsenings[-1].coarser()) is not None:
        coarsenings.append(smaller)
    assert coarsenings[-1].num_points == 8 and len({g.num_points for g in coarsenings}) == len(coarsenings)
    for budget in (100.0, 5.0, 2.0, 1.0, 1e-3):
        fits = [g for g in coarsenings if grid_seconds(g, seconds_of, 2) <= budget] or coarsenings[-1:]
        assert fit_grid(grid, seconds_of, budget, repeats=2) == fits[0]
    assert fit_grid(grid, seconds_of, 2.0, 2).contexts == (64, 1536)          # contexts go first


def test_full_grid_refuses_a_context_shorter_than_the_verification_width():
    with pytest.raises(ValueError, match="max_model_len >= 17"):
        full_grid(4, 10)


def test_the_machine_profile_holds_the_curve_over_the_prior_levels_it_lacks(make_engine):
    engine = make_engine(max_model_len=256, max_num_seqs=4)
    prior_level = LevelProfile("model", (1,), (1,), (0,), [[[0.5]]])
    prior = LatencyProfile("tiny", {"target": prior_level, "int4": prior_level}, {"cpu": "another"})
    machine = FakeMachine(engine)
    curve = load_or_calibrate(engine, "tiny", budget_s=30, prior=prior, clock=machine.clock, measure=machine.measure)
    shared = machine_profile("tiny", engine.precision.name)
    assert set(shared.levels) == LEVELS | {"int4"}
    assert shared.levels["target"] == curve.levels["target"] and shared.levels["int4"] == prior_level
    assert set(shared.meta["measured_here"]) == LEVELS
    assert machine_profile("tiny", "bfloat16-dense") is None


def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_start(make_engine, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("SPECROUTE_CURVE_DIR", str(blocker / "curves"))
    engine = make_engine(max_model_len=256, max_num_seqs=4)
    machine = FakeMachine(engine)
    with caplog.at_level("WARNING", logger="specroute.profile"):
        profile = load_or_calibrate(engine, "tiny", budget_s=30, clock=machine.clock, measure=machine.measure)
    assert set(profile.levels) == LEVELS
    assert caplog.records and all("not cached" in r.getMessage() for r in caplog.records)
