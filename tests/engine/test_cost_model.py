"""The cost model on synthetic profiles: expected tokens, step time, and the decisions it picks."""

from __future__ import annotations

import numpy as np
import pytest

from engine import Decision, SamplingParams
from engine.cost_model import CostModel, decision_grid
from engine.expectation import expected_output
from engine.profile import LatencyProfile, LevelProfile, ProfileError
from router.cost_router import CostModelRouter
from router.online_correction import OnlineCorrectionConfig
from tests.engine.builders import run_engine, single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")

BATCHES, TOKENS, CONTEXTS = (1, 4, 16), (1, 2, 4, 8, 16), (0, 2048)


def level(fn, kind="model") -> LevelProfile:
    batches = (1,) if kind == "model_free" else BATCHES
    return LevelProfile(kind, batches, TOKENS, CONTEXTS,
                        [[[fn(b, t, c) for c in CONTEXTS] for t in TOKENS] for b in batches])


def make_profile(target, draft=None, ngram=lambda b, t, c: 1e-5) -> LatencyProfile:
    levels = {"target": level(target), "ngram": level(ngram, "model_free")}
    if draft is not None:
        levels["draft"] = level(draft)
    return LatencyProfile("synthetic", levels)


def memory_bound(b, t, c):
    """A forward costs the same for 1 or 16 tokens (weights dominate), as SmolLM2 at small batch."""
    return 0.05 + 1e-5 * b * t


def compute_bound(b, t, c):
    """Latency grows with the tokens in the batch."""
    return 0.01 + 0.002 * b * t


def test_expected_output_formula_and_its_limit():
    assert expected_output(0.5, 3) == pytest.approx((1 - 0.5 ** 4) / 0.5)
    assert expected_output(1.0, 5) == 6.0
    assert expected_output(0.0, 5) == 1.0


def simulate_chain(acceptances, k, n=20000, seed=0) -> float:
    """Monte Carlo of the chain: each level accepts a geometric prefix of the proposal, adds one."""
    rng = np.random.default_rng(seed)
    total = 0
    for _ in range(n):
        proposal = k
        for a in acceptances:
            accepted = 0
            while accepted < proposal and rng.random() < a:
                accepted += 1
            proposal = accepted + 1
        total += proposal
    return total / n


@pytest.mark.parametrize("acceptances, k", [((0.7,), 4), ((0.6, 0.9), 4), ((0.8, 0.5, 0.9), 3), ((1.0, 1.0), 4)])
def test_chain_expectation_matches_simulation(acceptances, k):
    chain = ("ngram", "draft", "small", "target")[-len(acceptances) - 1:]
    rates = {f"{low}>{high}": a for low, high, a in zip(chain, chain[1:], acceptances)}
    profile = LatencyProfile("x", {name: level(memory_bound) for name in chain if name != "ngram"}
                             | {"ngram": level(lambda b, t, c: 1e-5, "model_free")})
    model = CostModel(profile, [Decision(chain, k)])
    assert model.expected_tokens(Decision(chain, k), rates) == pytest.approx(simulate_chain(acceptances, k), rel=0.02)


def test_step_time_sums_the_levels_of_the_chain():
    profile = make_profile(compute_bound, draft=lambda b, t, c: 0.001 * t + 0.0001 * b)
    model = CostModel(profile, decision_grid([("ngram", "draft", "target"), ("draft", "target")], ks=(4,)))
    ft = profile.forward_time
    assert model.step_time(Decision(), 4, 100) == ft("target", 4, 1, 100)
    assert model.step_time(Decision(("draft", "target"), 4), 4, 100) == pytest.approx(
        4 * ft("draft", 4, 1, 100) + ft("target", 4, 5, 100))
    assert model.step_time(Decision(("ngram", "draft", "target"), 4), 4, 100) == pytest.approx(
        ft("ngram", 4, 4, 100) + ft("draft", 4, 5, 100) + ft("target", 4, 6, 100))


def test_high_acceptance_at_low_load_drafts_long_and_low_acceptance_not_at_all():
    mostly_weights = make_profile(lambda b, t, c: 0.05 + 0.002 * b * t)
    model = CostModel(mostly_weights, decision_grid([("ngram", "target")]))
    assert model.best(1, 100, {"ngram>target": 0.9}) == Decision(("ngram", "target"), 8)
    assert model.best(1, 100, {"ngram>target": 0.02}).is_plain
    # when extra tokens are (almost) free any acceptance pays, but none at all never does
    assert CostModel(make_profile(memory_bound), model.decisions).best(1, 100, {"ngram>target": 0.0}).is_plain
    # the trackers' snapshot works the same, and its prior covers untried pairs
    snapshot = {"pairs": {"ngram>target": {"acceptance": 0.9}}, "prior": 0.0}
    assert model.best(1, 100, snapshot) == Decision(("ngram", "target"), 8)
    assert model.best(1, 100, {"pairs": {}, "prior": 0.0}).is_plain


def test_compute_bound_verifier_turns_speculation_down_under_load():
    model = CostModel(make_profile(compute_bound), decision_grid([("ngram", "target")], ks=(1, 2, 3, 4, 6, 8)))
    acceptance = {"ngram>target": 0.7}
    light, heavy = model.best(1, 100, acceptance), model.best(16, 100, acceptance)
    assert light.k >= 2
    assert heavy.k < light.k
    assert model.goodput(heavy, 16, 100, acceptance) > model.goodput(light, 16, 100, acceptance)


@pytest.mark.parametrize("draft_cost, chain_wins", [(0.01, True), (0.2, False)])
def test_three_level_chain_wins_where_the_intermediate_is_cheap_and_aligned(draft_cost, chain_wins):
    profile = make_profile(lambda b, t, c: 0.1, draft=lambda b, t, c: draft_cost)
    decisions = decision_grid([("ngram", "target"), ("draft", "target"), ("ngram", "draft", "target")])
    acceptance = {"ngram>target": 0.5, "ngram>draft": 0.8, "draft>target": 0.9}
    best = CostModel(profile, decisions).best(1, 100, acceptance)
    assert (best.chain == ("ngram", "draft", "target")) is chain_wins


def test_slo_prefers_decisions_that_meet_it_else_the_fastest_per_token():
    profile = make_profile(memory_bound)
    decisions = decision_grid([("ngram", "target")])
    acceptance = {"ngram>target": 0.6}
    free = CostModel(profile, decisions).best_estimate(4, 100, acceptance)
    assert free.meets_slo
    strict = CostModel(profile, decisions, slo_tpot_s=1e-6).best_estimate(4, 100, acceptance)
    assert not strict.meets_slo
    fastest = min(CostModel(profile, decisions).evaluate(4, 100, acceptance), key=lambda e: e.time_per_token_s)
    assert strict.decision == fastest.decision
    loose = CostModel(profile, decisions, slo_tpot_s=10.0).best_estimate(4, 100, acceptance)
    assert loose.meets_slo and loose.decision == free.decision


def test_decision_grid():
    grid = decision_grid([("ngram", "target"), "draft>target", ("target",), ("ngram", "target")], ks=(2, 4))
    assert grid == [Decision(), Decision(("ngram", "target"), 2), Decision(("ngram", "target"), 4),
                    Decision(("draft", "target"), 2), Decision(("draft", "target"), 4)]
    with pytest.raises(ValueError, match="integers >= 1"):
        decision_grid([("ngram", "target")], ks=(0,))
    with pytest.raises(ValueError, match="end at 'target'"):
        decision_grid([("target", "ngram")])


def test_a_decision_the_profile_cannot_time_is_refused():
    with pytest.raises(ProfileError, match="no levels \\['draft'\\]"):
        CostModel(make_profile(memory_bound), decision_grid([("draft", "target")]))
    with pytest.raises(ValueError, match="slo_tpot_s"):
        CostModel(make_profile(memory_bound), [Decision()], slo_tpot_s=0)


def test_router_drives_a_real_engine_losslessly(make_engine, target, tokenizer, drafts):
    levels = {name: level(memory_bound) for name in ("target", "draft", "small")}
    levels |= {name: level(lambda b, t, c: 1e-5, "model_free") for name in ("ngram", "suffix")}
    model = CostModel(LatencyProfile("tiny", levels),
                      decision_grid([("ngram", "target"), ("ngram", "draft", "target"), ("small", "target")]))
    prompts = ["hello world hello world", "abc abc abc abc", "one two one two"]
    params = SamplingParams(max_tokens=24)
    plain = make_engine().generate(prompts, params)
    engine = make_engine()
    router = CostModelRouter(model)
    engine.set_router(router)
    seen = set()
    got = run_engine(engine, prompts, params, on_step=lambda *_: seen.add(router.last_estimate.decision))
    assert [o.output_token_ids for o in got] == [o.output_token_ids for o in plain]
    assert any(not d.is_plain for d in seen)          # the 0.5 prior makes speculation worth trying
    assert router.last_estimate.step_time_s > 0


def test_a_predicted_gain_under_the_margin_keeps_plain_decoding():
    # verifying 3 tokens costs 1.32x one; a = 0.3 at K = 2 gives 1.39 tokens: 5% faster per token
    profile = make_profile(lambda b, t, c: 0.05 + 0.008 * (t - 1))
    decisions = decision_grid([("ngram", "target")], ks=(2,))
    acceptance = {"ngram>target": 0.3}
    assert CostModel(profile, decisions).best(1, 100, acceptance).is_plain
    assert CostModel(profile, decisions, min_gain=0.0).best(1, 100, acceptance) == Decision(("ngram", "target"), 2)
    # a clear gain passes the margin
    assert CostModel(profile, decisions).best(1, 100, {"ngram>target": 0.8}) == Decision(("ngram", "target"), 2)
    with pytest.raises(ValueError, match="min_gain"):
        CostModel(profile, decisions, min_gain=1.0)


def test_each_row_is_scored_with_its_own_acceptance():
    profile = make_profile(memory_bound)
    model = CostModel(profile, decision_grid([("ngram", "target")], ks=(2, 8)))
    snapshot = {"pairs": {"ngram>target": {"acceptance": 0.02}}, "prior": 0.5,
                "requests": {"summary": {"ngram>target": {"acceptance": 0.9}}, "chat": {}}}
    assert model.best(1, 100, snapshot).is_plain                                  # the pool says no
    assert model.best(1, 100, snapshot, ["summary"]) == Decision(("ngram", "target"), 8)
    assert model.best(1, 100, snapshot, ["chat"]).is_plain                        # no own estimate: the pool
    # two rows: the mean of their expected tokens, (1 + f(0.9, 8)) / 2 vs (1 + 1) / 2
    mixed = model.best_estimate(2, 100, snapshot, ["summary", "chat"])
    assert mixed.decision == Decision(("ngram", "target"), 8)
    assert mixed.expected_tokens == pytest.approx((expected_output(0.9, 8) + expected_output(0.02, 8)) / 2)


def test_rows_scored_together_get_each_row_s_own_chain_expectation():
    """The router scores every row and every chain in one array pass: the same figures as the
    per-chain formula, row by row, for chains of one, two and three pairs and a stop threshold."""
    profile = make_profile(memory_bound, draft=lambda b, t, c: 0.005)
    decisions = decision_grid([("ngram", "target"), ("draft", "target"), ("ngram", "draft", "target")], ks=(2, 5))
    decisions += [Decision(("draft", "target"), 8, 0.5), Decision(("ngram", "draft", "target"), 4)]
    model = CostModel(profile, decisions)
    rng = np.random.default_rng(0)
    histogram = {"drafted": [5, 9, 4, 3, 8, 2, 6, 7, 3, 10], "judged": [3, 4, 2, 2, 5, 1, 3, 4, 2, 6],
                 "accepted": [0, 1, 0, 1, 2, 1, 2, 3, 2, 5]}
    snapshot = {"prior": 0.5, "pairs": {"ngram>target": {"acceptance": 0.3}, "draft>target": {
        "acceptance": 0.6, "confidence": histogram}, "ngram>draft": {"acceptance": 0.4}},
        "requests": {f"r{i}": {"ngram>target": {"acceptance": float(rng.random())},
                               "ngram>draft": {"acceptance": float(rng.random())}} for i in range(5)}}
    ids = [f"r{i}" for i in range(5)] + ["no-estimate"]
    tokens, _ = model.scores(len(ids), 300, snapshot, ids)
    pooled = {key: value["acceptance"] for key, value in snapshot["pairs"].items()}
    for decision, predicted in zip(model.decisions, tokens):
        rows = [{**pooled, **{k: v["acceptance"] for k, v in snapshot["requests"].get(rid, {}).items()}} for rid in ids]
        own = [model.expected_tokens(decision, row) if not decision.p_min else
               model.expected_tokens(decision, {"pairs": {**snapshot["pairs"], **{k: {"acceptance": v}
                                                          for k, v in row.items() if k != "draft>target"}}})
               for row in rows]
        assert predicted == pytest.approx(sum(own) / len(own), rel=1e-12), decision.label


def test_step_times_are_exact_at_context_knots_and_linear_between():
    model = CostModel(make_profile(compute_bound), decision_grid([("ngram", "target")], ks=(2, 8)), context_knot=128)
    stops = [(1.0, 1.0)] * len(model.decisions)
    exact = [[model.step_time(d, 4, context) for d in model.decisions] for context in (256, 384)]
    assert model._step_times(4, 256, stops) == pytest.approx(exact[0], rel=1e-12)
    assert model._step_times(4, 320, stops) == pytest.approx([(a + b) / 2 for a, b in zip(*exact)], rel=1e-12)
    with pytest.raises(ValueError, match="context_knot"):
        CostModel(make_profile(compute_bound), model.decisions, context_knot=0)


def test_the_router_passes_the_running_rows_to_the_cost_model(make_engine):
    profile = make_profile(memory_bound)
    engine = make_engine(("target",), 0)
    # the profile's figures, not the wall clock's (router/online_correction.py): this is about the rows
    engine.set_router(CostModelRouter(CostModel(profile, decision_grid([("ngram", "target")], ks=(4,))),
                                      correction=OnlineCorrectionConfig(enabled=False)))
    engine.set_acceptance_priors({"ngram>target": 0.0})                # the pool never pays
    engine.add_request("abc abc abc abc abc abc abc abc abc abc abc abc", SamplingParams(max_tokens=40),
                       request_id="r")
    chosen = []
    while engine.has_unfinished:
        engine.step()
        chosen.append(engine.router.last_estimate.decision)
    # shadow proposals show this request repeats itself, so the router switches to n-gram drafting
    assert chosen[0].is_plain and not chosen[-1].is_plain


def test_a_level_s_catch_up_is_amortised_over_the_row_s_remaining_output():
    """A draft that has not seen a 1,000-token prompt pays its prefill once: with 8 tokens to go
    that costs more per token than drafting saves, with a long reply ahead (capped by the
    horizon) or a cache already filled it does not."""
    from engine.batch_view import RowView

    profile = make_profile(memory_bound, draft=lambda b, t, c: 0.002 + 0.001 * b * t)
    draft = Decision(("draft", "target"), 4)
    model = CostModel(profile, [Decision(), draft], catch_up_horizon=256)
    acceptance = {"draft>target": 0.9}

    def best_for(cached_draft: int, max_tokens: int) -> Decision:
        row = RowView("r", "", 1001, 10, max_tokens, 0.0, cached=(("draft", cached_draft), ("target", 1000)))
        return model.best(1, 1001, acceptance, ["r"], model.catch_up_rates([row]))

    assert model.best(1, 1001, acceptance) == draft                 # without catch-up: drafting pays
    assert best_for(0, 18).is_plain                                  # ~1 s of prefill over 8 tokens
    assert best_for(1000, 18) == draft                               # caught up already
    assert best_for(0, 100_000) == draft                             # ~1 s over 256 tokens at most
    row = RowView("r", "", 1001, 10, 18, 0.0, cached=(("draft", 0), ("target", 1000)))
    assert model.catch_up_rates([row]) == [{"draft": pytest.approx(profile.forward_time("draft", 1, 1000, 0) / 8)}]
    assert model.catch_up_rates([RowView("r", "", 1001, 10, 18, 0.0)]) == [{}]    # an offline view: unknown
    per_row = model.best_rows(1001, acceptance, ["r", "s"], catch_up=[model.catch_up_rates([row])[0], {}])
    assert per_row[1] == draft and per_row[0].is_plain                # only the row that lags stays plain


def per_row_profile() -> LatencyProfile:
    levels = {"target": level(compute_bound), "draft": level(lambda b, t, c: 0.004 + 1e-4 * b * t)}
    levels |= {name: level(lambda b, t, c: 1e-5, "model_free") for name in ("ngram", "suffix")}
    return LatencyProfile("per-row", levels)


def test_a_mixed_step_is_timed_as_one_decision_when_every_row_runs_it():
    model = CostModel(per_row_profile(), decision_grid([("ngram", "target"), ("draft", "target"),
                                                        ("ngram", "draft", "target")], ks=(2, 5)))
    for decision in model.decisions:
        for batch in (1, 3, 8):
            assert model.mixed_step_time([decision] * batch, 512) == pytest.approx(
                model.step_time(decision, batch, 512))


def test_a_mixed_step_pads_the_target_to_its_widest_row_and_drafts_only_for_its_rows():
    profile = per_row_profile()
    model = CostModel(profile, decision_grid([("ngram", "target"), ("draft", "target")], ks=(2, 4)))
    ft = profile.forward_time
    rows = [Decision(), Decision(("ngram", "target"), 4), Decision(("draft", "target"), 2)]
    expected = ft("target", 3, 5, 512) + ft("ngram", 1, 4, 512) + 2 * ft("draft", 1, 1, 512)
    assert model.mixed_step_time(rows, 512) == pytest.approx(expected)


def test_rows_that_suit_different_drafters_each_get_theirs():
    """Per-row routing: one request that n-gram drafting suits and one that suffix drafting suits
    are routed apart; a batch whose rows agree keeps one decision."""
    model = CostModel(per_row_profile(), decision_grid([("ngram", "target"), ("suffix", "target")], ks=(4,)))
    snapshot = {"pairs": {"ngram>target": {"acceptance": 0.5}, "suffix>target": {"acceptance": 0.5}}, "prior": 0.5,
                "requests": {"a": {"ngram>target": {"acceptance": 0.95}, "suffix>target": {"acceptance": 0.05}},
                             "b": {"ngram>target": {"acceptance": 0.05}, "suffix>target": {"acceptance": 0.95}}}}
    rows = model.best_rows(64, snapshot, ["a", "b"])
    assert rows == [Decision(("ngram", "target"), 4), Decision(("suffix", "target"), 4)]
    router = CostModelRouter(model, per_row=True)
    from engine.batch_view import BatchView, RowView
    view = BatchView(tuple(RowView(rid, "", 64, 0, 32, 0.0) for rid in ("a", "a2")), (), snapshot | {
        "requests": {"a": snapshot["requests"]["a"], "a2": snapshot["requests"]["a"]}})
    decisions = router.decide(view)
    assert decisions == [Decision(("ngram", "target"), 4)] * 2 == [router.last_estimate.decision] * 2


def test_a_stop_threshold_is_neutral_until_measured_then_priced_from_the_histogram():
    """No confidence histogram: draft>target@k8p0.8 is predicted as @k8 (the first of equals, the
    plainer, wins). A measured one where confident tokens are accepted and unconfident ones are
    not: the threshold drafts fewer forwards for the same tokens, so it is chosen."""
    profile = make_profile(memory_bound, draft=lambda b, t, c: 0.01)
    full, stop = Decision(("draft", "target"), 8), Decision(("draft", "target"), 8, 0.8)
    model = CostModel(profile, [Decision(), full, stop], min_gain=0.0)
    unmeasured = {"pairs": {"draft>target": {"acceptance": 0.8}}, "prior": 0.5}
    assert model.expected_tokens(stop, unmeasured) == model.expected_tokens(full, unmeasured)
    assert model.best(1, 100, unmeasured) == full
    histogram = {"drafted": [0] * 8 + [400, 600], "judged": [0] * 8 + [400, 300], "accepted": [0] * 8 + [380, 280]}
    histogram["drafted"][2], histogram["judged"][2] = 1000, 300           # unconfident, never accepted
    measured = {"pairs": {"draft>target": {"acceptance": 0.6, "confidence": histogram}}, "prior": 0.5}
    c, a = 0.5, min(0.6 * (660 / 700) / (660 / 1000), 1.0)
    assert model.expected_tokens(stop, measured) == pytest.approx(1 + sum((c * a) ** j for j in range(1, 9)))
    assert model.step_time(stop, 1, 96, c) < model.step_time(full, 1, 96)
    assert model.best(1, 100, measured) == stop


def test_a_warmed_cost_model_prices_no_step_on_the_decision_s_path(monkeypatch):
    """A server warms its fallback at start-up: afterwards no batch size or context it can serve
    makes a decision compute a step time (the cold lookups were the router's p99)."""
    model = CostModel(make_profile(compute_bound), decision_grid([("ngram", "target")], ks=(2, 8)))
    assert model.warm(max_batch=4, max_context=1024) == 4 * 9
    monkeypatch.setattr("engine.step_time_cache.step_time", lambda *args: pytest.fail("priced on the decision's path"))
    for batch in (1, 2, 3, 4):
        for context in (0, 77, 500, 1023):
            model.best(batch, context, {"ngram>target": 0.7})


def test_steps_without_any_proposal_are_priced_as_plain_steps():
    """An n-gram drafter that finds nothing for every row runs the target over one token: at one row
    with 60% empty proposals its step costs 0.6 x plain + 0.4 x its own, at 16 rows all but its own."""
    model = CostModel(make_profile(compute_bound), decision_grid([("ngram", "target")], ks=(4,)), min_gain=0.0)
    plain, ngram = model.decisions
    entry = {"acceptance": 0.3, "num_observed": 100, "num_empty": 60}      # 1.43 tokens a step
    snapshot = {"pairs": {"ngram>target": entry}, "prior": 0.5}
    for batch in (1, 16):
        _, times = model.scores(batch, 128, snapshot)
        full = model.step_time(ngram, batch, 128)
        assert times[1] == pytest.approx(0.6 ** batch * model.step_time(plain, batch, 128) + (1 - 0.6 ** batch) * full)
    assert model.best(1, 128, snapshot) == ngram
    assert model.best(1, 128, {"pairs": {"ngram>target": {**entry, "num_empty": 0}}, "prior": 0.5}).is_plain
    # too little evidence: the full width
    assert model.scores(1, 128, {"pairs": {"ngram>target": {**entry, "num_observed": 8}}})[1][1] == pytest.approx(
        model.step_time(ngram, 1, 128))
