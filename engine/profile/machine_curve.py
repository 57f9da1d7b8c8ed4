"""This machine's latency curve: every loaded level timed at the server's first start, then cached.

The shipped `profiles/*.json` were measured on another machine; they are a prior only. At first
start (and whenever the key below changes) the server times every level it loaded, on the path
it runs, over a grid sized to fit a budget (default 60 s), and caches the result as a profile
file under `curve_dir()`. The key: the forward-path self-test's machine key
(`engine.autotune.machine_key`: CPU model and flags, torch version and threads, the model's
digest) + the forward path + every loaded level with its parameter count (a swapped draft is
another curve) + the batch and context the grid must reach + CURVE_VERSION.

The grid: tokens per row 1, 2, 3, 5, 9, 17 (the verification curve, K + 1 up to K + depth),
batches 1, 2, 4, ... up to max_num_seqs, contexts 64, 512, 1536 clipped to max_model_len. A
probe times each model level's cheapest and dearest point; while the grid's predicted time
exceeds the level's share of the budget, an interior point is dropped (contexts first, then the
longer of batches and tokens; the finest first), down to the corners. `LatencyProfile`
interpolates between what is left.

Each calibration also refreshes `machine_profile_file(model, path)`: the newest curve of that
model and path on this CPU, over the prior's levels it lacks. The simulator and training read
that one (they have no model to digest).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from engine.autotune import cpu_identity, machine_key
from engine.models import cache_dir
from engine.profile.latency_profile import LatencyProfile, ProfileError
from engine.profile.measure import bisection_depths, measure_profile, parameter_count

CURVE_VERSION = 1                        # bump when the grid or the measurement changes: old curves are ignored
DEFAULT_BUDGET_S = 60.0
VERIFY_TOKENS = (1, 2, 3, 5, 9, 17)
CONTEXTS = (64, 512, 1536)
logger = logging.getLogger("specroute.profile")
PointSeconds = Callable[[int, int, int], float]          # (batch, tokens per row, context) -> seconds


def curve_dir() -> Path:
    """Where curves are cached: $SPECROUTE_CURVE_DIR, else <cache_dir>/latency_curve."""
    return Path(os.environ.get("SPECROUTE_CURVE_DIR") or cache_dir() / "latency_curve")


@dataclass(frozen=True)
class CurveGrid:
    """The (batch, tokens per row, context) points one model level is timed on."""

    batches: tuple[int, ...]
    tokens: tuple[int, ...]
    contexts: tuple[int, ...]

    @property
    def num_points(self) -> int:
        return len(self.batches) * len(self.tokens) * len(self.contexts)

    def points(self) -> list[tuple[int, int, int]]:
        return [(b, t, c) for b in self.batches for t in self.tokens for c in self.contexts]

    def coarser(self) -> CurveGrid | None:
        """This grid less one interior point (contexts first, then the longer of batches and
        tokens, batches on a tie; on that axis the finest point); None when only corners are left."""
        if len(self.contexts) > 2:
            name = "contexts"
        elif max(len(self.batches), len(self.tokens)) > 2:
            name = "batches" if len(self.batches) >= len(self.tokens) else "tokens"
        else:
            return None
        axis = getattr(self, name)
        depths = bisection_depths(len(axis))
        drop = max(range(1, len(axis) - 1), key=lambda i: (depths[i], i))
        return replace(self, **{name: axis[:drop] + axis[drop + 1:]})


def full_grid(max_batch: int, max_model_len: int) -> CurveGrid:
    """The grid before the budget trims it: every verification width, batches to `max_batch`."""
    room = max_model_len - max(VERIFY_TOKENS)
    if max_batch < 1 or room < 0:
        raise ValueError(f"need max_batch >= 1 and max_model_len >= {max(VERIFY_TOKENS)}, "
                         f"got {max_batch}, {max_model_len}")
    batches = sorted({min(2 ** i, max_batch) for i in range(max_batch.bit_length())} | {max_batch})
    return CurveGrid(tuple(batches), VERIFY_TOKENS, tuple(sorted({min(c, room) for c in CONTEXTS})))


def grid_seconds(grid: CurveGrid, point_s: PointSeconds, repeats: int) -> float:
    """Predicted time to time `grid` `repeats` times over."""
    return repeats * sum(point_s(*p) for p in grid.points())


def fit_grid(grid: CurveGrid, point_s: PointSeconds, budget_s: float, repeats: int) -> CurveGrid:
    """The largest of `grid`'s coarsenings whose predicted time fits `budget_s` (the corners always)."""
    while grid_seconds(grid, point_s, repeats) > budget_s and (smaller := grid.coarser()) is not None:
        grid = smaller
    return grid


def _work(b: int, t: int, c: int) -> float:
    return b * t * (1 + c / 1024)


def probe_level(engine, name: str, grid: CurveGrid, measure=measure_profile) -> PointSeconds:
    """Time model level `name` at `grid`'s cheapest and dearest point; predict the others linearly
    in rows x tokens x (1 + context / 1024) between the two."""
    low, high = (grid.batches[0], grid.tokens[0], grid.contexts[0]), (grid.batches[-1], grid.tokens[-1],
                                                                        grid.contexts[-1])
    seconds = [measure(engine, levels=[name], batches=(b,), tokens=(t,), contexts=(c,), budget_s=1.0,
                       repeats=1).forward_time(name, b, t, c) for b, t, c in (low, high)]
    span = _work(*high) - _work(*low)
    slope = max(seconds[1] - seconds[0], 0.0) / span if span > 0 else 0.0
    return lambda b, t, c: seconds[0] + slope * (_work(b, t, c) - _work(*low))


def calibrate(engine, model_name: str, budget_s: float = DEFAULT_BUDGET_S, repeats: int = 2,
              clock: Callable[[], float] = time.perf_counter, measure=measure_profile) -> LatencyProfile:
    """Time every level `engine` loaded (model levels and model-free drafters) within about
    `budget_s`, logging one line per level; `clock` and `measure` are injectable for tests."""
    if budget_s <= 0 or repeats < 1:
        raise ValueError(f"need budget_s > 0 and repeats >= 1, got {budget_s}, {repeats}")
    start = clock()
    grid = full_grid(engine.config.max_num_seqs, engine.config.max_model_len)
    levels: dict[str, LatencyProfile] = {}
    meta = {"budget_s": budget_s, "repeats": repeats, "grid_points": {}, "estimated_points": {}}

    def timed(name: str, level_grid: CurveGrid, share_s: float) -> None:
        profile = measure(engine, levels=[name], batches=level_grid.batches, tokens=level_grid.tokens,
                          contexts=level_grid.contexts, budget_s=max(share_s, 1e-3), repeats=repeats,
                          model=model_name)
        levels[name] = profile
        meta["grid_points"][name] = level_grid.num_points
        meta["estimated_points"][name] = profile.meta.get("estimated_points", {}).get(name, 0)
        logger.info("latency curve: %-8s %3d points (%d estimated)  %5.1f/%.0f s", name, level_grid.num_points,
                    meta["estimated_points"][name], clock() - start, budget_s)

    for name in engine.drafters:                        # model-free: a row's propose(), cheap
        timed(name, replace(grid, batches=(1,)), budget_s)
    model_levels = list(engine.levels)
    predict = {name: probe_level(engine, name, grid, measure) for name in model_levels}
    full_s = {name: grid_seconds(grid, predict[name], repeats) for name in model_levels}
    for i, name in enumerate(model_levels):
        share = (budget_s - (clock() - start)) * full_s[name] / sum(full_s[n] for n in model_levels[i:])
        timed(name, fit_grid(grid, predict[name], share, repeats), share)
    profile = LatencyProfile(model_name, {name: p.levels[name] for name, p in levels.items()})
    profile.meta = {**next(iter(levels.values())).meta, **meta, "calibration_s": round(clock() - start, 3)}
    return profile


def curve_key(engine) -> dict:
    """What a cached curve must match to stand for this engine on this machine."""
    levels = {name: parameter_count(level.runner) for name, level in engine.levels.items()}
    levels.update({name: "model_free" for name in engine.drafters})
    return {**machine_key(engine.model_digest), "path": engine.precision.name, "levels": levels,
            "max_batch": engine.config.max_num_seqs, "max_model_len": engine.config.max_model_len,
            "version": CURVE_VERSION}


def curve_file(key: dict) -> Path:
    return curve_dir() / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]}.json"


def machine_profile_file(model_name: str, path: str) -> Path:
    """The newest curve of `model_name` on forward path `path` on this CPU (it may not exist)."""
    cpu = hashlib.sha256(json.dumps(cpu_identity(), sort_keys=True).encode()).hexdigest()[:12]
    return curve_dir() / f"{model_name.replace(os.sep, '_')}.{path}.{cpu}.json"


def _read(path: Path) -> LatencyProfile | None:
    if not path.exists():
        return None
    try:
        return LatencyProfile.load(path)
    except ProfileError as exc:
        logger.warning("ignoring an unreadable latency curve (%s)", exc)
        return None


def machine_profile(model_name: str, path: str) -> LatencyProfile | None:
    """This CPU's curve of `model_name` on `path` (over the prior's levels it lacks), or None."""
    return _read(machine_profile_file(model_name, path))


def _write(profile: LatencyProfile, path: Path) -> None:
    """Atomically (two servers may start at once); a cache that cannot be written is only logged."""
    partial = path.with_suffix(f".{os.getpid()}.part")
    try:
        profile.save(partial)
        partial.replace(path)
    except OSError as exc:
        logger.warning("latency curve not cached in %s (%s): the next start measures it again", path, exc)


def load_or_calibrate(engine, model_name: str, budget_s: float = DEFAULT_BUDGET_S,
                      prior: LatencyProfile | None = None, **calibrate_kwargs) -> LatencyProfile:
    """The cached curve of this engine on this machine; else calibrate it now and cache it (and
    refresh `machine_profile_file`, over `prior`'s levels it lacks)."""
    key = curve_key(engine)
    file = curve_file(key)
    cached = _read(file)
    if cached is not None and cached.meta.get("curve_key") == key:
        logger.info("latency curve: cached for %s %s (%s)", key["cpu"], key["path"], file)
        return cached
    logger.info("latency curve: calibrating %s on %s %s (budget %.0f s; cached in %s)",
                ", ".join(list(engine.levels) + list(engine.drafters)), key["cpu"], key["path"], budget_s, file)
    profile = calibrate(engine, model_name, budget_s, **calibrate_kwargs)
    profile.meta["curve_key"] = key
    _write(profile, file)
    shared = machine_profile_file(model_name, key["path"])
    base = _read(shared) or prior
    measured = sorted(set(profile.levels) | set(base.meta.get("measured_here", []) if base is not None else ()))
    combined = base.merged(profile) if base is not None else profile
    _write(LatencyProfile(model_name, combined.levels, {**profile.meta, "measured_here": measured}), shared)
    return profile
