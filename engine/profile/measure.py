"""Timing an engine's levels into a LatencyProfile, within a wall-clock budget.

Model levels are timed by calling their ModelRunner.forward directly on scratch slots of a
scratch KV cache swapped in for the duration (allocate, run, free), so the engine's own
caches keep their slots, lengths and capacity. Attention cost depends on how many positions
a row attends to, not on their values, so a scratch slot "holds" a context by setting its
length: no prefill is needed. Model-free drafters are timed on a private copy, so their
indexes and history are untouched too.

Points are timed coarse to fine (the corners of the grid first, then the midpoints of each
axis, ...), cheapest first within a round. When the budget runs short, the points not timed are filled
from a non-negative least-squares fit of the timed ones (time = c0 + c1*b + c2*b*t + c3*b*c +
c4*b*t*c) and counted in `meta["estimated_points"]`; the grid is then made non-decreasing
along every axis (a forward never gets cheaper with more rows, tokens or context).
"""

from __future__ import annotations

import copy
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

from engine.kv_cache import KVCache
from engine.profile.latency_profile import LatencyProfile, LevelProfile
from engine.runner import ModelRunner

MIN_TIMED_POINTS = 5          # and every corner of the grid: fewer and the fit would be a guess


def _features(b: int, t: int, c: int) -> list[float]:
    return [1.0, b, b * t, b * c / 1024, b * t * c / 1024]


def _fit(points: dict[tuple[int, int, int], float]):
    """Non-negative least squares of the timed points (drop the most negative coefficient and
    refit until none is left); returns a predictor (b, t, c) -> seconds."""
    keys = list(points)
    features = np.array([_features(*k) for k in keys])
    seconds = np.array([points[k] for k in keys])
    active = list(range(features.shape[1]))
    coef = np.zeros(features.shape[1])
    while active:
        solution = np.linalg.lstsq(features[:, active], seconds, rcond=None)[0]
        if solution.min() >= 0:
            coef[active] = solution
            break
        del active[int(solution.argmin())]
    floor = min(points.values())
    return lambda b, t, c: max(float(np.dot(coef, _features(b, t, c))), floor)


def bisection_depths(n: int) -> list[int]:
    """Coarse-to-fine rank of each index of an axis: the ends 0, the middle 1, the quarters 2..."""
    depths = [None] * n
    d = 0
    while None in depths:
        for j in range(2 ** d + 1):
            i = round(j * (n - 1) / 2 ** d)
            if depths[i] is None:
                depths[i] = d
        d += 1
    return depths


def _monotone(grid: np.ndarray) -> np.ndarray:
    for axis in range(grid.ndim):
        grid = np.maximum.accumulate(grid, axis=axis)
    return grid


def parameter_count(runner: ModelRunner) -> int:
    layers = sum(m.numel for w in runner.layers for m in w.products)
    return layers + runner.lm_head.numel


def _time_model_level(runner: ModelRunner, batches, tokens, contexts, deadline: float, repeats: int, timer):
    """Time runner.forward on every grid point; return ({(b, t, c): seconds}, num_estimated)."""
    max_tokens = max(tokens)
    scratch = KVCache(runner.num_layers, runner.num_kv_heads, runner.head_dim, runner.max_len,
                      dtype=runner.cache.dtype, initial_slots=max(batches), initial_len=max(contexts) + max_tokens)
    rng = random.Random(0)
    feed = [[rng.randrange(runner.vocab_size) for _ in range(max_tokens)] for _ in range(max(batches))]
    depth = [bisection_depths(len(axis)) for axis in (batches, tokens, contexts)]
    order = sorted(((b, t, c) for b in batches for t in tokens for c in contexts),
                   key=lambda p: (max(depth[0][batches.index(p[0])], depth[1][tokens.index(p[1])],
                                      depth[2][contexts.index(p[2])]), p[0] * p[1] * (1 + p[2] / 1024), p))
    num_corners = 2 ** sum(len(axis) > 1 for axis in (batches, tokens, contexts))
    min_timed = max(num_corners, min(MIN_TIMED_POINTS, len(order)))     # always timed, budget or not
    own_cache = runner.cache
    runner.cache = scratch
    slots = [scratch.allocate_slot() for _ in range(max(batches))]
    try:
        def run(b: int, t: int, c: int) -> float:
            for slot in slots[:b]:
                scratch.lengths[slot] = c
            start = timer()
            runner.forward(slots[:b], [row[:t] for row in feed[:b]], [t] * b, features=runner.timing_features(b, t))
            return timer() - start

        run(1, 1, contexts[0])                                  # warm-up, not recorded
        timed: dict[tuple[int, int, int], float] = {}
        predict = None
        for point in order:                                     # the first min_timed are always timed
            if predict is not None and time.perf_counter() + predict(*point) > deadline:
                continue
            timed[point] = run(*point)
            if len(timed) >= min_timed:
                predict = _fit(timed)
        for _ in range(repeats - 1):                            # more samples where time allows
            for point in order:
                if point in timed and time.perf_counter() + timed[point] <= deadline:
                    timed[point] = min(timed[point], run(*point))
    finally:
        for slot in slots:
            scratch.free_slot(slot)
        runner.cache = own_cache
    predict = _fit(timed)
    return {p: timed.get(p) or predict(*p) for p in order}, len(order) - len(timed)


def _time_model_free(drafter, vocab_size: int, tokens, contexts, repeats: int, timer) -> dict[tuple[int, int, int], float]:
    """Time propose() of a private copy for one row: the incremental call of a running request."""
    drafter = copy.deepcopy(drafter)
    rng = random.Random(0)
    alphabet = [rng.randrange(vocab_size) for _ in range(32)]      # repetitive, so matches exist
    points = {}
    for c in contexts:
        context = [rng.choice(alphabet) for _ in range(max(c, 1))]
        for k in tokens:
            request_id = f"profile-{c}-{k}"
            drafter.propose(request_id, context, k)                 # first call indexes the prompt
            samples = []
            for _ in range(max(repeats, 5)):
                context.append(rng.choice(alphabet))
                start = timer()
                drafter.propose(request_id, context, k)
                samples.append(timer() - start)
            del context[c:]
            points[(1, k, c)] = max(min(samples), 1e-7)
    return points


def measure_profile(engine, levels: list[str] | None = None, batches=(1, 2, 4, 8, 16), tokens=(1, 2, 4, 8, 16),
                    contexts=(64, 512, 1536), budget_s: float = 60.0, repeats: int = 3,
                    model: str | None = None, clock: str = "wall") -> LatencyProfile:
    """Time each level of `engine` (default: all model levels and model-free drafters).

    Contexts beyond a level's `max_len - max(tokens)` are clipped to it. The budget is shared
    between model levels in proportion to their parameter counts; `repeats` samples are taken
    per point where the budget allows and the smallest is kept (the machine, not its neighbours).

    `clock="wall"` times what a caller waits. On a machine shared with other busy processes that
    includes their share of the cores; `clock="cpu"` times the process's own CPU time instead,
    which with one torch thread is close to the wall time the same forward takes on an idle machine.
    """
    start = time.perf_counter()
    if budget_s <= 0 or repeats < 1:
        raise ValueError(f"need budget_s > 0 and repeats >= 1, got {budget_s}, {repeats}")
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    if clock == "cpu" and torch.get_num_threads() != 1:
        raise ValueError("clock='cpu' needs one torch thread (CPU time of several threads is not latency)")
    timer = time.perf_counter if clock == "wall" else time.process_time
    batches, tokens = tuple(sorted(set(batches))), tuple(sorted(set(tokens)))
    if not batches or not tokens or not contexts or batches[0] < 1 or tokens[0] < 1 or min(contexts) < 0:
        raise ValueError("batches and tokens must be non-empty and >= 1, contexts non-empty and >= 0")
    known = list(engine.levels) + list(engine.drafters)
    levels = list(levels) if levels is not None else known
    unknown = [name for name in levels if name not in known]
    if unknown:
        raise ValueError(f"unknown levels {unknown}; the engine has {known}")
    target_runner = engine.levels["target"].runner
    grids: dict[str, LevelProfile] = {}
    estimated: dict[str, int] = {}

    def grid_of(kind, bs, cs, points) -> LevelProfile:
        array = np.array([[[points[(b, t, c)] for c in cs] for t in tokens] for b in bs])   # [b, t, c]
        return LevelProfile(kind, bs, tokens, cs, _monotone(array).tolist())

    free_contexts = tuple(sorted(set(contexts)))
    for name in [n for n in levels if n in engine.drafters]:
        points = _time_model_free(engine.drafters[name], target_runner.vocab_size, tokens, free_contexts, repeats,
                                  timer)
        grids[name] = grid_of("model_free", (1,), free_contexts, points)
    model_levels = [n for n in levels if n in engine.levels]
    weights = {n: parameter_count(engine.levels[n].runner) for n in model_levels}
    for i, name in enumerate(model_levels):
        runner = engine.levels[name].runner
        room = runner.max_len - max(tokens)
        if room < 0:
            raise ValueError(f"level {name!r} has max_len {runner.max_len}, less than {max(tokens)} tokens")
        cs = tuple(sorted({min(c, room) for c in contexts}))
        left = budget_s - (time.perf_counter() - start)
        share = weights[name] / sum(weights[n] for n in model_levels[i:])
        deadline = time.perf_counter() + max(left, 0.0) * share
        points, estimated[name] = _time_model_level(runner, batches, tokens, cs, deadline, repeats, timer)
        grids[name] = grid_of("model", batches, cs, points)

    meta = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "measure_s": round(time.perf_counter() - start, 3),
        "budget_s": budget_s,
        "repeats": repeats,
        "clock": clock,
        "statistic": "min over repeats; grid made non-decreasing along every axis",
        "estimated_points": estimated,
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "num_cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    name = model or getattr(target_runner.config, "name_or_path", "") or "target"
    return LatencyProfile(str(name), grids, meta)


def load_or_measure(engine, path: str | Path, save: bool = True, **measure_kwargs) -> LatencyProfile:
    """Load `path`; measure whatever levels of `engine` (or of `levels`) it lacks (all of them when
    the file does not exist) and save the result. A corrupt file raises ProfileError rather than being
    overwritten."""
    path = Path(path)
    needed = measure_kwargs.pop("levels", None) or list(engine.levels) + list(engine.drafters)
    if path.exists():
        profile = LatencyProfile.load(path)
        missing = [name for name in needed if name not in profile.levels]
        if not missing:
            return profile
        measure_kwargs.setdefault("model", profile.model)
        profile = profile.merged(measure_profile(engine, levels=missing, **measure_kwargs))
    else:
        profile = measure_profile(engine, levels=needed, **measure_kwargs)
    if save:
        profile.save(path)
    return profile
