"""A policy trained on the mixture must read a single user's sequential requests and closed loops
of 1 to 16 users inside the observation range it was trained on: the server's out-of-range guard
(`LearnedPolicy.out_of_range`, margin 0, not widened) then falls back on under 2% of decisions.

Checked on the load, time and cost features, whose range depends on the workload and the machine
(what failed on the Intel machine: arrival_rate_ema, step latencies). The acceptance, signal and
catch-up entries depend on the drafters; a few dozen test episodes cannot reach the extremes of
their EMAs that a training run's hundreds of thousands of steps under randomised acceptance do."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from agents.scenarios import CONCURRENCY, WorkloadMixture, closed_loop_workloads, evaluation_workloads
from env.workloads import resolve_workload

NUM_REQUESTS = 12
DRAFTER_FEATURES = ("acceptance[", "signal_", "catch_up[", "last_action[")


def observations(environment, workload, seed: int) -> np.ndarray:
    """[steps, obs_dim] raw observations of one episode under uniformly random actions."""
    rng = np.random.default_rng(seed)
    obs, _ = environment.reset(seed=seed, options=None if workload is None else {"workload": workload})
    seen, done = [obs], False
    while not done:
        obs, _, terminated, truncated, _ = environment.step(int(rng.integers(environment.action_space.n)))
        seen.append(obs)
        done = terminated or truncated
    return np.asarray(seen, dtype=np.float64)


@pytest.fixture(scope="module")
def trained_range(sim_files):
    """(low, high) over episodes of the training mixture on randomised machines, as
    train_router's ObservationRange records them."""
    profile, acceptance = sim_files
    kwargs = {"backend": "sim", "profile": profile, "acceptance": acceptance}
    mixture = list(evaluation_workloads(kwargs, NUM_REQUESTS).values())
    environment = WorkloadMixture(gymnasium.make("SpecRoute-v0", **kwargs, randomize_latency=0.3,
                                                 randomize_acceptance=0.7, randomize_curve=True), mixture)
    seen = np.concatenate([observations(environment, None, seed) for seed in range(8 * len(mixture))])
    environment.close()
    return seen.min(axis=0), seen.max(axis=0)


def test_the_training_mixture_holds_a_single_user_and_closed_loops_of_2_to_16(sim_files):
    profile, acceptance = sim_files
    names = evaluation_workloads({"profile": profile, "acceptance": acceptance}, NUM_REQUESTS)
    assert {"single-user", "single-user-think"} | {f"closed-c{c}" for c in CONCURRENCY} <= set(names)
    assert names["single-user"].concurrency == 1 and names["single-user-think"].think_s > 0


@pytest.mark.parametrize("workload", ["single-user", "single-user-think", *(f"closed-c{c}" for c in CONCURRENCY)])
def test_sequential_and_concurrent_users_stay_inside_the_trained_range(sim_files, trained_range, workload):
    """On machines the training never drew (other seeds), fewer than 2% of decisions leave it."""
    profile, acceptance = sim_files
    environment = gymnasium.make("SpecRoute-v0", backend="sim", profile=profile, acceptance=acceptance,
                                 randomize_curve=True)
    low, high = trained_range
    seen = np.concatenate([observations(environment, closed_loop_workloads(NUM_REQUESTS)[workload], 500 + seed)
                           for seed in range(3)])
    names = np.asarray(environment.unwrapped.obs_spec.names)
    machine = np.asarray([not name.startswith(DRAFTER_FEATURES) for name in names])
    outside = ((seen < low) | (seen > high)) & machine
    share = outside.any(axis=1).mean()
    assert share < 0.02, f"{share:.1%} of decisions out of range; features: {sorted(set(names[outside.any(axis=0)]))}"


def test_a_closed_loop_sends_each_user_s_next_request_when_the_last_is_answered(sim_files):
    profile, acceptance = sim_files
    workload = resolve_workload({"name": "single-user", "num_requests": 4, "max_new_tokens": 8})
    environment = gymnasium.make("SpecRoute-v0", backend="sim", profile=profile, acceptance=acceptance,
                                 workload=workload)
    observations(environment, None, 0)
    requests = sorted(environment.unwrapped._episode.requests.values(), key=lambda r: r.arrival_time)
    assert len(requests) == 4
    assert all(later.arrival_time >= earlier.finish_time for earlier, later in zip(requests, requests[1:]))
    with pytest.raises(ValueError, match="think_s must be a finite number >= 0"):
        resolve_workload({"name": "single-user", "think_s": -1.0})
