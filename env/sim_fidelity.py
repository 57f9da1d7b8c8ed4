"""How close the simulator gets: the same window and action schedule on both backends, and the
simulator's own speed (`python -m env.calibrate` reports both)."""

from __future__ import annotations

import time

import numpy as np


def episode_metrics(env, schedule: list[int]) -> dict:
    """Run one episode with the action schedule (cycled); tokens/s over busy time, mean TPOT."""
    busy = 0.0
    steps = 0
    start = time.perf_counter()
    while True:
        _, _, terminated, truncated, info = env.step(schedule[steps % len(schedule)])
        busy += info["latency_s"]
        steps += 1
        if terminated or truncated:
            break
    wall = time.perf_counter() - start
    requests = env.unwrapped._episode.requests.values()
    tpots = [(r.finish_time - r.first_token_time) / (len(r.output_token_ids) - 1)
             for r in requests if len(r.output_token_ids) > 1]
    committed = sum(len(r.output_token_ids) for r in requests)
    return {"tokens_per_s": committed / busy, "tpot_s": float(np.mean(tpots)), "steps": steps,
            "busy_s": busy, "wall_s": wall}


def compare(real_env, sim_env, schedule: list[int], seed: int, repeats: int,
            real_repeats: int) -> tuple[dict, dict, dict]:
    """The same window (seed) on both backends: the real engine's mean over `real_repeats` runs
    (and their relative spread, max/min - 1: how repeatable the real figure itself is), the sim's
    over `repeats` acceptance draws."""
    reals = []
    for _ in range(real_repeats):
        real_env.reset(seed=seed)
        reals.append(episode_metrics(real_env, schedule))
    real = {key: float(np.mean([r[key] for r in reals])) for key in reals[0]}
    spread = {key: max(r[key] for r in reals) / min(r[key] for r in reals) - 1 for key in ("tokens_per_s", "tpot_s")}
    sims = []
    for j in range(repeats):
        sim_env.reset(seed=seed)
        sim_env.unwrapped.backend.reseed(10_000 + j)
        sims.append(episode_metrics(sim_env, schedule))
    sim = {key: float(np.mean([s[key] for s in sims])) for key in sims[0]}
    return real, sim, spread


def sim_speed(sim_env, seconds: float) -> dict:
    """Env steps per second and simulated busy seconds per second under random actions, per wall
    second and per CPU second of this process (what an idle machine would give)."""
    rng = np.random.default_rng(0)
    steps, busy, episode = 0, 0.0, 0
    start, cpu = time.perf_counter(), time.process_time()
    sim_env.reset(seed=episode)
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, info = sim_env.step(int(rng.integers(sim_env.action_space.n)))
        steps += 1
        busy += info["latency_s"]
        if terminated or truncated:
            episode += 1
            sim_env.reset(seed=episode)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"steps_per_s": steps / wall, "speedup": busy / wall, "steps_per_cpu_s": steps / cpu, "cpu_speedup": busy / cpu}
