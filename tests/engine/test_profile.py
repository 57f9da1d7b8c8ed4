"""Latency profiles: interpolation, JSON round trip, bad files, measuring without side effects."""

from __future__ import annotations

import json

import pytest

from engine.profile import LatencyProfile, LevelProfile, ProfileError, load_or_measure, measure_profile
from tests.engine.builders import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")


def make_level(kind="model", batches=(1, 4), tokens=(1, 5), contexts=(0, 1000), fn=None) -> LevelProfile:
    """A grid filled from fn(b, t, c) (default: linear in every axis)."""
    fn = fn or (lambda b, t, c: 0.01 + 0.001 * b * t + 1e-6 * c)
    return LevelProfile(kind, batches, tokens, contexts,
                        [[[fn(b, t, c) for c in contexts] for t in tokens] for b in batches])


def make_profile(**levels) -> LatencyProfile:
    return LatencyProfile("tiny", levels or {"target": make_level()}, {"note": "test"})


def test_grid_points_are_returned_exactly_and_between_them_interpolated():
    profile = make_profile()
    assert profile.forward_time("target", 4, 5, 1000) == pytest.approx(0.01 + 0.02 + 0.001)
    # the grid function is linear in each axis, so trilinear interpolation reproduces it
    assert profile.forward_time("target", 2, 3, 500) == pytest.approx(0.01 + 0.006 + 0.0005)


def test_extrapolation_is_linear_in_the_last_segment_and_clamped_below():
    profile = make_profile(target=make_level(fn=lambda b, t, c: 0.01 * t + 0.002 * b))
    assert profile.forward_time("target", 1, 9, 0) == pytest.approx(0.09 + 0.002)
    assert profile.forward_time("target", 8, 1, 0) == pytest.approx(0.01 + 0.016)
    assert profile.forward_time("target", 1, 1, 5000) == pytest.approx(0.012)       # flat in context
    below = LatencyProfile("tiny", {"target": make_level(batches=(2, 4), fn=lambda b, t, c: 0.01 * b)})
    assert below.forward_time("target", 1, 1, 0) == pytest.approx(0.02)               # held, not extrapolated down


def test_model_free_levels_cost_batch_times_one_row():
    profile = make_profile(target=make_level(), ngram=make_level("model_free", batches=(1,), fn=lambda b, t, c: 1e-4))
    assert profile.forward_time("ngram", 8, 4, 100) == pytest.approx(8e-4)


def test_save_load_round_trip(tmp_path):
    profile = make_profile(target=make_level(), ngram=make_level("model_free", batches=(1,)))
    path = profile.save(tmp_path / "sub" / "p.json")
    loaded = LatencyProfile.load(path)
    assert loaded == profile
    assert loaded.forward_time("target", 3, 2, 700) == profile.forward_time("target", 3, 2, 700)
    assert json.loads(path.read_text())["version"] == 1


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    ('{"version": 99, "model": "m", "levels": {}}', "version"),
    ('{"version": 1, "model": "m", "levels": {"target": {"kind": "model"}}}', "malformed"),
    ('{"version": 1, "model": "m", "levels": {"target": {"kind": "model", "batches": [1], "tokens": [1],'
     ' "contexts": [0], "seconds": [[[-1.0]]]}}}', "> 0"),
    ('{"version": 1, "model": "m", "levels": {"target": {"kind": "model", "batches": [2, 1], "tokens": [1],'
     ' "contexts": [0], "seconds": [[[1.0]], [[1.0]]]}}}', "increasing"),
    ('{"version": 1, "model": "m", "levels": {"target": {"kind": "model", "batches": [1], "tokens": [1, 2],'
     ' "contexts": [0], "seconds": [[[1.0]]]}}}', "shape"),
])
def test_bad_files_raise_a_clear_profile_error(tmp_path, content, message):
    path = tmp_path / "p.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ProfileError, match=message):
        LatencyProfile.load(path)


def test_unknown_level_and_bad_arguments():
    profile = make_profile()
    with pytest.raises(ProfileError, match="no level 'draft'"):
        profile.forward_time("draft", 1, 1, 0)
    with pytest.raises(ValueError, match="batch >= 1"):
        profile.forward_time("target", 0, 1, 0)


def engine_state(engine) -> dict:
    levels = {name: (list(level.cache.lengths), sorted(level.cache.free_slots), level.cache.capacity,
                     level.cache.num_slots, {s: list(t) for s, t in level.cached_tokens.items()})
              for name, level in engine.levels.items()}
    suffix = engine.drafters["suffix"]
    return {"levels": levels, "suffix": (len(suffix.history), dict(suffix.request_indexed)),
            "running": [r.request_id for r in engine.scheduler.running]}


def test_measure_profile_leaves_the_engine_untouched(make_engine):
    engine = make_engine(("ngram", "draft", "target"), 3)
    engine.add_request("hello world hello", request_id="a")
    engine.add_request("abc abc abc", request_id="b")
    engine.step()
    engine.step()
    before = engine_state(engine)
    profile = measure_profile(engine, batches=(1, 2), tokens=(1, 3), contexts=(8, 300), budget_s=30, repeats=1)
    assert engine_state(engine) == before
    assert set(profile.levels) == {"target", "draft", "small", "ngram", "suffix"}
    grid = profile.levels["target"]
    assert grid.contexts == (8, 253)              # 300 clipped to max_model_len 256 - 3 tokens
    assert profile.levels["ngram"].kind == "model_free"
    assert all(v > 0 for plane in grid.seconds for row in plane for v in row)
    # and the engine still decodes the same requests to the end
    while engine.has_unfinished:
        engine.step()
    assert engine.levels["target"].cache.num_free_slots == engine.levels["target"].cache.num_slots


def test_measured_grid_never_gets_cheaper_along_an_axis(make_engine):
    profile = measure_profile(make_engine(), levels=["target"], batches=(1, 4), tokens=(1, 4), contexts=(8, 128),
                              budget_s=30, repeats=1)
    seconds = profile.levels["target"].seconds
    for b in range(2):
        for t in range(2):
            assert seconds[b][t][0] <= seconds[b][t][1]
            assert seconds[0][t][b] <= seconds[1][t][b]
            assert seconds[b][0][t] <= seconds[b][1][t]


def test_load_or_measure_measures_missing_levels_and_saves(make_engine, tmp_path):
    engine = make_engine()
    path = tmp_path / "p.json"
    make_profile(target=make_level()).save(path)
    profile = load_or_measure(engine, path, batches=(1,), tokens=(1, 2), contexts=(8,), budget_s=20, repeats=1)
    assert set(profile.levels) == {"target", "draft", "small", "ngram", "suffix"}
    assert profile.levels["target"] == make_level()          # kept, not re-measured
    assert set(LatencyProfile.load(path).levels) == set(profile.levels)
    engine.load_or_measure_profile(path)
    assert engine.profile == profile


def test_load_or_measure_refuses_to_overwrite_a_corrupt_file(make_engine, tmp_path):
    path = tmp_path / "p.json"
    path.write_text("garbage")
    with pytest.raises(ProfileError, match="not valid JSON"):
        make_engine().load_or_measure_profile(path)
    assert path.read_text() == "garbage"


def test_a_budget_too_small_for_the_grid_still_gives_every_point(make_engine):
    profile = measure_profile(make_engine(), levels=["target"], batches=(1, 2, 4), tokens=(1, 2, 4, 8),
                              contexts=(8, 64, 200), budget_s=1e-3, repeats=3)
    assert profile.meta["estimated_points"] == {"target": 36 - 8}       # the 8 corners are always timed
    seconds = profile.levels["target"].seconds
    assert all(v > 0 for plane in seconds for row in plane for v in row)
    assert seconds[-1][-1][-1] >= seconds[0][0][0]


def test_command_line_writes_a_profile(tmp_path, target, tokenizer, drafts):
    from engine.profile.__main__ import main, parse_args

    for name, model in (("tiny", target), ("tiny-draft", drafts["small"])):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    out = tmp_path / "profiles" / "tiny.json"
    main(parse_args(["--model", str(tmp_path / "tiny"), "--draft", f"small={tmp_path / 'tiny-draft'}",
                     "--output-json", str(out), "--max-minutes", "0.34", "--batches", "1", "2", "--tokens", "1", "3",
                     "--contexts", "8", "64", "--max-model-len", "128"]))
    profile = LatencyProfile.load(out)
    assert profile.model == "tiny"
    assert set(profile.levels) == {"target", "int4", "small", "ngram", "suffix"}      # int4: the default --quantized-levels
    assert profile.meta["total_s"] >= profile.meta["measure_s"]


@pytest.mark.parametrize("argv", [["--draft", "=nopath"], ["--max-minutes", "0"], ["--batches", "0"],
                                  ["--clock", "cpu"], ["--clock", "sundial", "--num-threads", "1"]])
def test_command_line_rejects_bad_arguments(argv, capsys):
    from engine.profile.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "error" in capsys.readouterr().err


def test_cpu_clock_needs_one_thread(make_engine):
    import torch

    engine = make_engine()
    profile = measure_profile(engine, levels=["target", "ngram"], batches=(1, 2), tokens=(1, 2), contexts=(8, 32),
                              budget_s=10, repeats=1, clock="cpu")
    assert profile.meta["clock"] == "cpu" and profile.levels["target"].seconds[1][1][1] > 0
    torch.set_num_threads(2)
    try:
        with pytest.raises(ValueError, match="one torch thread"):
            measure_profile(engine, levels=["target"], clock="cpu")
    finally:
        torch.set_num_threads(1)
