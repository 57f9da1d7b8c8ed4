"""The simulator: same seed same trajectory, conservation, episode end, cloning, fidelity to the engine."""

from __future__ import annotations

import numpy as np
import pytest

from engine import Decision, Engine, EngineConfig, SamplingParams, StaticRouter
from env import SpecRouteEnv
from env.sim_executor import sync_cached


def run_episode(env, seed, policy=lambda step: step % 7, max_steps=100_000):
    obs, _ = env.reset(seed=seed)
    trajectory = [obs]
    for step in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(policy(step))
        trajectory.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            return trajectory
    raise AssertionError("episode did not end")


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_same_seed_same_trajectory_other_seed_other_trajectory(sim_kwargs):
    first = run_episode(SpecRouteEnv(**sim_kwargs), seed=3)
    assert same(first, run_episode(SpecRouteEnv(**sim_kwargs), seed=3))
    assert not same(first, run_episode(SpecRouteEnv(**sim_kwargs), seed=4))


def test_conservation_every_request_once_and_committed_tokens_add_up(sim_kwargs):
    env = SpecRouteEnv(**sim_kwargs)
    trajectory = run_episode(env, seed=5)
    episode = env._episode
    window = episode.window
    requests = episode.requests
    assert sorted(requests) == sorted(f"req-{item.index}" for item in window)       # none lost, none twice
    committed = sum(step[4]["num_committed"] for step in trajectory[1:])
    assert committed == sum(len(r.output_token_ids) for r in requests.values())
    assert all(len(requests[f"req-{item.index}"].output_token_ids) == item.max_new_tokens for item in window)
    assert sum(step[4]["num_finished"] for step in trajectory[1:]) == len(window)
    assert not env.backend.scheduler.running and not env.backend.scheduler.waiting
    assert all(r.first_token_time >= r.arrival_time and r.finish_time >= r.first_token_time
               for r in requests.values())


def test_terminates_when_all_finished_and_stays_terminated(sim_kwargs):
    env = SpecRouteEnv(**sim_kwargs)
    trajectory = run_episode(env, seed=0)
    *_, (obs, reward, terminated, truncated, info) = trajectory
    assert terminated and not truncated
    assert not any(step[2] for step in trajectory[1:-1])
    again = env.step(0)
    assert again[2] is True and again[1] == 0.0


def test_truncates_at_the_step_cap(sim_kwargs):
    env = SpecRouteEnv(**sim_kwargs, max_steps=5)
    trajectory = run_episode(env, seed=0, policy=lambda step: 0)
    assert len(trajectory) == 6
    assert trajectory[-1][3] is True and trajectory[-1][2] is False


def test_reward_is_tokens_per_second_minus_slo_penalty(sim_kwargs):
    env = SpecRouteEnv(**sim_kwargs, slo_tpot_s=1e-4, slo_penalty=7.0)        # every request misses TPOT
    for _, reward, _, _, info in run_episode(env, seed=1)[1:]:
        expected = info["num_committed"] / info["latency_s"] - 7.0 * info["num_violations"]
        assert reward == pytest.approx(expected)
    assert env._episode.stats.num_violations == len(env._episode.window)


@pytest.mark.parametrize("workload, spec_wins", [
    ({"name": "sharegpt", "num_requests": 6, "rate": 0.05, "max_new_tokens": 32}, True),
    ({"name": "sharegpt", "num_requests": 32, "arrival": "offline", "max_new_tokens": 32}, False),
])
def test_speculation_pays_at_low_load_and_not_at_high_load(sim_kwargs, workload, spec_wins):
    """Acceptance ~0.5: drafting 4 tokens wins alone (memory-bound target) and loses at batch 16."""
    def tokens_per_second(action):
        env = SpecRouteEnv(**{**sim_kwargs, "workload": workload})
        trajectory = run_episode(env, seed=2, policy=lambda step: action)
        return sum(s[4]["num_committed"] for s in trajectory[1:]) / sum(s[4]["latency_s"] for s in trajectory[1:])
    speculative, plain = tokens_per_second(2), tokens_per_second(0)        # ngram>target@4 vs plain
    assert (speculative > 1.2 * plain) if spec_wins else (plain > 1.1 * speculative)


def test_clone_and_restore_replay_the_same_future(sim_kwargs):
    env = SpecRouteEnv(**sim_kwargs)
    env.reset(seed=9)
    for step in range(5):
        env.step(step % 3)
    state = env.clone_state()
    future = [env.step(2) for _ in range(10)]
    env.restore_state(state)
    assert same(future, [env.step(2) for _ in range(10)])
    env.restore_state(state)                 # a state can be restored more than once
    assert same(future, [env.step(2) for _ in range(10)])


def test_clone_state_needs_the_sim(tiny_real_env):
    with pytest.raises(ValueError, match="sim backend"):
        tiny_real_env.clone_state()


@pytest.fixture
def tiny_real_env(target, tokenizer):
    return SpecRouteEnv(backend="real", max_model_len=128, workload={"num_requests": 2, "max_new_tokens": 4},
                        actions=["plain", "ngram>target@2"],
                        engine_factory=lambda: Engine(target, tokenizer, EngineConfig(max_model_len=128,
                                                                                      max_num_tokens=4096)))


@pytest.mark.parametrize("chain, k", [(("ngram", "target"), 4), (("draft", "target"), 3),
                                      (("ngram", "draft", "target"), 3), (("small", "draft", "target"), 2)])
def test_sim_cache_bookkeeping_matches_the_engine_after_every_step(target, tokenizer, drafts, chain, k):
    """The simulator charges prefill and lazy catch-up from what each level's cache holds; that
    bookkeeping must equal the real engine's caches after rollback, step after step."""
    engine = Engine(target, tokenizer, EngineConfig(max_model_len=128, max_num_tokens=4096), drafts=drafts,
                    router=StaticRouter(Decision(chain, k)))
    ids = [engine.add_request(prompt, SamplingParams(max_tokens=24, ignore_eos=True))
           for prompt in ("the cat sat on the mat. the cat sat", "one two one two one two", "abc abd abe")]
    requests = {i: engine.scheduler.requests[i] for i in ids}
    predicted: dict[str, dict[str, int]] = {i: {} for i in ids}
    steps = 0
    while engine.has_unfinished:
        decision = Decision(chain, k) if steps % 3 else Decision()          # plain steps leave drafts behind
        engine.admit()
        batch = list(engine.scheduler.running)
        ks = [engine.draft_length(r, decision) for r in batch]
        engine.step(decision)
        for request, k_used, result in zip(batch, ks, engine.last_step.results):
            sync_cached(predicted[request.request_id], request.num_tokens, len(result.tokens), decision.chain,
                        k_used, result)
            if not request.is_finished:
                actual = {name: level.committed_length(request) for name, level in engine.levels.items()
                          if name in request.level_slots}
                assert predicted[request.request_id] == actual
        steps += 1
    assert all(len(r.output_token_ids) == 24 for r in requests.values())


def test_plain_decoding_still_measures_the_model_free_pairs_through_shadow_proposals(sim_kwargs):
    env = SpecRouteEnv(**sim_kwargs)
    plain = next(i for i, d in enumerate(env.decisions) if d.is_plain)
    observed = {}

    def plain_policy(step):
        pairs = env.backend.engine.trackers.pairs
        observed.update({key: (pairs[key].num_observed, pairs[key].acceptance) for key in pairs})
        return plain

    run_episode(env, seed=2, policy=plain_policy)
    assert set(observed) == {"ngram>target", "suffix>target"}       # only the model-free drafters
    # sharegpt's fitted per-token rates (tests/env/conftest.py PAIR_RATES), learned while running plain
    for key, rate in (("ngram>target", 0.5), ("suffix>target", 0.4)):
        num_observed, acceptance = observed[key]
        assert num_observed >= 5 and acceptance == pytest.approx(rate, abs=0.15)


def test_the_sim_charges_the_forwards_the_engine_runs_when_a_long_prompt_joins_decoding_rows(
        target, tokenizer, monkeypatch):
    """rows_forwards (the simulator's clock) and the engine's catch-up planning agree call by call."""
    from env.sim_clock import rows_forwards
    from tests.env.conftest import make_profile

    engine = Engine(target, tokenizer, EngineConfig(max_model_len=256, max_num_tokens=8192),
                    router=StaticRouter(Decision(("ngram", "target"), 3)))
    runner = engine.levels["target"].runner
    calls = []
    real_forward = runner.forward

    def recording(slots, tokens, num_logits):
        calls.append(("target", len(slots), max(len(t) for t in tokens), max(runner.cache.lengths[s] for s in slots)))
        return real_forward(slots, tokens, num_logits)

    monkeypatch.setattr(runner, "forward", recording)
    for prompt in ("one two one two", "abc abd abe"):
        engine.add_request(prompt, SamplingParams(max_tokens=40, ignore_eos=True))
    for _ in range(3):
        engine.step()
    engine.add_request("the cat sat on the mat and the dog sat on the log " * 3, SamplingParams(max_tokens=4))
    batch = engine.scheduler.admit()
    before = [r.num_tokens for r in batch]
    cached = [{"target": engine.levels["target"].committed_length(r)} for r in batch]
    ks = [engine.draft_length(r, Decision(("ngram", "target"), 3)) for r in batch]
    calls.clear()
    engine.step()
    charged = rows_forwards(make_profile(), before, cached, ("ngram", "target"), ks, engine.last_step.results,
                            engine.config)
    charged = [call for call in charged if call[0] == "target"]
    assert len(calls) == 2 and calls[0][1] == 1                 # the new prompt's catch-up, then the step
    assert charged == calls


def test_the_sim_charges_every_forward_a_step_of_rows_on_different_chains_runs(target, tokenizer, drafts, monkeypatch):
    """Per-row routing: rows on different chains share each level's forward (a level verifying at
    two depths runs twice), and rows_forwards charges exactly the model forwards the engine ran."""
    from collections import Counter

    from env.sim_clock import rows_forwards
    from tests.env.conftest import make_profile

    engine = Engine(target, tokenizer, EngineConfig(max_model_len=256, max_num_tokens=8192, max_num_seqs=4),
                    drafts={"draft": drafts["draft"]})
    calls = []
    for name, level in engine.levels.items():
        runner = level.runner

        def recording(slots, tokens, num_logits, _name=name, _runner=runner, _forward=runner.forward):
            calls.append((_name, len(slots), max(len(t) for t in tokens),
                          max(_runner.cache.lengths[s] for s in slots)))
            return _forward(slots, tokens, num_logits)

        monkeypatch.setattr(runner, "forward", recording)
    for prompt in ("one two one two", "abc abd abe", "the cat sat on the mat", "hello hello"):
        engine.add_request(prompt, SamplingParams(max_tokens=30, ignore_eos=True))
    decisions = [Decision(), Decision(("ngram", "target"), 3), Decision(("draft", "target"), 2),
                 Decision(("ngram", "draft", "target"), 4)]
    for step in range(4):
        batch = engine.scheduler.admit()
        rows = decisions[step:] + decisions[:step]           # each row goes through every chain
        before = [r.num_tokens for r in batch]
        cached = [{name: level.committed_length(r) for name, level in engine.levels.items()} for r in batch]
        ks = [engine.draft_length(r, d) for r, d in zip(batch, rows)]
        calls.clear()
        engine.step(rows)
        charged = rows_forwards(make_profile(), before, cached, [d.chain for d in rows], ks,
                                engine.last_step.results, engine.config)
        assert Counter(c for c in charged if c[0] in engine.levels) == Counter(calls), f"step {step}"


def test_the_sim_honours_a_stop_threshold():
    """A model first level with p_min drafts c(p_min) onward per token, from the calibration's
    confidence histogram: fewer drafted tokens at a high threshold, none fewer without a histogram."""
    from env.sim_executor import SimExecutor
    from tests.env.conftest import make_calibration, make_profile

    calibration = make_calibration()
    executor = SimExecutor(make_profile(), calibration, EngineConfig(), seed=0)
    rng = np.random.default_rng(0)

    def mean_proposed(p_min: float) -> float:
        rows = [executor.draw_row("qa", ("int4", "target"), ("int4>target",), 8, rng.random(3).tolist(), None, p_min)
                for _ in range(20_000)]
        return float(np.mean([row.pairs[0].num_proposed for row in rows]))

    assert mean_proposed(0.8) == mean_proposed(0.0) == 8.0          # no histogram yet: neutral
    for _ in range(500):            # confidences spread uniformly over [0, 1)
        calibration.acceptance.observe_confidences("int4>target", rng.random(8).tolist(), 8, 4)
    c = calibration.acceptance.stop_rates("int4>target", 0.8)[0]
    assert mean_proposed(0.0) == 8.0 and mean_proposed(0.5) > mean_proposed(0.8)
    assert mean_proposed(0.8) == pytest.approx(sum(c ** m for m in range(1, 9)), rel=0.06)


def test_an_env_with_the_stop_actions_runs_them(sim_kwargs):
    from env.config import DEFAULT_ACTIONS, STOP_ACTIONS
    env = SpecRouteEnv(**sim_kwargs)
    stop = [env.action_labels.index(label) for label in STOP_ACTIONS]
    assert len(env.action_labels) == len(DEFAULT_ACTIONS) and set(STOP_ACTIONS) < set(DEFAULT_ACTIONS)
    steps = run_episode(env, seed=0, policy=lambda step: stop[step % len(stop)])
    env.close()
    assert steps
