"""The cost-model router corrected online: a decision slower than its profile stops being chosen,
comes back when its steps turn honest, per batch bucket, with a seeded exploration share."""

from __future__ import annotations

import pytest

from cli.dataclass_args import parse_dataclass
from engine import Decision, SamplingParams
from engine.batch_view import BatchView, RowView, StepFeedback
from engine.cost_model import CostModel, decision_grid
from engine.profile import LatencyProfile, LevelProfile
from router.cost_router import CostModelRouter
from router.online_correction import OnlineCorrectionConfig, batch_bucket
from serving.config import ServerConfig
from serving.router import GuardedRouter
from tests.engine.builders import run_engine, single_thread  # noqa: F401

NGRAM = Decision(("ngram", "target"), 4)
ACCEPTANCE = {"ngram>target": 0.5}      # K = 4: 1.94 tokens a step for about plain's step time
BATCHES, TOKENS, CONTEXTS = (1, 4, 16), (1, 2, 4, 8, 16), (0, 2048)


def level(seconds, kind="model") -> LevelProfile:
    batches = (1,) if kind == "model_free" else BATCHES
    return LevelProfile(kind, batches, TOKENS, CONTEXTS,
                        [[[seconds(b, t) for _ in CONTEXTS] for t in TOKENS] for b in batches])


def make_model(names=("target",)) -> CostModel:
    """A memory-bound target (a forward costs about the same for 1 or 5 tokens) and free n-grams."""
    levels = {name: level(lambda b, t: 0.05 + 1e-5 * b * t) for name in names}
    levels["ngram"] = levels["suffix"] = level(lambda b, t: 1e-5, "model_free")
    return CostModel(LatencyProfile("synthetic", levels), decision_grid([("ngram", "target")], ks=(4,)))


def make_view(batch: int) -> BatchView:
    rows = tuple(RowView(f"r{i}", "chat", 100, 10, 4096, 0.0) for i in range(batch))
    return BatchView(rows, (), ACCEPTANCE)


def run_steps(router: CostModelRouter, num_steps: int, slowdown, batch: int = 1) -> list[Decision]:
    """Decide and feed back `num_steps` steps: each takes its predicted time x `slowdown(decision)`
    and commits the predicted tokens (rounded); returns the decisions."""
    model, chosen = router.cost_model, []
    for _ in range(num_steps):
        decision = router.decide(make_view(batch))[0]
        predicted = model.step_time(decision, batch, 96)
        tokens = round(model.expected_tokens(decision, ACCEPTANCE))
        router.observe_feedback(StepFeedback((decision,) * batch, predicted * slowdown(decision), (tokens,) * batch))
        chosen.append(decision)
    return chosen


def slow_ngram(decision: Decision) -> float:
    return 1.0 if decision.is_plain else 3.0


def honest(decision: Decision) -> float:
    return 1.0


def test_batch_buckets():
    assert [batch_bucket(b) for b in (1, 2, 3, 4, 7, 8, 15, 16, 64)] == [0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_a_decision_3x_slower_than_predicted_is_dropped_then_comes_back_when_honest():
    router = CostModelRouter(make_model())
    # the profile alone picks n-gram; after min_observations (8) slow steps it is out
    slow = run_steps(router, 9, slow_ngram)
    assert slow[:8] == [NGRAM] * 8 and slow[8].is_plain
    later = run_steps(router, 200, slow_ngram)
    assert sum(d == NGRAM for d in later) <= 20                    # exploration only (5%)
    # the feed turns honest: explorations pull the correction back, n-gram is chosen again
    back = run_steps(router, 300, honest)
    assert back[-50:] == [NGRAM] * 50
    assert back.index(NGRAM) < 150
    # the off switch keeps the profile's choice whatever the steps take
    off = CostModelRouter(make_model(), correction=OnlineCorrectionConfig(enabled=False))
    assert run_steps(off, 40, slow_ngram) == [NGRAM] * 40


def test_plain_is_observed_so_the_comparison_is_live():
    router = CostModelRouter(make_model())
    assert run_steps(router, 9, slow_ngram)[-1].is_plain          # n-gram out while plain runs as profiled
    # the machine turns 2x slower for plain too: n-gram at 3x is now well ahead of plain as measured
    later = run_steps(router, 40, lambda d: 2.0 if d.is_plain else 3.0)
    plain = router.correction.cell(Decision(), 1)
    assert plain.num_observed >= 8 and plain.time_ratio > 1.8
    assert later[-20:] == [NGRAM] * 20


def test_exploration_share_is_the_configured_one_and_repeats_under_a_seed():
    def explored(seed: int, share: float) -> list[Decision]:
        router = CostModelRouter(make_model(), correction=OnlineCorrectionConfig(exploration=share, seed=seed))
        run_steps(router, 9, slow_ngram)
        return run_steps(router, 4000, slow_ngram)

    chosen = explored(0, 0.05)
    assert sum(d == NGRAM for d in chosen) / len(chosen) == pytest.approx(0.05, abs=0.01)
    assert explored(0, 0.05) == chosen
    assert NGRAM not in explored(0, 0.0)


def test_corrections_per_batch_bucket_are_independent():
    router = CostModelRouter(make_model())
    for _ in range(20):     # slow at batch 1, honest at batch 4 (the same decision)
        run_steps(router, 1, slow_ngram, batch=1)
        run_steps(router, 1, honest, batch=4)
    assert router.correction.cell(NGRAM, 1).time_ratio == pytest.approx(3.0)
    assert router.correction.cell(NGRAM, 5).time_ratio == pytest.approx(1.0)
    assert run_steps(router, 1, honest, batch=6) == [NGRAM]               # bucket 4-7
    assert run_steps(router, 20, slow_ngram, batch=1).count(NGRAM) <= 3    # exploration only


def test_steps_the_router_did_not_choose_are_not_counted():
    router = CostModelRouter(make_model())
    router.decide(make_view(2))
    router.observe_feedback(StepFeedback((NGRAM, Decision()), 1.0, (2, 1)))         # a mixed batch
    router.observe_feedback(StepFeedback((NGRAM,) * 2, 1.0, (2, 2)))                # nothing pending
    assert router.correction.cell(NGRAM, 2).num_observed == 0
    GuardedRouter(router).observe_feedback(StepFeedback((NGRAM,) * 2, 1.0, (2, 2)))  # serving passes it on
    router.decide(make_view(2))
    GuardedRouter(router).observe_feedback(StepFeedback((NGRAM,) * 2, 1.0, (2, 2)))
    assert router.correction.cell(NGRAM, 2).num_observed == 1


def test_the_server_switch():
    assert parse_dataclass(ServerConfig, []).online_correction
    assert not parse_dataclass(ServerConfig, ["--no-online-correction"]).online_correction


@pytest.mark.usefixtures("single_thread")
def test_the_corrected_router_keeps_the_engine_lossless(make_engine):
    model = CostModel(make_model(("target", "draft", "small")).profile,
                      decision_grid([("ngram", "target"), ("ngram", "draft", "target"), ("small", "target")]))
    prompts = ["hello world hello world", "abc abc abc abc", "one two one two"]
    params = SamplingParams(max_tokens=24)
    plain = make_engine().generate(prompts, params)
    engine = make_engine()
    router = CostModelRouter(model, correction=OnlineCorrectionConfig(min_observations=2, exploration=0.3))
    engine.set_router(router)
    got = run_engine(engine, prompts, params)
    assert [o.output_token_ids for o in got] == [o.output_token_ids for o in plain]
    # the engine fed the router every step it chose (the wall clock, not the profile)
    assert sum(c.num_observed for bucket in router.correction.cells for c in bucket) > 0
